"""Semantic dedup (tasks/samplers/semantic_dedup.py): planted near-duplicates, quality, seeded ties, row order, the drop list."""

import numpy as np
import pytest

from selectflow.tasks.errors import ConfigError, InputError
from selectflow.tasks.samplers.semantic_dedup import semantic_dedup

D = 48


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _at_similarity(v: np.ndarray, cos: float, rng) -> np.ndarray:
    """A unit vector at exactly cosine `cos` to unit vector v."""
    u = rng.normal(size=v.shape)
    u = _unit(u - u.dot(v) * v)
    return cos * v + np.sqrt(1 - cos * cos) * u


def _corpus(n_base=120, seed=0):
    """n_base random unit rows (pairwise cosine well below 0.7 in 48 dims), then planted rows:
    near-duplicates of rows 0..9 at 0.97, look-alikes of rows 10..19 at 0.85 (not duplicates at 0.9)."""
    rng = np.random.default_rng(seed)
    base = _unit(rng.normal(size=(n_base, D)))
    dups = np.array([_at_similarity(base[i], 0.97, rng) for i in range(10)])
    near = np.array([_at_similarity(base[10 + i], 0.85, rng) for i in range(10)])
    x = np.vstack([base, dups, near]).astype(np.float32)
    ids = np.array([f"b{i:03d}" for i in range(n_base)] + [f"dup{i}" for i in range(10)] + [f"near{i}" for i in range(10)], dtype=object)
    return x, ids


def _pairs(result, ids):
    return {(ids[d], ids[k], round(float(s), 5)) for d, k, s in zip(result.dropped, result.kept_for, result.similarity)}


def test_planted_near_duplicates_are_dropped_and_non_duplicates_kept():
    x, ids = _corpus()
    assert np.max(np.triu(x[:120] @ x[:120].T, 1)) < 0.7  # the base rows are no duplicates of each other
    r = semantic_dedup(x, 0.9, ids=ids, seed=0, n_clusters=4)
    assert len(r.dropped) == 10
    for i in range(10):  # exactly one of each planted pair is dropped, for the other, at the planted similarity
        pair = {f"b{i:03d}", f"dup{i}"}
        lost = [ids[d] for d in r.dropped if ids[d] in pair]
        assert len(lost) == 1
        j = list(r.dropped).index([d for d in r.dropped if ids[d] in pair][0])
        assert {ids[r.dropped[j]], ids[r.kept_for[j]]} == pair
        assert r.similarity[j] == pytest.approx(0.97, abs=1e-5)
    kept = set(ids[r.kept])
    assert {f"near{i}" for i in range(10)} <= kept and {f"b{10 + i:03d}" for i in range(10)} <= kept
    # At 0.8 the look-alikes at 0.85 are duplicates too.
    assert len(semantic_dedup(x, 0.8, ids=ids, seed=0, n_clusters=4).dropped) == 20


def test_every_row_is_kept_or_listed_with_a_kept_row():
    x, ids = _corpus()
    # A chain: rows far enough apart that some are near-duplicates of a dropped row only.
    rng = np.random.default_rng(5)
    chain = [_unit(rng.normal(size=D))]
    for _ in range(6):
        chain.append(_at_similarity(chain[-1], 0.93, rng))
    x = np.vstack([x, np.array(chain, dtype=np.float32)]).astype(np.float32)
    ids = np.concatenate([ids, np.array([f"chain{i}" for i in range(7)], dtype=object)])
    r = semantic_dedup(x, 0.9, ids=ids, seed=3, n_clusters=5, probes=5)
    n = len(x)
    assert len(r.kept) + len(r.dropped) == n
    assert not set(r.kept) & set(r.dropped)
    assert set(r.kept_for) <= set(r.kept)  # each dropped row is listed beside a row that stays
    sims = np.einsum("ij,ij->i", x[r.dropped], x[r.kept_for])
    np.testing.assert_allclose(r.similarity, sims, atol=1e-5)
    assert np.all(r.similarity >= 0.9 - 1e-6)
    k = x[r.kept]
    g = k @ k.T
    np.fill_diagonal(g, 0)
    assert g.max() < 0.9  # with every cluster probed, no near-duplicate pair is left among the kept rows


