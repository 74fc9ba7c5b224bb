"""Statistics match scipy (and the published tables) on known inputs."""
import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from peft3d.analysis import stats

A = [88.1, 87.4, 88.9, 87.9, 88.4]
B = [87.0, 87.5, 87.6, 86.8, 87.9]


def test_mean_std():
    m, s = stats.mean_std(A)
    assert m == pytest.approx(np.mean(A)) and s == pytest.approx(np.std(A, ddof=1))
    assert math.isnan(stats.mean_std([0.9])[1]) and math.isnan(stats.mean_std([])[0])


def test_bootstrap_ci_is_scipys_percentile_bootstrap():
    lo, hi = stats.bootstrap_ci(A, n_resamples=2000, seed=3)
    ref = sps.bootstrap((np.array(A),), np.mean, confidence_level=0.95, n_resamples=2000, method="percentile",
                        rng=np.random.default_rng(3)).confidence_interval
    assert (lo, hi) == pytest.approx((ref.low, ref.high))
    assert lo < np.mean(A) < hi and min(A) <= lo and hi <= max(A)


def test_bootstrap_ci_edge_cases():
    assert all(math.isnan(x) for x in stats.bootstrap_ci([0.5]))  # one seed: no interval, not a made-up one
    assert stats.bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)
    assert stats.bootstrap_ci([0.8, float("nan"), 0.9])[0] >= 0.8  # NaNs are dropped


@pytest.mark.parametrize("p,n,expected", [(0.88, 2882, 0.006053), (0.9, 581, 0.012446), (0.93, 2468, 0.005136)])
def test_binomial_se(p, n, expected):
    assert stats.binomial_se(p, n) == pytest.approx(math.sqrt(p * (1 - p) / n)) == pytest.approx(expected, abs=1e-6)
    assert math.isnan(stats.binomial_se(0.5, 0))


def test_paired_permutation_is_exact_for_few_seeds():
    # 5 pairs: 2**5 sign patterns; all differences positive -> only the observed and its mirror are as extreme.
    a, b = [1.0, 2, 3, 4, 5], [0.0, 1, 1, 2, 3]
    assert stats.paired_permutation_p(a, b) == pytest.approx(2 / 32)
    d = np.subtract(a, b)
    flips = [np.mean(d * s) for s in itertools.product([1, -1], repeat=5)]
    brute = np.mean(np.abs(flips) >= abs(d.mean()) - 1e-12)
    assert stats.paired_permutation_p(a, b) == pytest.approx(brute)
    ref = sps.permutation_test((np.array(A), np.array(B)), lambda x, y, axis: np.mean(x - y, axis=axis),
                               vectorized=True, permutation_type="samples", n_resamples=9999).pvalue
    assert stats.paired_permutation_p(A, B) == pytest.approx(ref)
    assert stats.paired_permutation_p([1, 2, 3], [1, 2, 3]) == 1.0
    assert math.isnan(stats.paired_permutation_p([1.0], [2.0]))


def test_three_seeds_cannot_reach_p_005():
    assert stats.paired_permutation_p([90, 91, 92], [80, 81, 82]) == pytest.approx(0.25)


def test_wilcoxon_matches_scipy():
    assert stats.wilcoxon_p(A, B) == pytest.approx(sps.wilcoxon(A, B).pvalue)
    assert math.isnan(stats.wilcoxon_p([1, 2], [1, 2]))


def test_probability_of_improvement():
    a, b = [3.0, 5.0, 7.0], [4.0, 5.0, 1.0]
    brute = np.mean([(x > y) + 0.5 * (x == y) for x in a for y in b])
    assert stats.prob_improvement(a, b) == pytest.approx(brute) == pytest.approx(6.5 / 9)
    assert stats.prob_improvement(A, B) + stats.prob_improvement(B, A) == pytest.approx(1.0)


def test_paired_compare():
    r = stats.paired_compare(A, B)
    assert r.n == 5 and r.mean_diff == pytest.approx(np.mean(np.subtract(A, B)))
    assert r.p_wilcoxon == pytest.approx(sps.wilcoxon(A, B).pvalue)
    r2 = stats.paired_compare([1.0, float("nan"), 3.0], [0.5, 2.0, 2.0])
    assert r2.n == 2  # a pair with a missing run is dropped, not imputed


