"""CompressionPlan: XComp cosine schedule vs the recorded original, general formulas, VideoChat-Flash counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lvjax.families.videochat_flash.compression import (
    CompressionPlan,
    DropEvent,
    build_plan,
    cosine_goals,
    torch_linspace_long,
    vcf_params,
    xcomp_idx_lists,
)

AFTER_28 = [3, 5, 7, 8, 10, 11, 12, 14, 15, 16, 17, 19, 20, 22, 24]
GROUP_28 = [16, 16, 16, 15, 15, 14, 14, 13, 12, 12, 11, 10, 9, 9, 8, 7, 6, 5, 5, 4, 3, 3, 2, 2, 1, 1, 1, 1]


def test_table_28():
    plan = build_plan("xcomp_cosine", 28)
    assert list(plan.drop_after) == AFTER_28
    assert list(plan.group_tokens) == GROUP_28
    assert sum(GROUP_28) == 231
    assert all(e.rule == "suffix" for e in plan.events)


def test_fixture_schedule(ref_facts):
    lp = ref_facts["lp_schedule"]
    assert xcomp_idx_lists(28, 16) == lp["idx_lists"]
    assert list(build_plan("xcomp_cosine", 28).drop_after) == lp["EXTRA_PARAM_INNER_CONDENSER_ID"]
    assert cosine_goals(28, 16) == lp["tokens_per_frame_goal"]
    assert ref_facts["L4/lp"]["llm_image_token_ratio_list"] == [1.0] + [len(lp["idx_lists"][k + 1]) / 16 for k in AFTER_28]


def test_fixture_layer_seq_len(ref, ref_facts):
    plan = build_plan("xcomp_cosine", 28)
    want = [plan.seq_len_at(j, 79, 256) for j in range(28)]
    assert want[:4] == [335, 335, 335, 319]
    np.testing.assert_array_equal(want, ref["L4/lp/layer_seq_len"])
    np.testing.assert_array_equal(want, ref["L8/lp/layer_seq_len"])
    np.testing.assert_array_equal(plan.group_tokens, ref["L4/lp/layer_tokens_per_frame"])
    assert plan.seq_len_at(28, 79, 256) == 95  # the output (lp/logits has 95 positions)
    qc = ref_facts["qc128"]
    assert [plan.seq_len_at(j, 81, 2048) for j in range(28)] == qc["layer_seq_len"]


def test_truncated_model(ref, ref_facts):
    """The original applies the 28-layer list to any depth: a 4-layer model drops after layer 3 only."""
    plan = build_plan("xcomp_cosine", 4, schedule_layers=28)
    assert plan.drop_after == (3,)
    lens = [plan.seq_len_at(j, 79, 256) for j in range(4)]
    np.testing.assert_array_equal(lens, ref["L4trunc4/lp/layer_seq_len"])
    assert plan.seq_len_at(4, 79, 256) == ref_facts["L4trunc4/lp/final_seq_len"] == 319
    assert plan.group_tokens[-1] == 15
    # a 24-layer model under the 28 schedule: the drop after layer 24 fires after the last layer
    p24 = build_plan("xcomp_cosine", 24, schedule_layers=28)
    assert p24.drop_after[-1] == 24 and p24.visual_tokens_at(24, 256) == 16 and p24.group_tokens[-1] == 2


def test_suffix_keep_indices():
    plan = build_plan("xcomp_cosine", 28)
    e0 = plan.events[0]
    np.testing.assert_array_equal(plan.keep_indices(e0, 32), list(range(1, 16)) + list(range(17, 32)))
    # compose all drops on 2 groups: the survivor is the last token of each group
    idx = np.arange(32)
    for e in plan.events:
        idx = idx[plan.keep_indices(e, 32)]
        assert len(idx) == plan.visual_tokens_at(e.after, 32)
    np.testing.assert_array_equal(idx, [15, 31])


def test_uniform_groups_ablation(ref_facts):
    lists = ref_facts["lp_schedule"]["idx_lists"]
    plan = build_plan("xcomp_cosine_uniform", 28)
    assert list(plan.drop_after) == AFTER_28 and list(plan.group_tokens) == GROUP_28
    idx = np.arange(48)  # 3 groups
    for e in plan.events:
        idx = idx[plan.keep_indices(e, 48)]
        want = [g * 16 + v - 1 for g in range(3) for v in lists[e.after + 1]]
        np.testing.assert_array_equal(idx, want)


def _goal_code(l, L, n1):
    """XComp's rounding of its cosine schedule, evaluated with torch (float64) as an independent reference."""
    c = torch.cos(torch.tensor(l / L, dtype=torch.float64) * torch.pi)
    return 1 + int(torch.floor((n1 - 1) * 0.5 * (1 + c) + 0.5))


def _goal_paper(l, L, n1):
    """The paper's Eq. 1, ceil((n1-1)/2·cos(lπ/L) + (n1+1)/2), in torch (float64)."""
    c = torch.cos(torch.tensor(l * torch.pi / L, dtype=torch.float64))
    return int(torch.ceil((n1 - 1) / 2 * c + (n1 + 1) / 2 - 1e-9))


