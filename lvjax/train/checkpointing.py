"""Orbax CheckpointManager for training: state (params, optimizer state, step, RNG) + data position.

Layout: {dir}/{step}/state (orbax PyTree, OCDBT) and {dir}/{step}/data/process_{i}-of-{n}.json
(grain's checkpoint handler: each host writes and reads its own iterator position).
Saves are asynchronous (the step loop continues while arrays are written); at most `keep`
checkpoints are kept. Restore places every array directly on the current mesh's shardings.
"""

from __future__ import annotations

import json
from typing import Any

import grain
import orbax.checkpoint as ocp

from lvjax.train.config import CheckpointSection


class _IteratorSnapshot:
    """What grain's CheckpointHandler saves/restores: get_state() → bytes, set_state(bytes).

    The state is captured when the save is requested (not when a background thread writes it).
    """

    def __init__(self, iterator=None, state: dict | None = None):
        self.iterator = iterator
        self.state = state if state is not None else (iterator.get_state() if iterator is not None else None)

    def get_state(self) -> bytes:
        return json.dumps(self.state, indent=1).encode()

    def set_state(self, state: bytes) -> None:
        self.state = json.loads(state.decode() if isinstance(state, bytes) else state)
        if self.iterator is not None:
            self.iterator.set_state(self.state)

    def start_prefetch(self) -> None:  # called by grain's handler after restore
        pass


class Checkpointer:
    """Save every `every` steps (async), keep the last `keep`, restore onto given shardings."""

    def __init__(self, directory: str, opts: CheckpointSection):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=opts.keep,
            save_interval_steps=opts.every,
            enable_async_checkpointing=opts.async_save,
            create=True,
        )
        self.directory = directory
        self.mgr = ocp.CheckpointManager(directory, item_names=("state", "data"), options=options)

    def latest_step(self) -> int | None:
        return self.mgr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.mgr.all_steps())

    def save(self, step: int, state: dict, data_iterator=None, *, force: bool = False) -> bool:
        """Request a save at `step` (skipped unless step % every == 0 or `force`)."""
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(_IteratorSnapshot(data_iterator))
        return self.mgr.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, step: int, abstract_state: Any, data_iterator=None) -> dict:
        """State restored with the shardings in `abstract_state` (ShapeDtypeStructs); the
        data iterator (if given) is moved to the saved position."""
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(_IteratorSnapshot(data_iterator, state={}))
        out = self.mgr.restore(step, args=ocp.args.Composite(**items))
        return out["state"]

    def wait(self) -> None:
        self.mgr.wait_until_finished()

    def close(self) -> None:
        self.mgr.wait_until_finished()
        self.mgr.close()
