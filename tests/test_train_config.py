"""Training config validation, overrides, schedules and frozen-parameter labels (fast, no jit)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lvjax.config import ConfigError
from lvjax.train import optim
from lvjax.train.config import OptimSection, apply_overrides, from_dict, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["xcomp_2b", "xcomp_2b_tiny", "videochat_flash_2b_sft", "videochat_flash_2b_sft_tiny",
                                  "tiny_text", "video_xl_pro_3b", "video_xl_pro_tiny"])
def test_shipped_configs_validate(name):
    cfg = load_config(str(CONFIGS / f"{name}.yaml"))
    assert cfg.train.global_batch % cfg.train.grad_accum == 0


def test_xcomp_recipe_values():
    cfg = load_config(str(CONFIGS / "xcomp_2b.yaml"))
    o, t, d, m = cfg.optim, cfg.train, cfg.data, cfg.model
    assert (o.lr, o.schedule, o.warmup_ratio, o.weight_decay) == (1e-5, "cosine", 0.03, 0.0)
    assert (t.global_batch, t.steps) == (32, 2247)
    assert (m.dtype, m.param_dtype, m.compression, m.frozen) == ("bfloat16", "float32", "xcomp_cosine", ["vision/*"])
    assert (d.fps, d.local_num_frames, d.min_frames, d.max_frames) == (8.0, 8, 128, 1024)
    tiny = load_config(str(CONFIGS / "xcomp_2b_tiny.yaml"))
    assert tiny.model.compression == "xcomp_cosine" and tiny.model.frozen == ["vision/*"]
    assert tiny.model.hf_overrides == {}  # the base's override is replaced, not merged


def test_unknown_key_and_bad_type_name_the_key():
    with pytest.raises(ConfigError, match=r"unknown key optim\.lrr"):
        from_dict({"model": {"hf_config": {}}, "optim": {"lrr": 1}})
    with pytest.raises(ConfigError, match=r"unknown section 'optimizer'"):
        from_dict({"optimizer": {}})
    with pytest.raises(ConfigError, match=r"train\.steps: expected int"):
        from_dict({"model": {"hf_config": {}}, "train": {"steps": "ten"}})
    with pytest.raises(ConfigError, match=r"global_batch=10 is not a multiple of train\.grad_accum=4"):
        from_dict({"model": {"hf_config": {}}, "train": {"global_batch": 10, "grad_accum": 4}})
    with pytest.raises(ConfigError, match="unknown mesh axis 'model'"):
        from_dict({"model": {"hf_config": {}}, "mesh": {"rules": [["mlp", "model"]]}})
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/x.yaml")


def test_overrides_parse_yaml_values(tmp_path):
    raw = apply_overrides({"optim": {"lr": 1.0}}, ["optim.lr=2e-5", "train.steps=7", "model.frozen=[vision/*, llm/embed_tokens]",
                                                   "mesh.rules=[[embed, null]]"])
    assert raw["optim"]["lr"] == "2e-5" or raw["optim"]["lr"] == 2e-5
    raw["model"]["hf_config"] = {}
    cfg = from_dict(raw)
    assert cfg.optim.lr == 2e-5 and cfg.train.steps == 7
    assert cfg.model.frozen == ["vision/*", "llm/embed_tokens"] and cfg.mesh.rules == [["embed", None]]
    with pytest.raises(ConfigError, match="expected section.key=value"):
        apply_overrides({}, ["steps=3"])
    cfg = load_config(str(CONFIGS / "tiny_text.yaml"), ["train.steps=3", "data.max_seq_len=64"])
    assert cfg.train.steps == 3 and cfg.data.max_seq_len == 64


def test_schedule_matches_hf_cosine_with_warmup():
    total, lr = 200, 1e-5
    sched = optim.make_schedule(OptimSection(lr=lr, warmup_ratio=0.03), total)
    warm = math.ceil(0.03 * total)

    def hf(s):  # transformers.get_cosine_schedule_with_warmup
        if s < warm:
            return lr * s / warm
        p = (s - warm) / (total - warm)
        return lr * 0.5 * (1 + math.cos(math.pi * p))

    np.testing.assert_allclose([float(sched(s)) for s in range(total)], [hf(s) for s in range(total)], rtol=1e-5,
                               atol=1e-12)


def test_frozen_labels_by_pattern():
    params = {"vision": {"blocks": {"w": np.zeros(2)}}, "projector": {"w": np.zeros(2)},
              "llm": {"embed_tokens": {"embedding": np.zeros(2)}, "layers": {"w": np.zeros(2)}}}
    labels = optim.frozen_labels(params, ["vision/*", "llm/embed_tokens"])
    assert labels["vision"]["blocks"]["w"] == "frozen"
    assert labels["llm"]["embed_tokens"]["embedding"] == "frozen"
    assert labels["projector"]["w"] == "trainable" and labels["llm"]["layers"]["w"] == "trainable"