def test_highest_quality_row_of_a_group_is_kept():
    rng = np.random.default_rng(1)
    x, ids = _corpus()
    centre = _unit(rng.normal(size=D))
    group = np.array([_at_similarity(centre, c, rng) for c in (0.99, 0.985, 0.98)] + [centre], dtype=np.float32)
    x = np.vstack([x, group]).astype(np.float32)
    ids = np.concatenate([ids, np.array(["g0", "g1", "g2", "g3"], dtype=object)])
    quality = np.ones(len(x))
    quality[-4:] = [0.2, 3.0, 0.5, 1.0]
    for seed in range(4):
        r = semantic_dedup(x, 0.95, quality=quality, ids=ids, seed=seed, n_clusters=3)
        kept = set(ids[r.kept])
        assert "g1" in kept and not {"g0", "g2", "g3"} & kept
        assert {ids[k] for d, k in zip(r.dropped, r.kept_for) if ids[d] in {"g0", "g2", "g3"}} == {"g1"}
    # For each planted pair, the higher-quality row stays.
    quality[120:130] = 5.0
    r = semantic_dedup(x, 0.9, quality=quality, ids=ids, seed=0, n_clusters=3)
    assert {f"dup{i}" for i in range(10)} <= set(ids[r.kept])


def test_ties_are_seeded_and_deterministic():
    x, ids = _corpus()
    results = [semantic_dedup(x, 0.9, ids=ids, seed=s, n_clusters=4) for s in range(6)]
    again = semantic_dedup(x, 0.9, ids=ids, seed=2, n_clusters=4)
    assert _pairs(again, ids) == _pairs(results[2], ids)
    np.testing.assert_array_equal(again.kept, results[2].kept)
    winners = {frozenset(ids[r.kept]) for r in results}
    assert len(winners) > 1  # equal quality: which copy of a pair stays depends on the seed


def test_permuting_rows_keeps_the_same_rows_by_id():
    x, ids = _corpus()
    quality = np.round(np.random.default_rng(2).uniform(0, 2, size=len(x)), 1)  # many equal scores: ties matter
    ref = semantic_dedup(x, 0.9, quality=quality, ids=ids, seed=4)
    for p_seed in range(3):
        p = np.random.default_rng(100 + p_seed).permutation(len(x))
        r = semantic_dedup(x[p], 0.9, quality=quality[p], ids=ids[p], seed=4)
        assert set(ids[p][r.kept]) == set(ids[ref.kept])
        assert _pairs(r, ids[p]) == _pairs(ref, ids)


def test_exact_duplicates_at_threshold_one_and_rule_semdedup():
    rng = np.random.default_rng(3)
    base = _unit(rng.normal(size=(50, D)))
    x = np.vstack([base, base[:5], [_at_similarity(base[5], 0.99, rng)]]).astype(np.float32)
    r = semantic_dedup(x, 1.0, seed=0, n_clusters=2)
    assert len(r.dropped) == 5 and r.diagnostics["tie_break"].startswith("seeded permutation")
    # A chain a ~ b ~ c with a !~ c: greedy keeps a and c; SemDeDup's rule drops c too, listed with a.
    q, _ = np.linalg.qr(rng.normal(size=(D, 2)))  # two orthonormal directions e1, e2
    e1, e2 = q[:, 0], q[:, 1]
    sn = np.sqrt(1 - 0.95**2)
    a = e1
    b = 0.95 * e1 + sn * e2
    c = 0.95 * b + sn * (-sn * e1 + 0.95 * e2)  # 0.95 to b, 0.805 to a
    chain = np.vstack([base, [a, b, c]]).astype(np.float32)
    quality = np.r_[np.ones(50), [3.0, 2.0, 1.0]]
    g = semantic_dedup(chain, 0.92, quality=quality, n_clusters=1)
    s = semantic_dedup(chain, 0.92, quality=quality, n_clusters=1, rule="semdedup")
    assert list(g.dropped) == [51] and list(g.kept_for) == [50]
    assert list(s.dropped) == [51, 52] and list(s.kept_for) == [50, 50] and s.similarity[1] < 0.92


@pytest.mark.parametrize("threshold", [0, -0.5, 1.5, float("nan"), "abc"])
def test_threshold_outside_zero_one_is_refused(threshold):
    x, ids = _corpus()
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        semantic_dedup(x, threshold, ids=ids)


def test_bad_embeddings_and_quality_name_the_row():
    x, ids = _corpus()
    y = x.copy()
    y[7] *= 2
    with pytest.raises(InputError, match="b007"):
        semantic_dedup(y, 0.9, ids=ids)
    q = np.ones(len(x))
    q[3] = np.nan
    with pytest.raises(InputError, match="b003"):
        semantic_dedup(x, 0.9, quality=q, ids=ids)
