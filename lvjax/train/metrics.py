"""Training observability: FLOP estimates, MFU, and metric sinks (JSONL, optional TensorBoard).

MFU = achieved model FLOP/s ÷ (peak FLOP/s per device × devices). Model FLOPs per step
(PaLM-style, remat recomputation not counted):
    LLM:    tokens · (6·N_llm + 12·L·D·S_eff)   (N_llm without embeddings; × 1/3 if frozen)
    vision: frames · patches · 2·N_vision        (forward only when frozen, else × 3)
"""

from __future__ import annotations

import json
import os
import warnings

import jax

# Dense bf16 peak TFLOP/s per device, by device_kind prefix (used when the config gives none).
PEAK_TFLOPS = {
    "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5p": 459.0, "TPU v5": 459.0, "TPU v6 lite": 918.0,
    "TPU v6e": 918.0, "NVIDIA H100": 989.0, "NVIDIA H200": 989.0, "NVIDIA A100": 312.0, "NVIDIA B200": 2250.0,
}


def peak_tflops(configured: float | None) -> float | None:
    if configured:
        return configured
    kind = jax.devices()[0].device_kind
    for prefix, v in PEAK_TFLOPS.items():
        if kind.startswith(prefix):
            return v
    return None


def llm_flops_per_token(n_params: int, n_layers: int, hidden: int, seq: int, trainable: bool = True) -> float:
    """Training FLOPs per token of a decoder (6N + attention 12·L·D·S); forward only (2N + 4LDS) if frozen."""
    if trainable:
        return 6.0 * n_params + 12.0 * n_layers * hidden * seq
    return 2.0 * n_params + 4.0 * n_layers * hidden * seq


class MetricSink:
    """Writes one JSON line per logged step to `{out}/metrics.jsonl` (process 0) and, when asked and
    a writer library is installed (tensorboardX or torch.utils.tensorboard), TensorBoard scalars."""

    def __init__(self, out_dir: str, tensorboard: bool = False):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(out_dir, "metrics.jsonl")
        self.tb = None
        if not self.enabled:
            return
        os.makedirs(out_dir, exist_ok=True)
        if tensorboard:
            try:  # optional dependencies, imported only when TensorBoard output is asked for
                from tensorboardX import SummaryWriter
            except ImportError:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:
                    SummaryWriter = None
            if SummaryWriter is None:
                warnings.warn("train.tensorboard=true but neither tensorboardX nor tensorboard is installed; "
                              "metrics go to metrics.jsonl only", stacklevel=2)
            else:
                self.tb = SummaryWriter(os.path.join(out_dir, "tb"))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(f"train/{k}", v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(out_dir: str) -> list[dict]:
    """All records of `{out}/metrics.jsonl`."""
    path = os.path.join(out_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
