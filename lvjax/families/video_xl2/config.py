"""Video-XL-2's configuration (`LlavaQwenConfig` of Video-XL-2/eval/lvu/*, model_type 'llava_qwen').

The LLM is Qwen2 (Qwen2.5-7B-Instruct in the release); the visual front end is SigLIP →
DTS → `mlp2x_gelu` → 2×2 average pool (144 tokens per group of 4 frames). Fields the port
does not interpret are kept verbatim and written back by `to_hf`, so an exported folder's
`config.json` has the original's fields.
"""

from __future__ import annotations

import dataclasses

from lvjax.config import ConfigError, LLMConfig, _freeze, _thaw_pairs
from lvjax.models.dts_frontend import FrontendConfig

# The fields `from_hf` reads and checks (everything else is carried through unchanged).
_FRONT_END = {"mm_hidden_size": int, "mm_projector_type": str, "mm_spatial_pool_stride": int,
              "mm_spatial_pool_mode": str, "mm_vision_tower": str, "mm_vision_select_layer": int}


@dataclasses.dataclass(frozen=True)
class VideoXL2Config:
    """llm: the Qwen2 decoder; frontend: SigLIP / DTS / projector sizes (`vision_tower/config.json`
    + the mm_* fields). mm_*: those `config.json` fields as written (projector 'mlp2x_gelu', pool
    'average' with stride 2, the SigLIP sub-folder `mm_vision_tower`, `mm_vision_select_layer` −2 =
    the penultimate SigLIP layer). other: every other field, frozen (key, value) pairs."""

    llm: LLMConfig
    frontend: FrontendConfig
    mm_hidden_size: int
    mm_projector_type: str
    mm_spatial_pool_stride: int
    mm_spatial_pool_mode: str
    mm_vision_tower: str
    mm_vision_select_layer: int
    other: tuple = ()

    def replace(self, **kw) -> "VideoXL2Config":
        return dataclasses.replace(self, **kw)

    @classmethod
    def from_hf(cls, hf: dict, source: str = "config.json") -> "VideoXL2Config":
        if hf.get("model_type") != "llava_qwen":
            raise ConfigError(f"{source}: model_type={hf.get('model_type')!r}, expected 'llava_qwen' (Video-XL-2)")
        values = {}
        for name, kind in _FRONT_END.items():
            if name not in hf:
                raise ConfigError(f"{source}: missing field {name}")
            if not isinstance(hf[name], kind) or isinstance(hf[name], bool):
                raise ConfigError(f"{source}: {name}={hf[name]!r} is not a{'n integer' if kind is int else ' string'}")
            values[name] = hf[name]
        llm = LLMConfig.from_hf(hf, source)
        known = set(_FRONT_END) | set(llm.to_hf())
        other = _freeze({k: v for k, v in hf.items() if k not in known})
        return cls(llm=llm, frontend=FrontendConfig.from_hf(hf, source), other=other, **values)

    def to_hf(self) -> dict:
        """The `config.json` dict (the original's fields, in the original's names)."""
        out = dict(_thaw_pairs(self.other)) if self.other else {}
        out.update(self.llm.to_hf())
        out.update({name: getattr(self, name) for name in _FRONT_END})
        return dict(sorted(out.items()))
