"""tools/bench_attention.py runs on CPU: help, block counts and the interpret-mode check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_help():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_attention.py"), "--help"],
                       capture_output=True, text=True, check=True)
    assert "--lengths" in r.stdout and "--no-backward" in r.stdout


def test_bench_cpu_counts(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    import bench_attention

    out = tmp_path / "r.json"
    assert bench_attention.main(["--lengths", "4096", "16384", "--check-len", "300", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert all(r["max_abs_err_out"] < 1e-5 for r in res["check"].values())
    rows = {(r["layout"], r["tokens"]): r for r in res["rows"]}
    small, big = rows[("segment_local", 4096)], rows[("segment_local", 16384)]
    assert big["visited"] < big["causal"] < big["dense"]
    # Segment-local visits grow linearly with length (4x tokens → about 4x blocks, not 16x: the prefix column and question row are linear too).
    assert big["visited"] <= 5 * small["visited"]


@pytest.mark.heavy  # CI time (20-minute budget); `make test-all` runs it
def test_bench_timing_path_interpret(tmp_path):
    """The accelerator timing code runs (interpret mode, tiny sizes) and counts FLOPs on visited blocks."""
    sys.path.insert(0, str(ROOT / "tools"))
    import bench_attention

    out = tmp_path / "r.json"
    argv = ["--lengths", "300", "--layouts", "segment_local", "--segment", "64", "--prefix", "20", "--suffix", "16",
            "--heads", "4", "--kv-heads", "2", "--head-dim", "16", "--dtype", "float32", "--block-q", "32",
            "--block-kv", "32", "--iters", "1", "--check-len", "200", "--interpret", "gpu", "--json", str(out)]
    assert bench_attention.main(argv) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["fwd_s"] > 0 and row["fwdbwd_s"] > 0 and row["xla_fwd_s"] > 0
    assert row["fwd_tflops"] > 0 and "cudnn_fwd_s" not in row


def test_bench_cpu_compare(tmp_path):
    """--cpu-compare times blockwise and dense XLA attention and reports their temporaries."""
    sys.path.insert(0, str(ROOT / "tools"))
    import bench_attention

    out = tmp_path / "r.json"
    argv = ["--cpu-compare", "--lengths", "1024", "--layouts", "answer", "--prefix", "20", "--suffix", "100",
            "--heads", "2", "--kv-heads", "1", "--head-dim", "16", "--dtype", "float32", "--iters", "1",
            "--no-backward", "--json", str(out)]
    assert bench_attention.main(argv) == 0
    (row,) = json.loads(out.read_text())
    assert row["blockwise"]["time_s"] > 0 and row["dense"]["time_s"] > 0
    assert row["blockwise"]["temp_gib"] < row["dense"]["temp_gib"]  # no S×S buffer
