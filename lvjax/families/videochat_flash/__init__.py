"""VideoChat-Flash (HiCo) and XComp (LP-Comp, QC-Comp): UMT ViT → ToMe → MLP → Qwen2 with a CompressionPlan.

Modules: `config`-bearing `model` (config, towers, splice), `convert` (UMT/projector rules),
`prompt` (qwen_2 template), `compression` + `drops` (LP-Comp plans and drop rules),
`selection` (QC-Comp), `answer` (encode and the staged LLM runner), `loss` (training CE).
"""

from __future__ import annotations

from lvjax.convert.llm import llm_rules
from lvjax.families.base import Family, Sampling
from lvjax.families.registry import register
from lvjax.families.videochat_flash import answer as runner
from lvjax.families.videochat_flash.convert import projector_rules, vision_rules
from lvjax.families.videochat_flash.loss import video_ce
from lvjax.families.videochat_flash.model import VideoChatFlashConfig, init_params
from lvjax.families.videochat_flash.selection import QCCompConfig

__all__ = ["FAMILY", "QCCompConfig", "VideoChatFlashConfig"]


class VideoChatFlashFamily(Family):
    name = "videochat_flash"
    per_layer_llm = True
    answer_options = frozenset({"compression", "qc"})

    def claims(self, hf: dict, keys: frozenset[str]) -> bool:
        model_type = hf.get("model_type")
        tower = hf.get("mm_vision_tower")
        # XComp folders say model_type 'qwen2' with the mm_* fields of a UMT tower.
        return model_type == "videochat_flash_qwen" or (
            model_type == "qwen2" and isinstance(tower, str) and tower.startswith("umt"))

    def config_from_hf(self, hf: dict, source: str) -> VideoChatFlashConfig:
        return VideoChatFlashConfig.from_hf(hf, source)

    def config_to_hf(self, cfg: VideoChatFlashConfig) -> dict:
        return {
            "architectures": ["VideoChatFlashQwenForCausalLM"],
            "model_type": "videochat_flash_qwen",
            **cfg.llm.to_hf(),
            "mm_vision_tower": "umt-hd-large" if cfg.vision.image_size == 448 else "umt-large",
            "vision_tower_config": cfg.vision.to_hf_override(),
            "mm_hidden_size": cfg.mm_hidden_size,
            "mm_projector_type": "tome16_mlp_hd64",
            "mm_vision_select_layer": cfg.vision.return_idx,
            "mm_local_num_frames": cfg.local_num_frames,
            "mm_newline_position": "nothing",
            "mm_patch_merge_type": "spatial_nopad",
            "mm_llm_compress": False,
            "llm_compress_type": "attention",
            "llm_compress_layer_list": list(cfg.compress_layers) or [24],
            "llm_image_token_ratio_list": list(cfg.compress_ratios) or [1.0, 0.5],
        }

    def llm_config(self, cfg: VideoChatFlashConfig):
        return cfg.llm

    def with_dtypes(self, cfg: VideoChatFlashConfig, dtype: str, param_dtype: str,
                    remat_policy: str | None = None) -> VideoChatFlashConfig:
        cfg = cfg.with_dtypes(dtype, param_dtype)
        return cfg.replace(llm=cfg.llm.replace(remat_policy=remat_policy or cfg.llm.remat_policy))

    def describe(self, cfg: VideoChatFlashConfig) -> dict:
        v = cfg.vision
        return {**super().describe(cfg),
                "vision": {"tower": "umt", "image_size": v.image_size, "patch_size": v.patch_size,
                           "hidden_size": v.hidden_size, "layers": v.num_blocks, "clip_frames": cfg.local_num_frames,
                           "tokens_per_frame": cfg.tokens_per_frame},
                "compression": cfg.default_compression}

    def rules(self, cfg: VideoChatFlashConfig) -> list:
        return [*llm_rules(cfg.llm, root="llm/"), *vision_rules(cfg.vision, root="vision/"),
                *projector_rules(root="projector/")]

    def init(self, cfg: VideoChatFlashConfig, key):
        return init_params(cfg, key)

    def sampling(self, cfg: VideoChatFlashConfig) -> Sampling:
        # lmms-eval_videochat: 1 fps, 512 frames at most, 64 at least; XComp also duplicates to the minimum.
        return Sampling("dynamic_fps1", fps=1.0, max_frames=512, min_frames=64, frame_multiple=cfg.local_num_frames)

    def encode(self, params, cfg, frames, *, intermediates=False, qc: QCCompConfig | None = None, **_):
        return runner.encode(params, cfg, frames, intermediates=intermediates, qc=qc)

    def answer_encoded(self, model, encoded, question, *, history, gen, seed, **options):
        return runner.answer_encoded(model, encoded, question, history=history, gen=gen, seed=seed, **options)

    def visual_tokens_per_frame(self, cfg: VideoChatFlashConfig) -> float:
        return float(cfg.tokens_per_frame)

    def loss(self, params, batch, spec):
        return video_ce(params, batch, spec)


FAMILY = register(VideoChatFlashFamily())
