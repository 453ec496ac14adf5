"""Layer stacks: one block class scanned over a leading `layers` parameter axis, optionally rematerialised."""

from __future__ import annotations

import flax.linen as nn
import jax

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
