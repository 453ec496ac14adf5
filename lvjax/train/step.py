"""Train state and the jitted, sharded train step.

State (a plain dict, what orbax saves):
    params     the model's nested param dict, stored in fp32 (master weights)
    opt_state  optax state (AdamW moments only for trainable leaves)
    step       int32 scalar, optimizer steps done
    rng        uint32 (2,) raw PRNG key data, split every step (the second half gives the batch
               its per-row `rng` keys (G, 2): the randomness of a family's training forward)

One step takes a global batch (G rows, sharded over data × fsdp), splits it into
`grad_accum` micro-batches of G/grad_accum rows, scans over them summing Σ CE gradients, and
normalises by the labelled-token count of the whole global batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lvjax.sharding import (
    BATCH_AXES,
    batch_sharding,
    replicated,
    rules_tuple,
    tree_shardings,
)
from lvjax.train import objective, optim


def _trainable_only(params, labels):
    """Frozen leaves replaced by None (so grads and accumulators are only built for trainable ones)."""
    return jax.tree.map(lambda p, l: p if l == optim.TRAIN else None, params, labels)


def _merge(trainable, params, labels):
    return jax.tree.map(
        lambda l, t, p: t if l == optim.TRAIN else jax.lax.stop_gradient(p),
        labels, trainable, params, is_leaf=lambda x: x is None,
    )


def _full_grads(grads, params, labels):
    """Trainable grads back into the full tree; frozen slots get scalar zeros (ignored by set_to_zero)."""
    return jax.tree.map(
        lambda l, g, p: g if l == optim.TRAIN else jnp.zeros((), p.dtype),
        labels, grads, params, is_leaf=lambda x: x is None,
    )


def make_train_step(spec: objective.ObjectiveSpec, tx: optax.GradientTransformation, labels, schedule,
                    grad_accum: int, mesh=None, rules=None) -> Callable:
    """The pure step (state, batch) → (state, metrics). Not jitted; see `jit_train_step`."""

    def step(state: dict, batch: dict):
        params = state["params"]
        rng, loss_key = jax.random.split(jax.random.wrap_key_data(state["rng"]))
        # One key per row (what a family's forward draws from), so the draws follow the rows
        # whatever the mesh or the accumulation, and resume with the checkpointed key.
        batch = {**batch, "rng": jax.random.key_data(jax.random.split(loss_key, batch["input_ids"].shape[0]))}

        def micro_loss(trainable, mb):
            return objective.loss_fn(_merge(trainable, params, labels), mb, spec)

        grad_fn = jax.grad(micro_loss, has_aux=True)
        trainable = _trainable_only(params, labels)
        if grad_accum == 1:
            grads, met = grad_fn(trainable, batch)
            ce, n = met["ce_sum"], met["tokens"]
        else:
            def split(x):
                x = x.reshape((grad_accum, x.shape[0] // grad_accum) + x.shape[1:])
                if mesh is not None:
                    x = jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(None, BATCH_AXES)))
                return x

            micro = jax.tree.map(split, batch)

            def body(carry, mb):
                g_acc, ce_acc, n_acc = carry
                g, met = grad_fn(trainable, mb)
                return (jax.tree.map(jnp.add, g_acc, g), ce_acc + met["ce_sum"], n_acc + met["tokens"]), None

            zeros = jax.tree.map(jnp.zeros_like, trainable)
            (grads, ce, n), _ = jax.lax.scan(body, (zeros, jnp.float32(0), jnp.float32(0)), micro)
        denom = jnp.maximum(n, 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(_full_grads(grads, params, labels), state["opt_state"], params)
        new_params = optim.apply_updates(params, updates, labels)
        new_state = {
            "params": new_params,
            "opt_state": opt_state,
            "step": state["step"] + 1,
            "rng": jax.random.key_data(rng),
        }
        metrics = {"loss": ce / denom, "tokens": n, "grad_norm": grad_norm, "lr": schedule(state["step"])}
        return new_state, metrics

    return step


def init_state(spec: objective.ObjectiveSpec, tx, seed: int, mesh, rules, params=None) -> tuple[dict, dict]:
    """Sharded initial state and its shardings tree.

    `params`: host (numpy) params to start from (a pretrained checkpoint), else random init
    with `seed`. Params are created directly on their shardings (jit with out_shardings).
    """
    key = jax.random.key(seed)
    boxed_abstract = jax.eval_shape(lambda: objective.init_params(spec, key))
    param_sh = tree_shardings(boxed_abstract, mesh, rules)
    if params is None:
        params = jax.jit(lambda: nn.unbox(objective.init_params(spec, key)), out_shardings=param_sh)()
    else:
        abstract = nn.unbox(boxed_abstract)
        params = jax.tree.map(lambda a, x, s: jax.device_put(jnp.asarray(x, a.dtype), s), abstract, params, param_sh)
    state_sh = state_shardings(tx, params, param_sh, mesh)
    opt_state = jax.jit(tx.init, out_shardings=state_sh["opt_state"])(params)
    rng = jax.device_put(jax.random.key_data(jax.random.fold_in(key, 1)), replicated(mesh))
    step = jax.device_put(jnp.int32(0), replicated(mesh))
    return {"params": params, "opt_state": opt_state, "step": step, "rng": rng}, state_sh


def state_shardings(tx, params, param_sh, mesh) -> dict:
    """Shardings of the whole state: Adam moments follow their params, counters are replicated.

    An optimizer-state leaf whose key path ends with a parameter's dict-key path (and has its
    shape) takes that parameter's sharding.
    """
    abstract_opt = jax.eval_shape(tx.init, params)
    by_path = {}
    for path, (p, s) in zip(
        [k for k, _ in jax.tree_util.tree_flatten_with_path(params)[0]],
        zip(jax.tree.leaves(params), jax.tree.leaves(param_sh, is_leaf=lambda x: isinstance(x, NamedSharding))),
    ):
        by_path[_dict_keys(path)] = (tuple(p.shape), s)

    def pick(path, leaf):
        keys = _dict_keys(path)
        for i in range(len(keys)):
            hit = by_path.get(keys[i:])
            if hit is not None and hit[0] == tuple(leaf.shape):
                return hit[1]
        return replicated(mesh)

    opt_sh = jax.tree_util.tree_map_with_path(pick, abstract_opt)
    return {"params": param_sh, "opt_state": opt_sh, "step": replicated(mesh), "rng": replicated(mesh)}


def _dict_keys(path) -> tuple:
    """The trailing run of dict keys of a key path (a param's path inside an optimizer state)."""
    out = []
    for k in reversed(path):
        if isinstance(k, jax.tree_util.DictKey):
            out.append(k.key)
        else:
            break
    return tuple(reversed(out))


def jit_train_step(step_fn, state_sh: dict, batch_example: dict, mesh, rules):
    """jit with explicit in/out shardings (state donated); activations follow `rules` under `mesh`."""
    batch_sh = {k: batch_sharding(mesh, jnp.ndim(v)) for k, v in batch_example.items()}
    metric_sh = replicated(mesh)
    jitted = jax.jit(step_fn, in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, metric_sh),
                     donate_argnums=(0,))
    rules_t = rules_tuple(rules)

    @functools.wraps(step_fn)
    def run(state, batch):
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules_t):
            return jitted(state, batch)

    run.jitted = jitted
    run.batch_shardings = batch_sh

    def lower(state, batch):
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules_t):
            return jitted.lower(state, batch)

    run.lower = lower
    return run


def abstract_state(state_sh: dict, spec, tx, seed: int) -> Any:
    """ShapeDtypeStructs (with shardings) of the state, for restoring a checkpoint onto this mesh."""
    key = jax.random.key(seed)
    params = jax.eval_shape(lambda: nn.unbox(objective.init_params(spec, key)))
    shapes = {
        "params": params,
        "opt_state": jax.eval_shape(tx.init, params),
        "step": jax.ShapeDtypeStruct((), jnp.int32),
        "rng": jax.ShapeDtypeStruct((2,), jnp.uint32),
    }
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, state_sh)
