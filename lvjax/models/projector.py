"""The ToMe16 projector's MLP: Linear(C → D) → exact GELU → Linear(D → D).

Parameter tree (mirrors `mm_projector.mlp.0` / `mlp.2`): mlp_0/{kernel (C, D), bias (D,)},
mlp_2/{kernel (D, D), bias (D,)}.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

P = nn.with_logical_partitioning
ACT = ("vision_batch", "vision_length", "activation_embed")  # per clip: never sequence-split


class Projector(nn.Module):
    """(..., C) → (..., D) with D = `out_features` (the LLM width)."""

    out_features: int
    dtype: str = "float32"
    param_dtype: str = "float32"

    @nn.compact
    def __call__(self, x):
        def dense(axes, name):
            return nn.Dense(
                self.out_features,
                dtype=jnp.dtype(self.dtype),
                param_dtype=jnp.dtype(self.param_dtype),
                kernel_init=P(nn.initializers.xavier_uniform(), axes),
                bias_init=P(nn.initializers.zeros, axes[1:]),
                name=name,
            )

        x = dense(("vision_mlp", "vision_embed"), "mlp_0")(x)
        x = nn.gelu(x, approximate=False)
        x = dense(("vision_embed", "vision_mlp"), "mlp_2")(x)
        if x.ndim == 3:
            x = nn.with_logical_constraint(x, ACT)
        return x


def projector_apply(params, x: jax.Array, out_features: int | None = None) -> jax.Array:
    """Pure forward of `Projector`; D is read from params when `out_features` is None."""
    if out_features is None:
        out_features = nn.unbox(params)["mlp_2"]["bias"].shape[-1]
    return Projector(out_features).apply({"params": params}, x)


# LLaVA's `mlp2x_gelu` (Linear(C → D), exact GELU, Linear(D → D)) is this same MLP; Video-XL-Pro / -2
# store it as `model.mm_projector.{0,2}` (→ mlp_0 / mlp_2).
MLP2xGelu = Projector