@pytest.mark.parametrize("L", [12, 24, 28, 32, 36])
@pytest.mark.parametrize("n1", [16, 8])
@pytest.mark.parametrize("name,goal", [("xcomp_cosine", _goal_code), ("xcomp_cosine_paper", _goal_paper)])
def test_general_schedule(L, n1, name, goal):
    plan = build_plan(name, L, tokens_per_group=n1)
    g = plan.group_tokens
    # tokens entering layer j = goal(j + 1); drops exactly where the goal changes
    assert list(g) == [goal(j + 1, L, n1) for j in range(L)]
    assert list(plan.drop_after) == [j for j in range(L) if goal(j, L, n1) != goal(j + 1, L, n1)]
    assert all(a >= b for a, b in zip(g, g[1:])) and g[-1] == 1 and g[0] == n1
    n_vis = 3 * n1
    assert [plan.visual_tokens_at(j, n_vis) for j in range(L)] == [3 * x for x in g]
    for e in plan.events:
        k = plan.keep_indices(e, n_vis)
        assert len(k) == plan.keep_count(e, n_vis) and np.all(np.diff(k) > 0)


def test_paper_vs_code_28():
    code = build_plan("xcomp_cosine", 28).group_tokens
    paper = build_plan("xcomp_cosine_paper", 28).group_tokens
    # ceil vs round-half-up: the paper's counts are never lower and at most one higher
    assert code != paper and all(0 <= b - a <= 1 for a, b in zip(code, paper))


def test_stepwise():
    plan = build_plan("stepwise", 28)
    assert plan.drop_after == (10, 20)
    assert plan.group_tokens == (16,) * 10 + (4,) * 10 + (1,) * 8
    idx = np.arange(32)
    for e in plan.events:
        idx = idx[plan.keep_indices(e, 32)]
    np.testing.assert_array_equal(idx, [15, 31])
    assert build_plan("stepwise", 14).drop_after == (5, 10)
    assert build_plan("stepwise", 28, layers=[6], stride=16).group_tokens[-1] == 1
    with pytest.raises(ValueError):
        build_plan("stepwise", 28, stride=3)


def _vcf_counts(n, layers, ratios, num_layers):
    """Independent: tokens entering each layer; stage s (layer k = layers[s]) sets int(n*ratios[s+1])."""
    out = []
    for j in range(num_layers):
        s = sum(1 for k in layers if k <= j)
        out.append(int(n * ratios[s]))
    return out


@pytest.mark.parametrize("n", [256, 1000, 1234, 7])
def test_vcf_counts(n):
    layers, ratios = [4, 18], [1.0, 0.75, 0.25]
    plan = build_plan("uniform0_attention", 28, layers=layers, ratios=ratios)
    assert [e.rule for e in plan.events] == ["uniform", "attention"]
    assert plan.group_tokens is None and not plan.is_static
    assert list(plan.visual_counts(n)) == _vcf_counts(n, layers, ratios, 28)
    assert plan.keep_count(1, n) == int(n * 0.25)
    k = plan.keep_indices(0, n)
    assert len(k) == int(n * 0.75) and k[0] == 0 and (len(k) < 2 or k[-1] == n - 1)
    with pytest.raises(ValueError):
        plan.keep_indices(1, n)


def test_vcf_defaults_and_variants():
    plan = build_plan("attention", 28)
    assert plan.drop_after == (24,) and plan.visual_counts(256)[24] == 128
    assert plan.events[0].rule == "attention"
    p = build_plan("uniform1_attention", 28, layers=[8, 16, 24], ratios=[1, .5, .25, .125])
    assert [e.rule for e in p.events] == ["uniform", "uniform", "attention"]
    assert p.visual_counts(1000)[::8] == (1000, 500, 250, 125)
    assert build_plan("uniform", 28, **vcf_params({"llm_compress_layer_list": [8], "llm_image_token_ratio_list": [1, .3]})).is_static
    assert build_plan("uniform", 4, layers=[8, 16], ratios=[1, .5, .25]).events == ()  # never fires
    for bad in (dict(layers=[4], ratios=[1.0]), dict(layers=[4], ratios=[0.9, 0.5]), dict(layers=[0], ratios=[1, .5]),
                dict(layers=[8, 4], ratios=[1, .5, .25])):
        with pytest.raises(ValueError):
            build_plan("uniform", 28, **bad)


def test_torch_linspace_long():
    # torch.linspace(0, n-1, m, dtype=torch.long): double, symmetric halves, truncation
    assert list(torch_linspace_long(0, 255, 4)) == [0, 85, 170, 255]
    assert list(torch_linspace_long(0, 9, 1)) == [0] and len(torch_linspace_long(0, 9, 0)) == 0
    assert list(torch_linspace_long(0, 9, 4)) == [0, 3, 6, 9]
    for n, m in [(43, 39), (46, 34), (1000, 750), (256, 128)]:
        step = (n - 1) / (m - 1)
        want = [int(step * i) if i < m // 2 else int((n - 1) - step * (m - 1 - i)) for i in range(m)]
        assert list(torch_linspace_long(0, n - 1, m)) == want
        exact = [i * (n - 1) // (m - 1) for i in range(m)]
        assert max(abs(a - b) for a, b in zip(want, exact)) <= 1


def test_hashable_and_errors():
    a, b = build_plan("xcomp_cosine", 28), build_plan("xcomp_cosine", 28)
    assert a == b and hash(a) == hash(b) and len({a, b, build_plan("none", 28)}) == 2
    assert hash(build_plan("uniform0_attention", 28)) is not None
    with pytest.raises(AttributeError):
        a.num_layers = 3  # frozen
    with pytest.raises(ValueError):
        a.visual_tokens_at(3, 250)  # not whole groups
    with pytest.raises(ValueError):
        build_plan("bogus", 28)
    with pytest.raises(ValueError):
        DropEvent(3, "suffix", 16, (0, 1))
    with pytest.raises(ValueError):
        CompressionPlan("x", 4, 16, 4, (DropEvent(2, "suffix", 8, (7,)),))
    none = build_plan("none", 28)
    assert none.visual_counts(250) == (250,) * 28 and none.is_static and none.group_tokens == (16,) * 28
