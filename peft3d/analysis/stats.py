"""Statistics for honest tables (protocol.md "Seeds and statistics"). Thin wrappers around scipy.

Everything scipy has is taken from scipy: bootstrap CIs (``scipy.stats.bootstrap``), the binomial standard
error (``scipy.stats.binom``), the paired permutation test (``scipy.stats.permutation_test``), the Wilcoxon
signed-rank test (``scipy.stats.wilcoxon``), the probability of improvement (the Mann-Whitney U statistic,
``scipy.stats.mannwhitneyu``), the Friedman test (``scipy.stats.friedmanchisquare``) and ranks
(``scipy.stats.rankdata``). scipy has no Nemenyi post-hoc test, so the critical difference is computed here
from the studentized range distribution (``scipy.stats.studentized_range``) as in Demšar (JMLR 2006).

Inputs are accuracies in any unit (fractions or points); outputs keep the unit. Functions return ``nan``
(never a made-up number) when a statistic is undefined for the given input, e.g. a CI from one seed.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

NAN = float("nan")


def _arr(x: Sequence[float]) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    return a[~np.isnan(a)]


def mean_std(x: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); std is nan for fewer than 2 values."""
    a = _arr(x)
    if not len(a):
        return NAN, NAN
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else NAN


def bootstrap_ci(x: Sequence[float], confidence: float = 0.95, n_resamples: int = 9999,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (``scipy.stats.bootstrap``); (nan, nan) for fewer than 2 values.

    Percentile, not BCa: with the 3-5 seeds of a grid cell BCa's acceleration estimate is unstable and
    undefined when all values tie. With so few values every bootstrap CI is too narrow; read it together with
    the test set's binomial standard error."""
    a = _arr(x)
    if len(a) < 2:
        return NAN, NAN
    if np.all(a == a[0]):
        return float(a[0]), float(a[0])
    res = stats.bootstrap((a,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                          method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` (fraction) measured on ``n`` test samples: sqrt(p(1-p)/n)."""
    if n is None or not n or p is None or math.isnan(p) or math.isnan(n):
        return NAN
    return float(stats.binom.std(int(n), p) / int(n))


def paired_permutation_p(a: Sequence[float], b: Sequence[float], n_resamples: int = 9999, seed: int = 0) -> float:
    """Two-sided paired permutation test of mean(a - b) = 0 (``scipy.stats.permutation_test``, sign flips of
    the paired differences; exact when 2**n <= n_resamples). With 3 seeds the smallest possible p is 0.25."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if len(x) != len(y) or len(x) < 2:
        return NAN
    if np.all(x == y):
        return 1.0
    res = stats.permutation_test((x, y), lambda u, v, axis: np.mean(u - v, axis=axis), vectorized=True,
                                 permutation_type="samples", alternative="two-sided", n_resamples=n_resamples,
                                 rng=np.random.default_rng(seed))
    return float(res.pvalue)


def corrected_fold_p(fold_diffs: Sequence[float], test_train_ratio: float) -> float:
    """Two-sided p of the corrected resampled t-test (Nadeau & Bengio, Machine Learning 2003) over the k folds of
    one cross-validation: ``fold_diffs`` holds one paired difference per fold (the seeds of a fold averaged
    first: they share the fold's test models), ``test_train_ratio`` = n_test / n_train of a fold.

    The k differences are not independent: any two folds train on overlapping data. The test inflates their
    variance by (1/k + n_test/n_train) instead of the naive 1/k and reads t with k - 1 degrees of freedom: the
    conservative counterpart of :func:`paired_permutation_p` over (fold, seed) pairs, which treats every pair
    as independent. scipy has no such test (it is a variance correction around ``scipy.stats.t``), so the
    correction is written here; the t distribution is scipy's."""
    d = _arr(fold_diffs)
    k = len(d)
    if k < 2 or test_train_ratio is None or not test_train_ratio >= 0:  # ratio 0: the plain paired t-test
        return NAN
    if np.all(d == 0):
        return 1.0
    var = float(d.var(ddof=1))
    if var == 0:
        return 0.0  # every fold moved by the same nonzero amount: no spread left to explain it
    t = float(d.mean()) / math.sqrt((1 / k + test_train_ratio) * var)
    return float(2 * stats.t.sf(abs(t), k - 1))


def corrected_fold_lsd(fold_diffs: Sequence[float], test_train_ratio: float, alpha: float = 0.05) -> float:
    """The least significant difference of :func:`corrected_fold_p`: the smallest |mean fold difference| that
    test puts below ``alpha`` at the spread ``fold_diffs`` show, t(1 − alpha/2, k − 1) · sqrt((1/k + ratio) ·
    var). A gap smaller than it is unresolved by this test — neither shown nor ruled out —, so it says how large
    an effect the study could have established, in the comparison's own units (points)."""
    d = _arr(fold_diffs)
    k = len(d)
    if k < 2 or test_train_ratio is None or not test_train_ratio >= 0:
        return NAN
    return float(stats.t.ppf(1 - alpha / 2, k - 1) * math.sqrt((1 / k + test_train_ratio) * float(d.var(ddof=1))))


def wilcoxon_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``); nan when all differences are 0."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if len(x) != len(y) or len(x) < 2 or np.all(x == y):
        return NAN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample warnings: the exact distribution is used anyway
        return float(stats.wilcoxon(x, y, alternative="two-sided").pvalue)


def prob_improvement(a: Sequence[float], b: Sequence[float]) -> float:
    """P(X > Y) + ½·P(X = Y) for X ~ runs of ``a``, Y ~ runs of ``b`` (Agarwal et al., NeurIPS 2021, "Deep RL at
    the edge of the statistical precipice"): the Mann-Whitney U statistic divided by len(a)·len(b)."""
    x, y = _arr(a), _arr(b)
    if not len(x) or not len(y):
        return NAN
    return float(stats.mannwhitneyu(x, y, alternative="two-sided").statistic / (len(x) * len(y)))


@dataclass(frozen=True)
class Paired:
    n: int
    mean_diff: float  # mean over seeds of a - b
    p_permutation: float
    p_wilcoxon: float
    prob_improvement: float  # P(a > b)


def paired_compare(a: Sequence[float], b: Sequence[float]) -> Paired:
    """Compare two methods over the same seeds (``a[i]`` and ``b[i]`` share seed i)."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    return Paired(n=len(x), mean_diff=float(np.mean(x - y)) if len(x) else NAN,
                  p_permutation=paired_permutation_p(x, y), p_wilcoxon=wilcoxon_p(x, y),
                  prob_improvement=prob_improvement(x, y))


def average_ranks(matrix: pd.DataFrame) -> pd.Series:
    """Rows = cells (blocks), columns = methods, higher is better. Rank 1 = best; ties get the average rank
    (``scipy.stats.rankdata``). Returns the mean rank of each method over the rows."""
    ranks = np.vstack([stats.rankdata(-row) for row in matrix.to_numpy(float)])
    return pd.Series(ranks.mean(axis=0), index=matrix.columns, name="avg_rank")


def nemenyi_cd(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of average ranks for ``k`` methods over ``n`` cells (Demšar 2006, eq. 7):
    CD = q_alpha · sqrt(k(k+1) / (6n)), q_alpha = studentized range quantile(1 - alpha, k, df=inf) / sqrt(2).
    scipy has no Nemenyi test; q_alpha reproduces Demšar's table (1.960 for k=2, 3.164 for k=10)."""
    if k < 2 or n < 1:
        return NAN
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6 * n)))


@dataclass(frozen=True)
class Friedman:
    n_cells: int
    k: int
    statistic: float
    pvalue: float
    avg_ranks: pd.Series  # method -> average rank (1 = best), sorted best first
    cd: float  # Nemenyi critical difference at alpha
    alpha: float
    note: str | None = None  # why the test could not run, when it could not


def friedman(matrix: pd.DataFrame, alpha: float = 0.05) -> Friedman:
    """Friedman test across cells (rows) for methods (columns), higher is better. Rows with a missing value
    are dropped (the test needs complete blocks). Needs >= 3 methods and >= 2 complete cells."""
    m = matrix.dropna(axis=0, how="any")
    k, n = m.shape[1], m.shape[0]
    ranks = average_ranks(m).sort_values() if n else pd.Series(dtype=float)
    if k < 3 or n < 2:
        note = f"Friedman needs ≥ 3 methods and ≥ 2 complete cells (have {k} method(s), {n} complete cell(s))"
        return Friedman(n, k, NAN, NAN, ranks, nemenyi_cd(k, n, alpha), alpha, note)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # all-tied blocks make the statistic nan: reported as such
        res = stats.friedmanchisquare(*[m[c].to_numpy(float) for c in m.columns])
    return Friedman(n, k, float(res.statistic), float(res.pvalue), ranks, nemenyi_cd(k, n, alpha), alpha)
