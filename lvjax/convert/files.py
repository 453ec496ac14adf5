"""safetensors files without the library's copies: a checked header reader and a streaming writer.

`check_safetensors_header(path)` validates the header before any tensor is read;
`save_safetensors(tensors, path)` writes one tensor at a time (views welcome), with the
process umask's permissions.
"""

from __future__ import annotations

import json
import math
import os
import struct
from typing import Any, Mapping

import numpy as np

from lvjax.errors import CheckpointError

# safetensors dtype names → numpy dtype names (bfloat16 through ml_dtypes, as safetensors.numpy does).
DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
          "I32": "int32", "I16": "int16", "I8": "int8", "U64": "uint64", "U32": "uint32", "U16": "uint16",
          "U8": "uint8", "BOOL": "bool"}
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
             "U16": 2, "U8": 1, "BOOL": 1}
_MAX_HEADER = 100 << 20  # the safetensors library's own limit


def check_safetensors_header(path: str) -> dict[str, dict]:
    """{key: {'dtype', 'shape', 'data_offsets'}} of a safetensors file, checked before any tensor is read.

    CheckpointError (naming the file and the key) unless: the 8-byte length and the JSON header fit
    in the file; every dtype is known; shapes are lists of non-negative ints; offsets lie inside the
    data section, do not overlap, and span exactly prod(shape) × itemsize bytes.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a safetensors file ({size} bytes, no header length)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_HEADER):
            raise CheckpointError(f"{path}: not a safetensors file (header length {n} exceeds the {size}-byte file)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CheckpointError(f"{path}: not a safetensors file (the header is not a JSON object)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (the header is not a JSON object)")
    header.pop("__metadata__", None)
    data = size - 8 - n
    spans = []
    for key, info in header.items():
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise CheckpointError(f"{path}: tensor {key!r}: header entry needs dtype, shape and data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPES:
            raise CheckpointError(f"{path}: tensor {key!r}: dtype {dtype!r} is not supported ({', '.join(DTYPES)})")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise CheckpointError(f"{path}: tensor {key!r}: shape {shape!r} is not a list of sizes")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data):
            raise CheckpointError(f"{path}: tensor {key!r}: data_offsets {offsets!r} lie outside the {data}-byte data section")
        want = math.prod(shape) * _ITEMSIZE[dtype]
        if offsets[1] - offsets[0] != want:
            raise CheckpointError(f"{path}: tensor {key!r}: {offsets[1] - offsets[0]} bytes stored, shape {shape} "
                                  f"{dtype} needs {want}")
        spans.append((offsets[0], offsets[1], key))
    spans.sort()
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start < end:
            raise CheckpointError(f"{path}: tensors {a!r} and {b!r} overlap in the data section")
    return header


def _safetensors_dtype(dtype: np.dtype) -> str:
    name = {v: k for k, v in DTYPES.items()}.get(np.dtype(dtype).name)
    if name is None:
        raise CheckpointError(f"dtype {dtype} cannot be written to safetensors")
    return name


def save_safetensors(tensors: Mapping[str, np.ndarray], path: str, metadata: dict | None = None) -> None:
    """Write a safetensors file one tensor at a time (at most one tensor copied at once; normal permissions)."""
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    keys = sorted(tensors)
    for key in keys:
        a = tensors[key]
        nbytes = int(np.prod(a.shape, dtype=np.int64)) * np.dtype(a.dtype).itemsize
        header[key] = {"dtype": _safetensors_dtype(a.dtype), "shape": list(a.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # 8-byte aligned data, as the library writes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for key in keys:
            f.write(np.ascontiguousarray(tensors[key]).reshape(-1).view(np.uint8).data)  # little-endian hosts
