"""Video-XL-Pro's config: the Qwen2 fields, the front end (with the `vision_tower/` SigLIP folder) and the
selector's keep-rate range. The original `config.json` is kept verbatim and written back on export."""

from __future__ import annotations

import dataclasses
import json

from lvjax.config import ConfigError, LLMConfig
from lvjax.models.dts_frontend import FrontendConfig

VISION_PAD_TOKEN = "<|vision_pad|>"


@dataclasses.dataclass(frozen=True)
class VideoXLProConfig:
    """llm: the Qwen2 decoder; frontend: SigLIP + DTS + projector sizes; keep_rate_range: the selector's
    `random.uniform(lo, hi)` keep rate (0.7, 0.99 in the original); hf_json: the source config.json."""

    llm: LLMConfig
    frontend: FrontendConfig
    keep_rate_range: tuple[float, float] = (0.7, 0.99)
    hf_json: str = "{}"

    def replace(self, **kw) -> "VideoXLProConfig":
        return dataclasses.replace(self, **kw)

    @classmethod
    def from_hf(cls, hf: dict, source: str) -> "VideoXLProConfig":
        llm = LLMConfig.from_hf(hf, source)
        frontend = FrontendConfig.from_hf(hf, source)
        if llm.hidden_size % 4:
            raise ConfigError(f"{source}: hidden_size={llm.hidden_size} is not a multiple of 4 "
                              "(WindowTimeToTokenAttention has 4 heads)")
        return cls(llm=llm, frontend=frontend, hf_json=json.dumps(hf, sort_keys=True))

    def to_hf(self) -> dict:
        """The source config.json with the modelled fields rewritten from this config."""
        out = json.loads(self.hf_json)
        out.update(self.llm.to_hf())
        out.update(mm_hidden_size=self.frontend.mm_hidden_size, mm_projector_type="mlp2x_gelu",
                   mm_spatial_pool_mode="average", mm_spatial_pool_stride=self.frontend.pool_stride)
        out.setdefault("model_type", "llava_qwen")
        out.setdefault("architectures", ["LlavaQwenForCausalLM"])
        return out

    def with_dtypes(self, dtype: str, param_dtype: str) -> "VideoXLProConfig":
        return self.replace(llm=self.llm.replace(dtype=dtype, param_dtype=param_dtype),
                            frontend=self.frontend.with_dtypes(dtype, param_dtype))
