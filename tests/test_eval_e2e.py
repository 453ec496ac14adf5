"""`lvjax eval` on a tiny random-weight VideoChat-Flash over generated benchmarks (PyAV videos, one
missing and one corrupt): results and summary files, one-line errors, the same results with 8
simulated devices and over `jax.distributed` processes, and resume after SIGKILL."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lvjax.cli import main
from lvjax.eval.summary import summary_path
from lvjax.eval.synthetic import make_benchmark

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--max-frames", "8", "--max-new-tokens", "4"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from lvjax.testing.tiny import build_tiny_videochat_flash

    return str(build_tiny_videochat_flash(tmp_path_factory.mktemp("eval_model") / "tiny"))


@pytest.fixture(scope="session")
def xla_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("xla"))


def _bench(tmp_path_factory, task, n=20):
    root = tmp_path_factory.mktemp(task)
    return make_benchmark(task, str(root), n, seed=2, broken=True), str(root / "videos")


@pytest.fixture(scope="session")
def mlvu(tmp_path_factory):
    return _bench(tmp_path_factory, "mlvu_mc")


def _args(model, task, bench, out, *extra):
    return ["eval", "--model", model, "--task", task, "--annotations", bench[0], "--videos", bench[1], "--out", out,
            *FAST, *extra]


def _rows(path):
    rows = [json.loads(line) for line in open(path)]
    for r in rows:
        r.pop("timing")
    return rows


def _env(xla_cache, **extra):
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), **extra)


def _cli(args, env):
    return subprocess.run([sys.executable, "-m", "lvjax.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="session")
def mlvu_reference(tiny_model, mlvu, xla_cache, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ref") / "mlvu.jsonl")
    assert main(_args(tiny_model, "mlvu_mc", mlvu, out, "--compilation-cache", xla_cache)) == 0
    return out


def test_cli_end_to_end(mlvu_reference, capsys):
    rows = _rows(mlvu_reference)
    assert len(rows) == 20 and sum(r["error"] is not None for r in rows) == 2
    assert all(r["frames"] == 8 and isinstance(r["output"], str) for r in rows if not r["error"])
    summary = json.load(open(summary_path(mlvu_reference)))
    assert (summary["items"], summary["errors"]) == (20, 2) and "task_type" in summary["groups"]


def test_rescore_and_json_summary(tiny_model, mlvu, mlvu_reference, tmp_path, capsys):
    out = str(tmp_path / "again.jsonl")
    assert main(["eval", "--task", "mlvu_mc", "--annotations", mlvu[0], "--rescore", mlvu_reference, "--out", out,
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["accuracy"] == json.load(open(summary_path(mlvu_reference)))["accuracy"]
    assert _rows(out) == _rows(mlvu_reference)


def test_user_errors_are_one_line(tiny_model, mlvu, tmp_path, capsys):
    assert main(_args(tiny_model, "mlvu_mc", ("/nope/ann.json", mlvu[1]), str(tmp_path / "r.jsonl"))) == 1
    err = capsys.readouterr().err.strip()
    assert err == "lvjax eval: error: /nope/ann.json: no such annotation file or folder"
    assert main(["eval", "--task", "mlvu_mc", "--annotations", mlvu[0], "--out", str(tmp_path / "r.jsonl")]) == 1
    assert "--model and --videos are required" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "r.jsonl")
    with pytest.raises(SystemExit) as e:
        main(["eval", "--task", "nope", "--annotations", "x", "--out", "y"])
    assert e.value.code == 2


@pytest.mark.heavy  # CI time (20-minute budget); `make test-all` runs it
def test_eight_simulated_devices_give_the_same_results(tiny_model, mlvu, mlvu_reference, xla_cache, tmp_path):
    out = str(tmp_path / "dev8.jsonl")
    env = _env(xla_cache, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    probe = subprocess.run([sys.executable, "-c", "import jax; print(jax.device_count())"], env=env, capture_output=True,
                           text=True)
    assert probe.stdout.strip() == "8"
    r = _cli(_args(tiny_model, "mlvu_mc", mlvu, out, "--compilation-cache", xla_cache), env)
    assert r.returncode == 0, r.stderr
    assert _rows(out) == _rows(mlvu_reference)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _distributed(n, tiny_model, mlvu, xla_cache, out):
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "lvjax.cli", *_args(tiny_model, "mlvu_mc", mlvu, out,
                                                                         "--compilation-cache", xla_cache)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env(xla_cache, JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                                       JAX_NUM_PROCESSES=str(n), JAX_PROCESS_ID=str(p)))
             for p in range(n)]
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err


@pytest.mark.heavy
def test_two_processes_give_the_same_results(tiny_model, mlvu, mlvu_reference, xla_cache, tmp_path):
    out = str(tmp_path / "proc2.jsonl")
    _distributed(2, tiny_model, mlvu, xla_cache, out)
    assert _rows(out) == _rows(mlvu_reference)
    assert not [f for f in os.listdir(tmp_path) if ".part-" in f]


@pytest.mark.heavy
def test_eight_processes_give_the_same_results(tiny_model, mlvu, mlvu_reference, xla_cache, tmp_path):
    out = str(tmp_path / "proc8.jsonl")
    _distributed(8, tiny_model, mlvu, xla_cache, out)
    assert _rows(out) == _rows(mlvu_reference)


@pytest.mark.heavy
def test_sigkill_and_resume_gives_the_uninterrupted_file(tiny_model, mlvu, mlvu_reference, xla_cache, tmp_path):
    out = tmp_path / "killed.jsonl"
    args = _args(tiny_model, "mlvu_mc", mlvu, str(out), "--compilation-cache", xla_cache)
    proc = subprocess.Popen([sys.executable, "-m", "lvjax.cli", *args], cwd=ROOT, env=_env(xla_cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (out.exists() and out.read_text().count("\n") >= 6):
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert out.read_text().count("\n") < 20
    r = _cli(args, _env(xla_cache))
    assert r.returncode == 0, r.stderr
    assert _rows(out) == _rows(mlvu_reference)


@pytest.mark.heavy
@pytest.mark.parametrize("task", ["mvbench", "lvbench", "videomme", "longvideobench", "vnbench", "charades_sta",
                                  "synthetic"])
def test_every_format_end_to_end(task, tiny_model, xla_cache, tmp_path_factory, tmp_path):
    bench = _bench(tmp_path_factory, task)
    out = str(tmp_path / "r.jsonl")
    assert main(_args(tiny_model, task, bench, out, "--compilation-cache", xla_cache)) == 0
    rows = _rows(out)
    assert len(rows) == 20 and all(r["error"] is None or "VideoError" in r["error"] or "not found" in r["error"]
                                   for r in rows)
    assert json.load(open(summary_path(out)))["errors"] == (8 if task == "vnbench" else 2)


@pytest.mark.heavy  # CI time (20-minute budget); `make test-all` runs it
def test_cli_with_subtitles(tiny_model, xla_cache, tmp_path_factory, tmp_path):
    ann, videos = _bench(tmp_path_factory, "videomme", n=6)
    subs = str(Path(videos).parent / "subtitles")
    out = str(tmp_path / "subs.jsonl")
    assert main(_args(tiny_model, "videomme", (ann, videos), out, "--subtitles", subs, "--compilation-cache", xla_cache)) == 0
    rows = _rows(out)
    assert [r["error"] is None for r in rows] == [False, False, False, True, True, True]
    assert "vid_002.srt: malformed SubRip" in rows[2]["error"]
    assert rows[4]["question"].startswith("This video's subtitles are listed below: \nA square appears.\nIt is ")
    assert rows[3]["question"].startswith("\nThese are the frames of a video.")  # vid_003 has no subtitle file
    assert json.load(open(summary_path(out)))["errors"] == 3


@pytest.mark.heavy
def test_niah_end_to_end(tiny_model, xla_cache, tmp_path):
    assert main(["make-benchmark", "niah", "--out", str(tmp_path / "b"), "--n", "20", "--frames", "32"]) == 0
    out = str(tmp_path / "niah.jsonl")
    assert main(["eval", "--model", tiny_model, "--task", "niah", "--annotations", str(tmp_path / "b" / "annotations.json"),
                 "--videos", str(tmp_path / "b" / "videos"), "--out", out, *FAST, "--compilation-cache", xla_cache]) == 0
    assert (tmp_path / "niah.niah.png").is_file()