def test_friedman_matches_scipy_and_ranks():
    rng = np.random.default_rng(0)
    m = pd.DataFrame(rng.random((6, 4)) + np.array([0.3, 0.2, 0.1, 0.0]), columns=["a", "b", "c", "d"])
    f = stats.friedman(m)
    ref = sps.friedmanchisquare(*[m[c] for c in m.columns])
    assert f.statistic == pytest.approx(ref.statistic) and f.pvalue == pytest.approx(ref.pvalue)
    manual = np.mean([sps.rankdata(-row) for row in m.to_numpy()], axis=0)
    assert f.avg_ranks.reindex(m.columns).to_numpy() == pytest.approx(manual)
    assert f.avg_ranks.is_monotonic_increasing and f.avg_ranks.sum() == pytest.approx(4 * 5 / 2)
    assert f.cd == pytest.approx(stats.nemenyi_cd(4, 6))


def test_friedman_ties_and_incomplete_cells():
    m = pd.DataFrame({"a": [1.0, 2.0, 3.0, np.nan], "b": [1.0, 1.0, 1.0, 1.0], "c": [0.0, 0.0, 0.0, 0.0]})
    f = stats.friedman(m)
    assert f.n_cells == 3  # the row with a missing method is dropped (complete blocks only)
    assert stats.average_ranks(pd.DataFrame({"x": [1.0], "y": [1.0]})).tolist() == [1.5, 1.5]
    g = stats.friedman(m[["a", "b"]])
    assert g.note and "≥ 3 methods" in g.note and math.isnan(g.pvalue)


# Demšar (JMLR 2006), Table 5(a): q_0.05 for the Nemenyi test, k = 2..10.
DEMSAR_Q05 = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]


@pytest.mark.parametrize("k,q", list(zip(range(2, 11), DEMSAR_Q05, strict=True)))
def test_nemenyi_cd_reproduces_demsar_table(k, q):
    n = 14
    assert stats.nemenyi_cd(k, n) == pytest.approx(q * math.sqrt(k * (k + 1) / (6 * n)), abs=2e-3)


def test_nemenyi_cd_undefined():
    assert math.isnan(stats.nemenyi_cd(1, 5)) and math.isnan(stats.nemenyi_cd(3, 0))


def test_corrected_fold_t_test_reduces_to_scipys_t_test_and_widens_with_shared_training_data():
    d = [6.2, -0.4, 5.9, 3.3, 6.7]  # one paired difference per fold (points)
    assert stats.corrected_fold_p(d, 0.0) == pytest.approx(sps.ttest_1samp(d, 0.0).pvalue)  # no overlap: plain t
    # five folds of a 5-fold partition: variance x (1/5 + 1/4) instead of 1/5, t with 4 degrees of freedom
    t = np.mean(d) / math.sqrt((1 / 5 + 1 / 4) * np.var(d, ddof=1))
    assert stats.corrected_fold_p(d, 0.25) == pytest.approx(2 * sps.t.sf(t, 4))
    assert stats.corrected_fold_p(d, 0.25) > stats.corrected_fold_p(d, 0.0)
    assert stats.corrected_fold_p([-x for x in d], 0.25) == pytest.approx(stats.corrected_fold_p(d, 0.25))


def test_corrected_fold_t_test_edge_cases():
    assert math.isnan(stats.corrected_fold_p([3.0], 0.25))  # one fold: no spread to test against
    assert math.isnan(stats.corrected_fold_p([1.0, 2.0], None)) and math.isnan(stats.corrected_fold_p([1.0, 2.0], -1))
    assert math.isnan(stats.corrected_fold_p([1.0, 2.0], float("nan")))
    assert stats.corrected_fold_p([0.0, 0.0, 0.0], 0.25) == 1.0
    assert stats.corrected_fold_p([2.0, 2.0, 2.0], 0.25) == 0.0
    assert stats.corrected_fold_p([1.0, float("nan"), 3.0], 0.25) == pytest.approx(stats.corrected_fold_p([1, 3], 0.25))


def test_the_fold_tests_least_significant_difference_is_where_its_p_crosses_alpha():
    d = np.random.default_rng(5).normal(2.0, 3.0, 5)
    lsd = stats.corrected_fold_lsd(d, 0.25)
    centred = d - d.mean()  # the same spread, any mean
    assert stats.corrected_fold_p(centred + lsd, 0.25) == pytest.approx(0.05)
    assert stats.corrected_fold_p(centred + 0.99 * lsd, 0.25) > 0.05 > stats.corrected_fold_p(centred + 1.01 * lsd,
                                                                                              0.25)
    assert lsd == pytest.approx(sps.t.ppf(0.975, 4) * math.sqrt((1 / 5 + 0.25) * d.var(ddof=1)))
    assert stats.corrected_fold_lsd(d, 0.25, alpha=0.01) > lsd > stats.corrected_fold_lsd(d, 0.0)
    assert math.isnan(stats.corrected_fold_lsd([3.0], 0.25)) and math.isnan(stats.corrected_fold_lsd(d, math.nan))
