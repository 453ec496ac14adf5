"""`CompressionPlan`: which visual tokens survive each LLM layer (XComp LP-Comp, VideoChat-Flash drops).

A plan is plain, hashable data (a static jit argument): a tuple of `DropEvent`s. Event `e` fires
after `e.after` decoder layers, so layer index `e.after` is the first to see the smaller visual
block (the originals' `rank_layer = layer_idx + 1`). Rules:

- `suffix` (XComp LP-Comp): the visual block is cut into groups of `group_in` consecutive tokens
  (the "frame": 16 post-ToMe tokens, not a true frame) and the last `len(group_keep)` of each
  group are kept (`EXTRA_PARAM_ALWAYS_SUFFIX`).
- `uniform_groups`: a fixed subset `group_keep` of positions inside every group: XComp's
  "Uniform" ablation (the greedy `idx_lists`) and the step-wise ablation (last of every
  `stride` tokens). Per-group counts: n_after = n_before // group_in * len(group_keep).
- `uniform` (VideoChat-Flash): over the *whole* block, `torch.linspace(0, n_cur-1, n_keep,
  dtype=long)` with n_cur = int(n_visual * ratio_in), n_keep = int(n_visual * ratio_out),
  n_visual the block length entering layer 0 (the original's `int(n * ratio)`, Python float;
  XComp's ver7 copy adds 1e-6 before int(), which only matters for whole-block ratios).
- `attention` (VideoChat-Flash): top-n_keep visual tokens by attention, computed inside the LLM;
  the plan only gives the counts (same int() rule as `uniform`).

Plans use either per-group rules only or whole-block rules only. Counts are exact for a given
n_visual: `visual_tokens_at`, `seq_len_at`, `keep_count`, `keep_indices`.

Layer counts: XComp hard-codes its 28-layer schedule (`n_layers = 28` in the original
`__init__`) and applies it to whatever layers exist (fixture `L4trunc4`: a 4-layer model drops
only after layer 3). `schedule_layers` sets the schedule's L separately from `num_layers`; events
with after > num_layers never fire and are omitted; an event with after == num_layers (possible
only when schedule_layers > num_layers) fires after the final decoder layer, as in the original,
and only shortens the output sequence.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Sequence

import numpy as np

PER_GROUP_RULES = ("suffix", "uniform_groups")
WHOLE_BLOCK_RULES = ("uniform", "attention")
RULES = PER_GROUP_RULES + WHOLE_BLOCK_RULES

# VideoChat-Flash-2B config.json defaults (`llm_compress_layer_list`, `llm_image_token_ratio_list`).
VCF_DEFAULT_LAYERS = (24,)
VCF_DEFAULT_RATIOS = (1.0, 0.5)
# XComp step-wise ablation as in its scripts: EXTRA_PARAM_INNER_CONDENSER_ID="[10, 20]",
# EXTRA_PARAM_INNER_STRIDE="4", nexthalf condenser without idx lists (16 -> 4 -> 1 over 28 layers).
STEPWISE_DEFAULT_LAYERS_28 = (10, 20)
STEPWISE_DEFAULT_STRIDE = 4


@dataclasses.dataclass(frozen=True)
class DropEvent:
    """One drop: after `after` decoder layers, shrink the visual block by `rule`.

    Per-group rules use group_in (tokens per group before) and group_keep (kept positions inside
    a group, ascending); whole-block rules use ratio_in / ratio_out (fractions of n_visual).
    """

    after: int
    rule: str
    group_in: int = 0
    group_keep: tuple[int, ...] = ()
    ratio_in: float = 1.0
    ratio_out: float = 1.0

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"unknown drop rule {self.rule!r} (expected one of {RULES})")
        if self.after < 0:
            raise ValueError(f"drop event after {self.after} layers: must be >= 0")
        if self.per_group:
            keep = self.group_keep
            if self.group_in < 1 or not keep or list(keep) != sorted(set(keep)) or keep[0] < 0 or keep[-1] >= self.group_in:
                raise ValueError(f"bad group_keep {keep} for groups of {self.group_in}")
            if self.rule == "suffix" and keep != tuple(range(self.group_in - len(keep), self.group_in)):
                raise ValueError(f"suffix rule must keep the last positions of each group, got {keep}")
        elif not (0.0 <= self.ratio_out <= self.ratio_in <= 1.0):
            raise ValueError(f"ratios must satisfy 0 <= ratio_out <= ratio_in <= 1, got {self.ratio_in} -> {self.ratio_out}")

    @property
    def per_group(self) -> bool:
        return self.rule in PER_GROUP_RULES

    @property
    def group_out(self) -> int:
        """Tokens per group after the drop (per-group rules)."""
        return len(self.group_keep)


@dataclasses.dataclass(frozen=True)
class CompressionPlan:
    """Per-layer visual token counts and drop rules for an LLM of `num_layers` decoder layers.

    name: the builder name; tokens_per_group: group length entering layer 0 (16 post-ToMe tokens
    per "frame"); schedule_layers: the L the schedule was computed for (== num_layers unless set);
    events: ascending by `after`, at most one per layer.
    """

    name: str
    num_layers: int
    tokens_per_group: int = 16
    schedule_layers: int = 0
    events: tuple[DropEvent, ...] = ()

    def __post_init__(self):
        if self.num_layers < 1 or self.tokens_per_group < 1:
            raise ValueError(f"num_layers and tokens_per_group must be >= 1 ({self.num_layers}, {self.tokens_per_group})")
        afters = [e.after for e in self.events]
        if afters != sorted(set(afters)):
            raise ValueError(f"drop events must be strictly ascending by layer, got {afters}")
        if afters and afters[-1] > self.num_layers:
            raise ValueError(f"drop after {afters[-1]} layers but the model has {self.num_layers}")
        kinds = {e.per_group for e in self.events}
        if len(kinds) > 1:
            raise ValueError("a plan mixes per-group and whole-block rules")
        g = self.tokens_per_group
        for e in self.events:
            if e.per_group:
                if e.group_in != g:
                    raise ValueError(f"event after {e.after}: group_in {e.group_in} but {g} tokens per group enter it")
                g = e.group_out
        ratio = 1.0
        for e in self.events:
            if not e.per_group:
                if e.ratio_in != ratio:
                    raise ValueError(f"event after {e.after}: ratio_in {e.ratio_in} but the block is at {ratio}")
                ratio = e.ratio_out

    # ------------------------------------------------------------------ structure

    @property
    def per_group(self) -> bool:
        """True unless the plan uses whole-block (VideoChat-Flash) rules."""
        return all(e.per_group for e in self.events)

    @property
    def is_static(self) -> bool:
        """True when every kept index is known without running the model (no attention rule)."""
        return all(e.rule != "attention" for e in self.events)

    @property
    def group_tokens(self) -> tuple[int, ...] | None:
        """Tokens per group entering each layer 0..num_layers-1 (None for whole-block plans)."""
        if not self.per_group:
            return None
        out, g, events = [], self.tokens_per_group, list(self.events)
        for layer in range(self.num_layers):
            while events and events[0].after <= layer:
                g = events.pop(0).group_out
            out.append(g)
        return tuple(out)

    @property
    def drop_after(self) -> tuple[int, ...]:
        """The `after` of every event (XComp's `EXTRA_PARAM_INNER_CONDENSER_ID`)."""
        return tuple(e.after for e in self.events)

    # ------------------------------------------------------------------ exact counts

    def _event(self, event: DropEvent | int) -> DropEvent:
        if isinstance(event, DropEvent):
            if event not in self.events:
                raise ValueError(f"{event} is not an event of plan {self.name!r}")
            return event
        return self.events[event]

    def _check_n(self, n_visual: int) -> None:
        if n_visual < 0:
            raise ValueError(f"n_visual must be >= 0, got {n_visual}")
        if self.per_group and self.events and n_visual % self.tokens_per_group:
            raise ValueError(f"plan {self.name!r} needs a visual block of whole groups of "
                             f"{self.tokens_per_group} tokens, got {n_visual}")

    def _count_after(self, e: DropEvent, n_before: int, n_visual: int) -> int:
        if e.per_group:
            return n_before // e.group_in * e.group_out
        return int(n_visual * e.ratio_out)

    def visual_tokens_at(self, layer: int, n_visual: int) -> int:
        """Visual tokens entering decoder layer `layer` (layer == num_layers: the output) for a
        block of n_visual tokens entering layer 0."""
        if not 0 <= layer <= self.num_layers:
            raise ValueError(f"layer {layer} outside 0..{self.num_layers}")
        self._check_n(n_visual)
        n = n_visual
        for e in self.events:
            if e.after > layer:
                break
            n = self._count_after(e, n, n_visual)
        return n

    def visual_counts(self, n_visual: int) -> tuple[int, ...]:
        """Visual tokens entering each layer 0..num_layers-1."""
        return tuple(self.visual_tokens_at(i, n_visual) for i in range(self.num_layers))

    def seq_len_at(self, layer: int, n_text: int, n_visual: int) -> int:
        """Sequence length entering `layer`: n_text text tokens plus the visual block."""
        return n_text + self.visual_tokens_at(layer, n_visual)

    def count_before(self, event: DropEvent | int, n_visual: int) -> int:
        """Visual tokens just before `event` fires."""
        e = self._event(event)
        if e.after == 0:
            self._check_n(n_visual)
            return n_visual
        return self.visual_tokens_at(e.after - 1, n_visual)

    def keep_count(self, event: DropEvent | int, n_visual: int) -> int:
        """Visual tokens kept by `event` (for `attention`: the top-k size)."""
        e = self._event(event)
        return self._count_after(e, self.count_before(e, n_visual), n_visual)

    def keep_indices(self, event: DropEvent | int, n_visual: int) -> np.ndarray:
        """Kept indices (int64, ascending) into the visual block entering `event`, for static rules."""
        e = self._event(event)
        n_cur, n_keep = self.count_before(e, n_visual), self.keep_count(e, n_visual)
        if e.rule == "attention":
            raise ValueError("the attention rule is computed inside the LLM; use keep_count for its size")
        if e.per_group:
            base = np.arange(n_cur // e.group_in, dtype=np.int64)[:, None] * e.group_in
            return (base + np.asarray(e.group_keep, np.int64)[None, :]).reshape(-1)
        return torch_linspace_long(0, n_cur - 1, n_keep)


def torch_linspace_long(start: int, end: int, steps: int) -> np.ndarray:
    """`torch.linspace(start, end, steps, dtype=torch.long)` exactly (int64).

    torch computes integer linspace in double, symmetrically: step = (end-start)/(steps-1);
    i < steps//2 gives start + step*i, the rest end - step*(steps-1-i); then truncates.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if steps == 0:
        return np.zeros(0, np.int64)
    if steps == 1:
        return np.asarray([start], np.int64)
    step = (float(end) - float(start)) / (steps - 1)
    half = steps // 2
    vals = [start + step * i if i < half else end - step * (steps - 1 - i) for i in range(steps)]
    return np.asarray([int(v) for v in vals], np.int64)


# ---------------------------------------------------------------------- XComp schedules


def cosine_goals(schedule_layers: int, n1: int = 16) -> list[int]:
    """XComp code rounding: goal(l) = 1 + int((n1-1)*0.5*(1+cos(l/L*pi)) + 0.5), l = 0..L.

    The float expression follows the original's evaluation order; goal(l) is the tokens per group
    after l layers of the schedule.
    """
    L = schedule_layers
    return [1 + int((n1 - 1) * 0.5 * (1 + math.cos(i / L * math.pi)) + 0.5) for i in range(L + 1)]


def cosine_goals_paper(schedule_layers: int, n1: int = 16) -> list[int]:
    """The paper's Eq. 1: N(l) = ceil((n1-1)/2 * cos(l*pi/L) + (n1+1)/2), l = 0..L.

    A 1e-9 tolerance keeps mathematically integral values (e.g. cos = 1/2 with odd n1) from being
    pushed up by floating point.
    """
    L = schedule_layers
    return [math.ceil((n1 - 1) / 2 * math.cos(i * math.pi / L) + (n1 + 1) / 2 - 1e-9) for i in range(L + 1)]


def greedy_idx_lists(goals: Sequence[int], n1: int = 16) -> list[list[int]]:
    """XComp's `idx_lists`: starting from [1..n1], for each goal remove, one at a time, the index
    whose removal leaves the list most uniform (score = sum over all but the last kept element of
    ((j+1)/len * n1 - v_j)^2; the first best candidate wins ties). 1-based, as in the original."""
    cur = list(range(1, n1 + 1))
    out = [copy.copy(cur)]
    for goal in goals[1:]:
        while goal < len(cur):
            best, best_next = 1e9, None
            for remove in cur:
                nxt = [v for v in cur if v != remove]
                score = 0
                for j in range(len(nxt) - 1):
                    score += ((j + 1) / len(nxt) * n1 - nxt[j]) ** 2
                if score < best:
                    best, best_next = score, nxt
            cur = best_next
        out.append(copy.copy(cur))
    return out


def _xcomp_events(goals: Sequence[int], n1: int, keep: str, num_layers: int) -> tuple[DropEvent, ...]:
    idx = greedy_idx_lists(goals, n1)
    events = []
    for i in range(len(idx) - 1):
        prev, nxt = idx[i], idx[i + 1]
        if len(prev) == len(nxt) or i > num_layers:
            continue
        if keep == "suffix":
            events.append(DropEvent(i, "suffix", len(prev), tuple(range(len(prev) - len(nxt), len(prev)))))
        elif keep == "uniform":
            events.append(DropEvent(i, "uniform_groups", len(prev), tuple(p for p, v in enumerate(prev) if v in nxt)))
        else:
            raise ValueError(f"keep must be 'suffix' or 'uniform', got {keep!r}")
    return tuple(events)


def xcomp_idx_lists(schedule_layers: int = 28, n1: int = 16, paper: bool = False) -> list[list[int]]:
    """The `idx_lists` of the cosine schedule (code rounding, or the paper's ceil with paper=True)."""
    goals = (cosine_goals_paper if paper else cosine_goals)(schedule_layers, n1)
    return greedy_idx_lists(goals, n1)


# ---------------------------------------------------------------------- builders


def _stepwise_events(num_layers, schedule_layers, g, layers, stride):
    if layers is None:
        layers = tuple(round(x * schedule_layers / 28) for x in STEPWISE_DEFAULT_LAYERS_28)
    strides = [stride] * len(layers) if isinstance(stride, int) else list(stride)
    if len(strides) != len(layers):
        raise ValueError(f"stepwise: {len(layers)} layers but {len(strides)} strides")
    events = []
    for k, st in zip(layers, strides):
        if st < 1 or g % st:
            raise ValueError(f"stepwise: a group of {g} tokens does not split into strides of {st}")
        if k <= num_layers:
            events.append(DropEvent(int(k), "uniform_groups", g, tuple(range(st - 1, g, st))))
        g //= st
    return tuple(events)


def _vcf_events(name, num_layers, layers, ratios):
    layers = tuple(VCF_DEFAULT_LAYERS if layers is None else layers)
    ratios = tuple(float(r) for r in (VCF_DEFAULT_RATIOS if ratios is None else ratios))
    if len(ratios) != len(layers) + 1:
        raise ValueError(f"{name}: {len(layers)} layers need {len(layers) + 1} ratios, got {len(ratios)}")
    if ratios[0] != 1.0:
        raise ValueError(f"{name}: the first ratio must be 1.0 (the whole block), got {ratios[0]}")
    if any(k < 1 for k in layers) or list(layers) != sorted(set(layers)):
        raise ValueError(f"{name}: layers must be strictly ascending and >= 1, got {list(layers)}")
    n_uniform = {"uniform": len(layers), "attention": 0, "uniform0_attention": 1, "uniform1_attention": 2}[name]
    return tuple(
        DropEvent(int(k), "uniform" if s < n_uniform else "attention", ratio_in=ratios[s], ratio_out=ratios[s + 1])
        for s, k in enumerate(layers) if k <= num_layers
    )


PLAN_NAMES = ("none", "xcomp_cosine", "xcomp_cosine_uniform", "xcomp_cosine_paper", "stepwise",
              "uniform", "attention", "uniform0_attention", "uniform1_attention")


def build_plan(name: str, num_layers: int, tokens_per_group: int = 16, *, schedule_layers: int | None = None,
               keep: str | None = None, layers: Sequence[int] | None = None, ratios: Sequence[float] | None = None,
               stride: int | Sequence[int] = STEPWISE_DEFAULT_STRIDE) -> CompressionPlan:
    """Build a named plan for an LLM with `num_layers` decoder layers.

    - "none": no drops.
    - "xcomp_cosine": LP-Comp as in the XComp code: goals `cosine_goals(schedule_layers,
      tokens_per_group)`, a drop after i layers wherever len(idx_lists[i]) != len(idx_lists[i+1]),
      keep="suffix" (default) or keep="uniform" (the greedy idx_lists subsets, the "Uniform"
      ablation; also "xcomp_cosine_uniform"). 28 layers: drops after
      [3,5,7,8,10,11,12,14,15,16,17,19,20,22,24] layers.
    - "xcomp_cosine_paper": the same with the paper's ceil formula.
    - "stepwise": XComp's step-wise ablation: after each k in `layers` (default (10, 20), scaled
      by schedule_layers/28 and rounded) keep the last of every `stride` (default 4) consecutive
      tokens of a group: 16 -> 4 -> 1.
    - "uniform" / "attention" / "uniform0_attention" / "uniform1_attention" (VideoChat-Flash):
      after each k in `layers` (rank_layer, so layer k is the first to see the smaller block),
      stage s goes from int(n*ratios[s]) to int(n*ratios[s+1]) tokens of the whole block;
      uniformN_attention uses `uniform` for stages 0..N and `attention` after. Defaults: the
      released config's layers (24,) and ratios (1.0, 0.5). Layers > num_layers never fire.

    schedule_layers: the L of the XComp schedules (default num_layers; 28 reproduces the original
    applied to a model of another depth). For very short schedules (goal(1) < tokens_per_group,
    e.g. L = 4) the XComp rule yields an event with after=0, applied before layer 0 here; the
    original never fires it (its rank_layer starts at 1).
    """
    L = num_layers if schedule_layers is None else schedule_layers
    if L < 1:
        raise ValueError(f"schedule_layers must be >= 1, got {L}")
    g = tokens_per_group
    if name == "none":
        events = ()
    elif name in ("xcomp_cosine", "xcomp_cosine_uniform", "xcomp_cosine_paper"):
        k = keep or ("uniform" if name == "xcomp_cosine_uniform" else "suffix")
        goals = cosine_goals_paper(L, g) if name == "xcomp_cosine_paper" else cosine_goals(L, g)
        events = _xcomp_events(goals, g, k, num_layers)
    elif name == "stepwise":
        events = _stepwise_events(num_layers, L, g, layers, stride)
    elif name in ("uniform", "attention", "uniform0_attention", "uniform1_attention"):
        events = _vcf_events(name, num_layers, layers, ratios)
    else:
        raise ValueError(f"unknown compression plan {name!r} (expected one of {PLAN_NAMES})")
    return CompressionPlan(name, num_layers, g, L, events)


def vcf_params(hf_config: dict) -> dict:
    """`layers` / `ratios` for the VideoChat-Flash builders from an original config.json dict."""
    return {
        "layers": tuple(int(k) for k in hf_config.get("llm_compress_layer_list", VCF_DEFAULT_LAYERS)),
        "ratios": tuple(float(r) for r in hf_config.get("llm_image_token_ratio_list", VCF_DEFAULT_RATIOS)),
    }
