"""A multi-process job on one machine: two processes of 4 simulated CPU devices each, joined by
`jax.distributed` from the environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID;
gloo collectives on CPU), load the tiny VideoChat-Flash on data=2 × tensor=4 (8 global devices)
and answer with the tokens one device gives. Each process places only its own devices' shards."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESH = "data=2,tensor=4"
QUESTION = "What happens?"


def _video() -> np.ndarray:
    return np.random.RandomState(0).randint(0, 255, (16, 64, 64, 3)).astype(np.uint8)


def _worker(folder: str) -> None:
    import jax

    import lvjax

    model = lvjax.load(folder, mesh=MESH)  # initialises jax.distributed from the environment
    _, report = model.answer_encoded(model.encode_video(_video(), fps=1.0), QUESTION, max_new_tokens=8)
    gate = model.params["llm"]["layers"][0]["mlp"]["gate_proj"]["kernel"]
    print("RESULT" + json.dumps({
        "process": [jax.process_index(), jax.process_count()], "devices": [jax.device_count(), jax.local_device_count()],
        "tokens": report["token_ids"], "gate": [list(gate.shape), len(gate.addressable_shards), gate.is_fully_addressable],
        "load": model.load_report}), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.heavy  # two fresh processes (~1 min)
def test_two_processes_answer_like_one_device(tmp_path):
    import lvjax
    from lvjax.testing.tiny import build_tiny_videochat_flash

    folder = str(build_tiny_videochat_flash(str(tmp_path / "m"), hidden=64, layers=4, heads=4, kv_heads=2,
                                            intermediate=128))
    port = _free_port()
    procs = []
    for i in range(2):
        env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="4", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
                   JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i),
                   LVJAX_MULTIPROCESS_WORKER=folder, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
        env.pop("XLA_FLAGS", None)
        procs.append(subprocess.Popen([sys.executable, __file__], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=900)
        lines = [line for line in stdout.splitlines() if line.startswith("RESULT")]
        assert p.returncode == 0 and lines, stderr[-3000:]
        outs.append(json.loads(lines[0][len("RESULT"):]))
    one = lvjax.load(folder)
    _, report = one.answer_encoded(one.encode_video(_video(), fps=1.0), QUESTION, max_new_tokens=8)
    assert sorted(o["process"][0] for o in outs) == [0, 1] and all(o["process"][1] == 2 for o in outs)
    assert all(o["devices"] == [8, 4] for o in outs)
    for o in outs:
        assert o["tokens"] == report["token_ids"], o
        _, local_shards, whole = o["gate"]
        assert local_shards == 4 and not whole, o  # the weight spans both processes; each holds 4 shards
        assert o["load"]["host_peak_bytes"] < o["load"]["parameter_bytes"] / 4, o["load"]


if __name__ == "__main__" and os.environ.get("LVJAX_MULTIPROCESS_WORKER"):
    _worker(os.environ["LVJAX_MULTIPROCESS_WORKER"])
