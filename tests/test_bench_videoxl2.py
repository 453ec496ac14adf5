"""tools/bench_videoxl2.py runs on CPU: the analytic rows (gathered time tokens visit fewer blocks than
in place) and the tiny model's three modes timed in one run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import bench_videoxl2  # noqa: E402


def test_bench_rows(tmp_path):
    out = tmp_path / "r.json"
    bench_videoxl2.main(["--frames", "256", "--tiny-frames", "32", "--repeats", "1", "--json", str(out)])
    res = json.loads(out.read_text())
    (a,) = res["analytic"]
    assert a["visited_128"] < 0.6 and a["visited_128_in_place"] > 0.95
    assert a["allowed_over_causal"] <= a["visited_128"] <= a["visited_512"]
    assert [r["mode"] for r in res["tiny_cpu"]] == list(bench_videoxl2.MODES)
    assert res["tiny_cpu"][0]["time_vs_dense"] == 1.0 and all(r["seconds"] > 0 for r in res["tiny_cpu"])
