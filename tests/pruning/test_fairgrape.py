"""FairGRAPE: group importance from each group's own gradients; a greedy keep that holds
every group's share of its importance level."""

import numpy as np
import pytest

from sparsebias.core import SparsebiasError
from sparsebias.pruning import FairGRAPEPruningModifier, ScoreData, fair_keep
from sparsebias.pruning.fairgrape import TURNS_PER_GROUP

from .conftest import apply_once

PARAMS = ["conv.weight", "fc.weight"]


def shares(importance, kept):
    return importance[:, kept].sum(axis=1) / importance.sum(axis=1)


def test_hand_worked_greedy():
    # group 0 values weights 0 and 1; group 1 values weights 2 and 3. Keeping two weights, a
    # group-blind ranking by total importance keeps 0 and 1 and leaves group 1 nothing.
    importance = np.array([[4.0, 3.0, 0.0, 0.0], [0.0, 0.0, 2.0, 1.0]])
    kept = fair_keep(importance, np.ones(4, bool), 2)
    assert kept.tolist() == [True, False, True, False]
    assert shares(importance, kept).tolist() == pytest.approx([4 / 7, 2 / 3])


def test_exact_greedy_serves_the_group_furthest_behind():
    rng = np.random.default_rng(0)
    importance = rng.random((3, 40)) ** 3 * np.array([[1.0], [0.2], [5.0]])
    kept = fair_keep(importance, np.ones(40, bool), 10)
    assert kept.sum() == 10
    # replay: every pick is the best remaining weight of the group with the smallest share
    chosen, have = [], np.zeros(3)
    for _ in range(10):
        g = int(np.argmin(have / importance.sum(axis=1)))
        order = [i for i in np.argsort(-importance[g], kind="stable") if i not in chosen]
        chosen.append(order[0])
        have += importance[:, order[0]]
    assert sorted(chosen) == np.flatnonzero(kept).tolist()


def test_ties_go_to_the_earlier_weight_on_every_machine():
    importance = np.array([[1.0, 2.0, 1.0, 2.0, 1.0, 0.0, 0.0, 1e-40]])   # 1e-40: a float32 subnormal
    assert fair_keep(importance, np.ones(8, bool), 4).tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert fair_keep(importance, np.ones(8, bool), 7).tolist() == [1, 1, 1, 1, 1, 1, 0, 1]
    wide = np.zeros((2, 300_000))   # all tied: a sort that settles ties arbitrarily fails this
    wide[:, ::7] = 3.0
    kept = fair_keep(wide, np.ones(300_000, bool), 50_000)
    expected = np.zeros(300_000, bool)
    expected[::7] = True
    expected[np.flatnonzero(~expected)[:50_000 - expected.sum()]] = True
    assert np.array_equal(kept, expected)


@pytest.mark.parametrize("seed", range(5))
def test_every_group_keeps_the_same_share_up_to_one_greedy_turn(seed):
    rng = np.random.default_rng(seed)
    n = 5000
    importance = rng.random((4, n)) ** 4 * rng.uniform(0.1, 10, (4, 1))
    k = 500
    fair = fair_keep(importance, np.ones(n, bool), k)
    blind = np.zeros(n, bool)
    blind[np.argsort(-importance.sum(axis=0))[:k]] = True
    assert fair.sum() == k
    # the largest share one turn can add: a group's best `turn` weights
    turn = int(np.ceil(k / (TURNS_PER_GROUP * len(importance))))
    one_turn = max(np.sort(row)[-turn:].sum() / row.sum() for row in importance)
    assert np.ptp(shares(importance, fair)) <= one_turn
    assert np.ptp(shares(importance, fair)) < np.ptp(shares(importance, blind)) / 10


@pytest.mark.parametrize("seed", range(6))
def test_ordering_only_the_first_k_weights_keeps_the_same_choice(seed, monkeypatch):
    """The greedy reads each group's order no further than k: sorting it all changes nothing."""
    from sparsebias.pruning import fairgrape

    rng = np.random.default_rng(seed)
    groups, n = rng.integers(1, 6), int(rng.integers(20, 3000))
    importance = rng.random((groups, n)) ** 3 * rng.uniform(0.1, 10, (groups, 1))
    importance[:, rng.random(n) < 0.3] = rng.integers(0, 3)          # ties, zeros
    importance[rng.integers(groups)] *= rng.integers(0, 2)            # sometimes a group with nothing
    eligible = rng.random(n) < rng.uniform(0.3, 1.0)
    k = int(rng.integers(1, eligible.sum() + 2))
    truncated = fair_keep(importance, eligible, k)
    full_orders = fairgrape._orders
    monkeypatch.setattr(fairgrape, "_orders", lambda imp, elig, limit: full_orders(imp, elig, len(elig)))
    assert np.array_equal(truncated, fair_keep(importance, eligible, k))
    assert truncated.sum() == min(k, eligible.sum()) and not truncated[~eligible].any()


def test_pruned_weights_stay_pruned():
    importance = np.array([[5.0, 1.0, 1.0, 1.0]])
    kept = fair_keep(importance, np.array([False, True, True, True]), 2)
    assert not kept[0] and kept.sum() == 2


def test_modifier_importance_is_each_groups_own_squared_gradient_times_weight(net, data):
    w0 = {p: w.detach().clone() for p, w in net.named_parameters()}
    # independent importances: the first draw of each group's batches, as the modifier makes them
    fresh = ScoreData(data.dataset, data.loss, data.batch_size, data.seed)
    importance = []
    for rows in fresh.group_rows(["group"]).values():
        x, y = next(fresh.batches(1, rows))
        net.zero_grad()
        data.loss(net(x), y).backward()
        importance.append({p: ((dict(net.named_parameters())[p].grad * w0[p]) ** 2).flatten().numpy() for p in PARAMS})
    net.zero_grad()
    mod = FairGRAPEPruningModifier(PARAMS, 0.75, 0.75, start_epoch=0.0, end_epoch=0.0, sensitive=["group"])
    apply_once(mod, net, data)
    for p in PARAMS:
        w = dict(net.named_parameters())[p]
        per_group = np.stack([imp[p] for imp in importance])
        expected = fair_keep(per_group, np.ones(w.numel(), bool), w.numel() - round(0.75 * w.numel()))
        assert np.array_equal((w != 0).flatten().numpy(), expected), p


def test_sensitive_column_problems_are_clear(data):
    with pytest.raises(SparsebiasError, match="'race' is not a label"):
        data.group_rows(["race"])
    data.dataset.columns[:, 1] = 0
    with pytest.raises(SparsebiasError, match="single value"):
        data.group_rows(["group"])


def test_sensitive_must_name_columns():
    with pytest.raises(ValueError, match="sensitive"):
        FairGRAPEPruningModifier(PARAMS, 0.5, 0.5, start_epoch=0.0, end_epoch=0.0, sensitive=[])
