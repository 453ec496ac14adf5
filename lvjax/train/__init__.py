"""Training: `lvjax train --config CONFIG [key=value ...]` (see docs/training.md).

config (typed YAML) → mesh (device mesh + logical rules) → data (grain, PyAV) → objective
(the model's loss) → step (jitted, sharded) → checkpointing (orbax) → loop (progress, metrics).
"""
