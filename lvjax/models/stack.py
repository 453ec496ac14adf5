"""Stacks: one block class scanned over a leading `layers` parameter axis (optionally rematerialised), and a
function mapped over chunks of a batch (`chunked_map`)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

# remat_policy name → jax.checkpoint_policies attribute (None: no rematerialisation). From most to
# least recomputation: full (only layer inputs kept), dots (weight matmul outputs kept), minimal
# (every matmul output kept, attention's batched ones included: only elementwise work is redone).
REMAT_POLICIES = {
    "none": None,
    "full": "nothing_saveable",
    "dots": "dots_with_no_batch_dims_saveable",
    "minimal": "dots_saveable",
}


def scanned(block: type[nn.Module], length: int, remat_policy: str = "none", in_axes=0) -> type[nn.Module]:
    """`nn.scan` of `block` over `length` layers (params stacked, logical axis 'layers').

    The block is called as block(carry, *xs) → (carry, ys); `in_axes` as in `nn.scan`.
    """
    if remat_policy not in REMAT_POLICIES:
        raise ValueError(f"remat_policy {remat_policy!r} not in {sorted(REMAT_POLICIES)}")
    policy = REMAT_POLICIES[remat_policy]
    if policy is not None:
        block = nn.remat(block, policy=getattr(jax.checkpoint_policies, policy), prevent_cse=False)
    return nn.scan(
        block,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=in_axes,
        length=length,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )


def chunked_map(f, x: jax.Array, size: int) -> jax.Array:
    """f over chunks of `size` rows of x (n, ...) → their outputs concatenated (n, ...); one call when n ≤ size.

    Each call gets a real (size, ...) batch (a `lax.map` over (n // size, size, ...), then the remainder),
    so a batch-axis sharding constraint inside f splits the chunk over the mesh; `lax.map(batch_size=)`
    would vmap f over single rows and leave that axis unconstrained.
    """
    n = x.shape[0]
    if n <= size:
        return f(x)
    k = n // size
    out = jax.lax.map(f, x[: k * size].reshape((k, size) + x.shape[1:]))
    out = out.reshape((k * size,) + out.shape[2:])
    return jnp.concatenate([out, f(x[k * size:])]) if n % size else out
