"""The conversion table: Hugging Face keys ↔ lvjax parameter paths.

One layout rule: a PyTorch Linear `weight` (out, in) is a Flax `kernel` (in, out), so 2-D
weights are transposed ("linear"). Everything else is a small named transform. A rule whose
HF key contains `{i}` covers a stack of `n` layers that lvjax keeps scanned (stacked on a
leading `layers` axis) — `stack` joins them on import and splits them on export.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Mapping

import numpy as np

from lvjax.errors import (
    ConversionError,  # re-exported: a checkpoint does not fit the model
)


@dataclasses.dataclass(frozen=True)
class Transform:
    """A named pair of inverse array maps."""

    name: str
    to_lvjax: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]


IDENTITY = Transform("identity", lambda a: a, lambda a: a)
LINEAR = Transform("linear", lambda a: a.T, lambda a: a.T)
# Conv3d weight (out, in, kt, kh, kw) ↔ Flax Conv kernel (kt, kh, kw, in, out).
CONV3D = Transform(
    "conv3d",
    lambda a: a.transpose(2, 3, 4, 1, 0),
    lambda a: a.transpose(4, 3, 0, 1, 2),
)


@dataclasses.dataclass(frozen=True)
class Rule:
    """HF key (may hold `{i}`) ↔ lvjax path ('/'-separated); `n` layers when stacked."""

    hf: str
    path: str
    transform: Transform = IDENTITY
    n: int | None = None

    def hf_keys(self) -> list[str]:
        return [self.hf.format(i=i) for i in range(self.n)] if self.n is not None else [self.hf]


def _get(tree: Mapping, path: str):
    node = tree
    for part in path.split("/"):
        node = node[part]
    return node


def _set(tree: dict, path: str, value) -> None:
    parts = path.split("/")
    for part in parts[:-1]:
        tree = tree.setdefault(part, {})
    tree[parts[-1]] = value


def flatten_paths(tree: Mapping, prefix: str = "") -> dict[str, object]:
    """Nested dict → {'a/b/c': leaf}."""
    out = {}
    for k, v in tree.items():
        p = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_paths(v, p + "/"))
        else:
            out[p] = v
    return out


def hf_to_lvjax(
    tensors: Mapping[str, np.ndarray],
    rules: Iterable[Rule],
    expected: Mapping | None = None,
    ignore: Iterable[str] = (),
    progress: Callable[[int], None] | None = None,
    place: Callable[[str, np.ndarray], object] | None = None,
) -> dict:
    """Map an HF state dict to a nested lvjax params dict.

    `expected` is a nested dict of shapes (or arrays) to check against; a missing key,
    an unknown extra key (other than those in `ignore`) or a shape mismatch raises
    ConversionError naming the key. `progress(n)` is called as tensors are consumed.
    `place(path, value)`, if given, replaces each host array (stacked over layers where the
    rule is) by what it returns — e.g. a device array in its sharding — right after that one
    parameter is read, so with a lazy `tensors` mapping the host holds one parameter at a time.
    """
    rules = list(rules)
    used = set(ignore)
    params: dict = {}
    for rule in rules:
        keys = rule.hf_keys()
        absent = [k for k in keys if k not in tensors]
        if absent:
            raise ConversionError(f"checkpoint is missing key {absent[0]!r}" + (f" (+{len(absent) - 1} more)" if len(absent) > 1 else ""))
        if expected is not None and np.dtype(_get(expected, rule.path).dtype).kind == "f":
            wrong = next((k for k in keys if np.asarray(tensors[k]).dtype.kind in "biu"), None)
            if wrong is not None:
                raise ConversionError(f"{wrong}: dtype {np.asarray(tensors[wrong]).dtype} where lvjax {rule.path} "
                                      "holds floating-point weights")
        arrays = [rule.transform.to_lvjax(np.asarray(tensors[k])) for k in keys]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ConversionError(f"{rule.hf}: layers have different shapes {sorted(shapes)}")
        value = np.stack(arrays) if rule.n is not None else arrays[0]
        if expected is not None:
            want = tuple(np.shape(_get(expected, rule.path)))
            if value.shape != want:
                got = tuple(np.shape(tensors[keys[0]]))
                raise ConversionError(
                    f"{keys[0]}: shape {got} does not fit the model (lvjax {rule.path} needs {want}"
                    + (" stacked over layers" if rule.n is not None else "")
                    + ")"
                )
        _set(params, rule.path, value if place is None else place(rule.path, value))
        del arrays, value
        used.update(keys)
        if progress:
            progress(len(keys))
    extra = sorted(set(tensors) - used)
    if extra:
        raise ConversionError(
            f"checkpoint has unknown key {extra[0]!r}" + (f" (+{len(extra) - 1} more)" if len(extra) > 1 else "")
            + " that this model does not use"
        )
    return params


def lvjax_to_hf(params: Mapping, rules: Iterable[Rule], copy: bool = True) -> dict[str, np.ndarray]:
    """Inverse of `hf_to_lvjax`: nested params → flat HF state dict of numpy arrays.

    copy=False returns (possibly strided) views of `params` instead of contiguous copies.
    """
    fix = np.ascontiguousarray if copy else (lambda a: a)
    out = {}
    for rule in rules:
        value = np.asarray(_get(params, rule.path))
        if rule.n is None:
            out[rule.hf] = fix(rule.transform.to_hf(value))
        else:
            for i, key in enumerate(rule.hf_keys()):
                out[key] = fix(rule.transform.to_hf(value[i]))
    return out


# Conv2d weight (out, in, kh, kw) ↔ Flax Conv kernel (kh, kw, in, out).
CONV2D = Transform("conv2d", lambda a: a.transpose(2, 3, 1, 0), lambda a: a.transpose(3, 2, 0, 1))
# 1×1(×1) convolutions used as linear maps: weight (out, in, 1[, 1, 1]) ↔ Dense kernel (in, out).
POINTWISE_CONV1D = Transform("pointwise_conv1d", lambda a: a[:, :, 0].T, lambda a: a.T[:, :, None])
POINTWISE_CONV3D = Transform("pointwise_conv3d", lambda a: a[:, :, 0, 0, 0].T, lambda a: a.T[:, :, None, None, None])
