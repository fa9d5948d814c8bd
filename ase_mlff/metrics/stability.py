"""Stability statistics of MD runs: survival analysis of t_inst (paper 003 §3) and the
force-metrics-vs-stability comparison.

Survival statistics. Every replica of a study runs the same length ``total_fs`` (τ). A
replica that became unstable contributes an *event* at its t_inst; a replica still stable
at the end is *right-censored* at τ: all we know is t_inst > τ. Counting it as t_inst = τ
(what this module did before) biases means and medians low and hides how uncertain they
are. With ``n_i`` replicas at risk (not yet unstable nor censored) just before the distinct
time ``t_i`` and ``d_i`` instabilities at ``t_i``:

* Kaplan–Meier product-limit estimator: ``S(t) = ∏_{t_i ≤ t} (1 − d_i / n_i)``, a
  right-continuous step function (:func:`kaplan_meier`, computed by
  :func:`scipy.stats.ecdf` on :class:`scipy.stats.CensoredData`).
* Greenwood variance: ``Var S(t) = S(t)² Σ_{t_i ≤ t} d_i / (n_i (n_i − d_i))``; the
  pointwise band is the log-log ("exponential Greenwood") one, which stays in [0, 1]:
  ``S(t)^{exp(± z σ(t))}`` with ``σ² = Σ d_i/(n_i(n_i − d_i)) / (log S)²``.
* Median t_inst: the first time with ``S(t) ≤ 0.5``; its confidence interval is read off
  the band (Brookmeyer–Crowley style): from the first time the lower curve reaches 0.5 to
  the first time the upper curve does.
* Restricted mean survival time ``RMST(τ) = ∫_0^τ S(t) dt`` with variance
  ``Σ_{t_i ≤ τ} A_i² d_i / (n_i (n_i − d_i))``, ``A_i = ∫_{t_i}^τ S(t) dt``
  (Klein & Moeschberger §4.5) and a normal interval.
* Fraction stable at τ with the Wilson score interval
  ``(p̂ + z²/2n ± z √(p̂(1 − p̂)/n + z²/4n²)) / (1 + z²/n)``.
* Log-rank test between two models (:func:`scipy.stats.logrank`), several pairs with the
  Holm step-down correction (:func:`pairwise_logrank`).
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from ase_mlff.metrics.distance_distribution import H_R_MAE_LABEL

#: relative tolerance for a t_inst a rounding error past the run length
_T_TOL = 1e-9


def _censored_times(
    t_inst_fs: Sequence[float] | np.ndarray,
    stable: Sequence[bool] | np.ndarray,
    total_fs: float,
    censor_fs: Sequence[float] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(event times (k,), censoring times (R − k,))``: a stable replica is
    censored at ``total_fs`` (or at its ``censor_fs`` entry when given) and its t_inst
    entry (NaN, None or the run length) is ignored."""
    t = np.asarray(t_inst_fs, dtype=float).reshape(-1)
    s = np.asarray(stable).reshape(-1)
    if len(t) != len(s):
        raise ValueError(f"t_inst_fs has {len(t)} entries but stable has {len(s)}")
    if len(t) == 0:
        raise ValueError("no replicas: survival statistics need at least one")
    if s.dtype.kind not in "biu":
        raise ValueError(f"stable must be booleans, got dtype {s.dtype}")
    s = s.astype(bool)
    total_fs = float(total_fs)
    if not math.isfinite(total_fs) or total_fs <= 0:
        raise ValueError(f"total_fs must be a positive run length, got {total_fs}")
    ev = t[~s]
    if np.any(~np.isfinite(ev)):
        raise ValueError("an unstable replica has a NaN or infinite t_inst")
    if np.any(ev < 0):
        raise ValueError(f"negative t_inst of an unstable replica: {ev[ev < 0].min()}")
    if np.any(ev > total_fs * (1 + _T_TOL)):
        raise ValueError(f"t_inst {ev.max()} fs is past the run length total_fs={total_fs}")
    if censor_fs is None:
        cens = np.full(int(s.sum()), total_fs)
    else:
        c = np.asarray(censor_fs, dtype=float).reshape(-1)
        if len(c) != len(s):
            raise ValueError(f"censor_fs has {len(c)} entries but stable has {len(s)}")
        cens = c[s]
        if np.any(~np.isfinite(cens)) or np.any(cens < 0):
            raise ValueError("censor_fs of a stable replica must be finite and >= 0")
        if np.any(cens > total_fs * (1 + _T_TOL)):
            raise ValueError(f"censor_fs {cens.max()} is past the run length {total_fs}")
        cens = np.minimum(cens, total_fs)
    return np.minimum(ev, total_fs), cens


@dataclass(frozen=True)
class KaplanMeier:
    """Kaplan–Meier estimate of one model's survival (see the module doc for the formulas).

    Arrays are over the distinct observed times ``times`` (instabilities and the censoring
    time τ = ``total_fs``), ascending; ``survival[i]`` is S just after the step at
    ``times[i]`` (right-continuous) and ``lower``/``upper`` its pointwise log-log band at
    ``confidence``. Where S = 1 the band is [1, 1]; where S = 0 the log-log band is
    undefined and ``lower`` = 0 while ``upper`` carries the previous upper limit forward
    (S does not increase, so it stays a valid upper bound).
    """

    times: np.ndarray
    survival: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    n_at_risk: np.ndarray
    n_events: np.ndarray
    total_fs: float
    confidence: float

    @property
    def n(self) -> int:
        """Number of replicas."""
        return int(self.n_at_risk[0])

    def _index(self, t) -> tuple[np.ndarray, np.ndarray]:
        t = np.asarray(t, dtype=float)
        return t, np.searchsorted(self.times, t, side="right") - 1

    def _step(self, values: np.ndarray, t) -> np.ndarray:
        t, i = self._index(t)
        out = np.where(i < 0, 1.0, values[np.clip(i, 0, None)])
        return np.where(t > self.total_fs, np.nan, out)

    def evaluate(self, t) -> np.ndarray:
        """S(t) on the times ``t`` (fs): 1 before the first step, NaN past ``total_fs``."""
        return self._step(self.survival, t)

    def band(self, t) -> tuple[np.ndarray, np.ndarray]:
        """The pointwise band ``(lower(t), upper(t))`` as step functions like :meth:`evaluate`."""
        return self._step(self.lower, t), self._step(self.upper, t)

    def greenwood_variance(self) -> np.ndarray:
        """Greenwood's ``Var S(t_i) = S(t_i)² Σ_{t_j ≤ t_i} d_j / (n_j (n_j − d_j))`` at
        ``times``; NaN where S = 0 (all still at risk failed, the formula is 0·∞)."""
        d, n = self.n_events.astype(float), self.n_at_risk.astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            var = self.survival**2 * np.cumsum(d / (n * (n - d)))
        return np.where(self.survival > 0, var, np.nan)

    def steps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(times, S, lower, upper)`` of the step function from 0 to ``total_fs``: one
        entry per step (the value holds until the next time), with t = 0 (S = 1, unless
        a replica failed at 0) and ``total_fs`` included."""
        t = np.unique(np.concatenate([[0.0], self.times, [self.total_fs]]))
        lo, hi = self.band(t)
        return t, self.evaluate(t), lo, hi

    def median(self) -> tuple[float, float, float]:
        """``(median, lower, upper)`` of t_inst in fs: the first time S ≤ 0.5 and the first
        times the band's lower and upper curves do; NaN for each one not reached within
        the run (it lies beyond ``total_fs``)."""

        def first(values: np.ndarray) -> float:
            hit = np.flatnonzero(values <= 0.5 + 1e-12)
            return float(self.times[hit[0]]) if len(hit) else float("nan")

        return first(self.survival), first(self.lower), first(self.upper)

    def rmst(self, tau: float | None = None) -> tuple[float, float]:
        """``(RMST, variance)``: ``∫_0^τ S(t) dt`` in fs (τ defaults to ``total_fs``) and
        ``Σ_{t_i ≤ τ} A_i² d_i / (n_i (n_i − d_i))`` with ``A_i = ∫_{t_i}^τ S``; a term
        with ``n_i = d_i`` has S = 0 after it, so ``A_i = 0`` and it adds nothing."""
        tau = self.total_fs if tau is None else float(tau)
        if not 0 < tau <= self.total_fs:
            raise ValueError(f"tau must be in (0, total_fs={self.total_fs}], got {tau}")
        knots = np.unique(np.concatenate([[0.0], self.times[self.times < tau], [tau]]))
        area = self.evaluate(knots[:-1]) * np.diff(knots)  # S constant on [k_j, k_j+1)
        tail = np.concatenate([np.cumsum(area[::-1])[::-1], [0.0]])  # ∫_{k_j}^τ S
        var = 0.0
        for t_i, d_i, n_i in zip(self.times, self.n_events, self.n_at_risk):
            if t_i > tau or d_i == 0 or n_i == d_i:
                continue
            a_i = tail[np.searchsorted(knots, t_i)]
            var += a_i**2 * d_i / (n_i * (n_i - d_i))
        return float(area.sum()), float(var)


def kaplan_meier(
    t_inst_fs: Sequence[float] | np.ndarray,
    stable: Sequence[bool] | np.ndarray,
    total_fs: float,
    confidence: float = 0.95,
    *,
    censor_fs: Sequence[float] | np.ndarray | None = None,
) -> KaplanMeier:
    """Kaplan–Meier survival of t_inst with a pointwise log-log band.

    ``t_inst_fs[k]`` is replica k's instability time (ignored when ``stable[k]``: a replica
    stable at the end is right-censored at ``total_fs``). ``censor_fs`` (optional, per
    replica, read only where ``stable``) censors stable replicas earlier, e.g. runs cut
    short; the studies here never need it. Raises ValueError on empty input, lengths that
    differ, ``total_fs <= 0``, or an unstable replica with a negative, NaN or past-the-run
    t_inst. Uses :func:`scipy.stats.ecdf` and its
    ``sf.confidence_interval(method="log-log")``.
    """
    from scipy.stats import CensoredData, ecdf

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    events, cens = _censored_times(t_inst_fs, stable, total_fs, censor_fs)
    total_fs = float(total_fs)
    obs = np.concatenate([events, cens])
    if len(events) == 0:  # nothing failed: S = 1, no information for a band
        times = np.unique(cens)
        one = np.ones(len(times))
        n_at_risk = (obs[None, :] >= times[:, None]).sum(axis=1)
        return KaplanMeier(
            times, one, one, one, n_at_risk, np.zeros(len(times), int), total_fs, confidence
        )
    res = ecdf(CensoredData(uncensored=events, right=cens))
    times = np.asarray(res.sf.quantiles, float)
    surv = np.asarray(res.sf.probabilities, float)
    with warnings.catch_warnings():  # NaN where S is 0 or 1: handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = res.sf.confidence_interval(confidence, method="log-log")
    lo = np.array(ci.low.probabilities, float)
    hi = np.array(ci.high.probabilities, float)
    n_at_risk = (obs[None, :] >= times[:, None]).sum(axis=1)
    n_events = (events[None, :] == times[:, None]).sum(axis=1)
    prev_hi = 1.0
    for i in range(len(times)):
        if surv[i] >= 1.0:
            lo[i] = hi[i] = 1.0
        elif surv[i] <= 0.0:
            lo[i], hi[i] = 0.0, prev_hi
        prev_hi = hi[i]
    return KaplanMeier(times, surv, lo, hi, n_at_risk, n_events, total_fs, confidence)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k/n``:
    ``(p̂ + z²/2n ± z √(p̂(1 − p̂)/n + z²/4n²)) / (1 + z²/n)`` (scipy's
    ``binomtest(k, n).proportion_ci(method="wilson")``, no continuity correction)."""
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def survival_summary(
    t_inst_fs: Sequence[float] | np.ndarray,
    stable: Sequence[bool] | np.ndarray,
    total_fs: float,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Survival statistics of one model's replicas (censoring at ``total_fs``, see module).

    Keys (times in fs, intervals at ``confidence``):

    * ``n_replicas``, ``n_unstable``, ``tau_fs`` (= ``total_fs``, the censoring time);
    * ``fraction_stable`` and its Wilson interval ``fraction_stable_lo/_hi``;
    * ``t_inst_median_fs`` (Kaplan–Meier median), ``t_inst_median_fs_lo/_hi`` and
      ``median_reached``. Convention: a median or CI limit not reached within the run
      ("beyond the run": more than half the replicas outlived τ, or the band did) is NaN
      in this dict and ``null`` in JSON written through :func:`ase_mlff.utils.write_json`;
      ``median_reached`` says which case holds;
    * ``rmst_fs`` = ``∫_0^τ S(t) dt`` with the normal interval ``rmst_fs_lo/_hi`` (clipped
      to [0, τ]);
    * ``t_inst_mean_fs`` = ``rmst_fs`` (kept for older callers): as all censoring is at τ,
      it equals the sample mean of ``min(t_inst, τ)``, the number reported before;
    * ``t_inst_min_fs``: the smallest observed instability time, ``total_fs`` if none.

    Everything is a plain float/int/bool, so the numeric entries can go to MLflow once
    the non-finite ones are skipped.
    """
    from scipy.stats import norm

    km = kaplan_meier(t_inst_fs, stable, total_fs, confidence)
    n = km.n
    n_unstable = int(km.n_events.sum())
    n_stable = n - n_unstable
    f_lo, f_hi = wilson_interval(n_stable, n, confidence)
    med, med_lo, med_hi = km.median()
    rmst, var = km.rmst()
    z = float(norm.ppf(0.5 + confidence / 2))
    half = z * math.sqrt(var)
    tau = km.total_fs
    events = km.times[km.n_events > 0]
    return {
        "n_replicas": n,
        "n_unstable": n_unstable,
        "tau_fs": tau,
        "fraction_stable": n_stable / n,
        "fraction_stable_lo": f_lo,
        "fraction_stable_hi": f_hi,
        "median_reached": bool(math.isfinite(med)),
        "t_inst_median_fs": med,
        "t_inst_median_fs_lo": med_lo,
        "t_inst_median_fs_hi": med_hi,
        "rmst_fs": rmst,
        "rmst_fs_lo": max(0.0, rmst - half),
        "rmst_fs_hi": min(tau, rmst + half),
        "t_inst_mean_fs": rmst,
        "t_inst_min_fs": float(events.min()) if len(events) else tau,
    }


#: the older name of :func:`survival_summary` (same function, same keys and more)
t_inst_summary = survival_summary


def survival_metrics(summary: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The entries of a :func:`survival_summary` MLflow can take
    (:func:`ase_mlff.utils.numeric_metrics`: finite numbers, ``median_reached`` as 1/0; a
    NaN median or limit, not reached, is left out)."""
    from ase_mlff.utils import numeric_metrics

    return numeric_metrics(summary, prefix)


def holm_adjust(p: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values: with p sorted ascending, ``p̃_(i) =
    max_{j ≤ i} min(1, (m − j + 1) p_(j))`` (i, j from 1)."""
    p = np.asarray(p, float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out


def pairwise_logrank(
    groups: Mapping[str, tuple[Sequence[float] | np.ndarray, Sequence[bool] | np.ndarray]],
    total_fs: float,
) -> list[dict[str, Any]]:
    """Log-rank tests between every pair of models, Holm-corrected over the pairs.

    ``groups``: name -> ``(t_inst_fs, stable)`` (censoring at ``total_fs`` as in
    :func:`kaplan_meier`). Returns one row per pair (in the order of ``groups``):
    ``{"a", "b", "statistic", "p_value", "p_holm"}`` where ``statistic`` is scipy's
    standardised ``(O − E)/√V`` of ``a`` (:func:`scipy.stats.logrank`, two-sided). A pair
    in which no replica of either model failed carries no evidence of a difference: it
    gets statistic 0 and p = 1 (the test itself is 0/0 there); likewise a pair whose
    variance is zero (NaN statistic from scipy) gets p = 1. Fewer than two groups: [].
    """
    from scipy.stats import CensoredData, logrank

    data = {name: _censored_times(t, s, total_fs) for name, (t, s) in groups.items()}
    rows = []
    for a, b in combinations(data, 2):
        (ev_a, c_a), (ev_b, c_b) = data[a], data[b]
        stat, p = 0.0, 1.0
        if len(ev_a) + len(ev_b) > 0:
            with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)
                res = logrank(
                    CensoredData(uncensored=ev_a, right=c_a),
                    CensoredData(uncensored=ev_b, right=c_b),
                )
            stat, p = float(res.statistic), float(res.pvalue)
            if not math.isfinite(p):
                stat, p = (stat if math.isfinite(stat) else 0.0), 1.0
        rows.append({"a": str(a), "b": str(b), "statistic": stat, "p_value": p})
    if rows:
        for r, q in zip(rows, holm_adjust(np.array([r["p_value"] for r in rows]))):
            r["p_holm"] = float(q)
    return rows


def rmst_difference(
    a: tuple[Sequence[float] | np.ndarray, Sequence[bool] | np.ndarray],
    b: tuple[Sequence[float] | np.ndarray, Sequence[bool] | np.ndarray],
    total_fs: float,
    confidence: float = 0.95,
) -> dict[str, float]:
    """``RMST_a − RMST_b`` (fs, both to ``total_fs``) with its normal interval at
    ``confidence``: the two models' replicas are independent, so the variance is the sum
    of their Klein–Moeschberger variances (:meth:`KaplanMeier.rmst`). Keys ``diff_fs``,
    ``lo_fs``, ``hi_fs``, ``se_fs``."""
    from scipy.stats import norm

    rmst_a, var_a = kaplan_meier(*a, total_fs).rmst()
    rmst_b, var_b = kaplan_meier(*b, total_fs).rmst()
    se = math.sqrt(var_a + var_b)
    half = float(norm.ppf(0.5 + confidence / 2)) * se
    diff = rmst_a - rmst_b
    return {"diff_fs": diff, "lo_fs": diff - half, "hi_fs": diff + half, "se_fs": se}


def rmst_interval(
    t_inst_fs: Sequence[float] | np.ndarray,
    stable: Sequence[bool] | np.ndarray,
    total_fs: float,
    level: float,
) -> tuple[float, float]:
    """An interval for one model's RMST that holds with probability ≥ 1 − 2·``level``.

    With failures: the Kaplan–Meier RMST ± z_{1−level} × its Klein–Moeschberger standard
    error (clipped to [0, τ]). With none among n replicas the KM variance is 0 and says
    nothing; then the exact one-sided bound on the failure fraction, p ≤ 1 − level^{1/n}
    (Clopper–Pearson with no events), bounds the RMST below: every failure could come at
    t = 0, so RMST ≥ τ (1 − p). The interval is [τ (1 − p), τ]."""
    from scipy.stats import norm

    km = kaplan_meier(t_inst_fs, stable, total_fs)
    if int(km.n_events.sum()) == 0:
        p_max = 1.0 - level ** (1.0 / km.n)
        return total_fs * (1.0 - p_max), total_fs
    rmst, var = km.rmst()
    half = float(norm.ppf(1.0 - level)) * math.sqrt(var)
    return max(0.0, rmst - half), min(total_fs, rmst + half)


def pairwise_verdicts(
    groups: Mapping[str, tuple[Sequence[float] | np.ndarray, Sequence[bool] | np.ndarray]],
    total_fs: float,
    alpha: float = 0.05,
    margin: float = 0.10,
    looks: int = 1,
) -> list[dict[str, Any]]:
    """Which model of each pair is the more stable, with stated confidence, or that the
    two are equivalent, or that the evidence does not tell yet.

    With P pairs and ``level = alpha / looks`` (Bonferroni over the planned looks of a
    sequential comparison, so that stopping as soon as a pair is decided keeps the
    family-wise error at ``alpha`` over every look), per pair (:func:`pairwise_logrank`
    rows, plus):

    * **Different** when the Holm-corrected (over the P pairs) log-rank p-value is below
      ``level`` *and* the interval of ``RMST_a − RMST_b`` at 1 − 2·level/P excludes 0: the
      log-rank test compares hazards, and the ``winner`` is the model whose restricted
      mean survival time is longer by that interval (crossing curves that differ in
      hazard but not in RMST stay unresolved).
    * **Equivalent** when the 1 − 2·level/P interval of ``RMST_a − RMST_b`` lies inside
      ``±margin · total_fs`` (two one-sided tests, Bonferroni over the P pairs, so the
      family-wise error of every verdict, different or equivalent, is at most ``alpha``).
      Each model's RMST interval is :func:`rmst_interval`: with no failures at all the
      exact bound on the failure fraction is used, so an all-stable pair needs enough
      replicas (about 52 each at α = 0.05, 6 looks, one pair, margin 10 %).
    * **Unresolved** otherwise.

    The difference interval combines the two models' normal intervals through the sum of
    their variances when both have failures, and conservatively (lower end of one minus
    upper end of the other) when one has none. The replicas of the two models are assumed
    independent; run on common random numbers they are positively correlated, which makes
    the interval conservative.

    Keys added: ``verdict`` (``"different"``, ``"equivalent"``, ``"unresolved"``),
    ``winner`` (a name or None), ``rmst_diff_fs`` with ``rmst_diff_lo_fs/_hi_fs`` (95 %
    interval, for the reader) and ``test_lo_fs/_hi_fs`` (the interval the verdict used).
    """
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    if not margin > 0:
        raise ValueError(f"the equivalence margin (a fraction of the run) must be > 0: {margin}")
    if not (isinstance(looks, int) and looks >= 1):
        raise ValueError(f"looks must be an integer >= 1, got {looks!r}")
    level = alpha / looks
    rows = pairwise_logrank(groups, total_fs)
    pair_level = level / max(1, len(rows))
    for row in rows:
        a, b = groups[row["a"]], groups[row["b"]]
        shown = rmst_difference(a, b, total_fs, 0.95)
        lo, hi = _difference_interval(a, b, total_fs, pair_level)
        row.update(
            rmst_diff_fs=shown["diff_fs"],
            rmst_diff_lo_fs=shown["lo_fs"],
            rmst_diff_hi_fs=shown["hi_fs"],
            test_lo_fs=lo,
            test_hi_fs=hi,
            verdict="unresolved",
            winner=None,
        )
        if row["p_holm"] < level and (lo > 0 or hi < 0):
            row["verdict"] = "different"
            row["winner"] = row["a"] if lo > 0 else row["b"]
        elif -margin * total_fs < lo and hi < margin * total_fs:
            row["verdict"] = "equivalent"
    return rows


def _difference_interval(a, b, total_fs: float, level: float) -> tuple[float, float]:
    """The 1 − 2·level interval of RMST_a − RMST_b (see :func:`pairwise_verdicts`)."""
    no_events = [not np.any(~np.asarray(s, bool)) for _, s in (a, b)]
    if any(no_events):  # a degenerate KM variance: combine the exact one-model intervals
        # each at level/2 on its side, so that the two together miss with ≤ level per side
        a_lo, a_hi = rmst_interval(*a, total_fs, level / 2)
        b_lo, b_hi = rmst_interval(*b, total_fs, level / 2)
        return a_lo - b_hi, a_hi - b_lo
    d = rmst_difference(a, b, total_fs, 1 - 2 * level)
    return d["lo_fs"], d["hi_fs"]


def survival_curve(
    t_inst_fs: np.ndarray,
    stable: np.ndarray,
    total_fs: float,
    n_points: int = 200,
    *,
    bands: bool = False,
    confidence: float = 0.95,
) -> tuple[np.ndarray, ...]:
    """Kaplan–Meier survival on ``n_points`` even times in [0, total_fs] (with all
    censoring at the run's end this is the fraction of replicas not yet unstable at t;
    right-continuous: a replica failing at t no longer counts at t).

    Returns ``(times_fs (T,), fraction (T,))``, and with ``bands=True`` also the pointwise
    ``lower (T,)`` and ``upper (T,)`` of :func:`kaplan_meier`.
    """
    km = kaplan_meier(t_inst_fs, stable, total_fs, confidence)
    times = np.linspace(0.0, float(total_fs), n_points)
    if not bands:
        return times, km.evaluate(times)
    return (times, km.evaluate(times), *km.band(times))


def write_survival_csv(path: str | Path, curves: Mapping[str, KaplanMeier]) -> None:
    """CSV ``model,time_fs,survival,lower,upper``: per model the steps of its Kaplan–Meier
    curve (:meth:`KaplanMeier.steps`; each value holds from its time to the next row's)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "time_fs", "survival", "lower", "upper"])
        for model, km in curves.items():
            for row in zip(*km.steps()):
                w.writerow([model, *(float(x) for x in row)])


def write_logrank_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """CSV ``a,b,statistic,p_value,p_holm`` of :func:`pairwise_logrank` (header only when
    there are no pairs)."""
    keys = ["a", "b", "statistic", "p_value", "p_holm"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows({k: r[k] for k in keys} for r in rows)


def logrank_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of :func:`pairwise_logrank` rows."""
    head = "| model A | model B | log-rank z | p | p (Holm) |\n|---|---|---|---|---|\n"
    return head + "".join(
        f"| {r['a']} | {r['b']} | {r['statistic']:.2f} | {r['p_value']:.3g} | {r['p_holm']:.3g} |\n"
        for r in rows
    )


def format_ci(x: float, lo: float, hi: float, fmt: str = ".0f", beyond: str = "> run") -> str:
    """``x [lo, hi]`` with ``beyond`` for a NaN value or limit (not reached in the run)."""

    def f(v) -> str:
        return beyond if v is None or not math.isfinite(v) else format(v, fmt)

    return f"{f(x)} [{f(lo)}, {f(hi)}]"


#: force metrics the correlation table sets against stability (paper 002 Table I, Eqs. 1-4)
FORCE_METRICS = ("forces_mae", "forces_max_err", "fnm_mae", "fnm_max_err")


def force_vs_stability(models: dict[str, dict[str, float]]) -> dict:
    """Force metrics beside MD stability across models (paper 003 key observation 1).

    ``models`` maps a model name to a flat dict holding at least ``forces_mae`` and
    ``t_inst_mean_fs`` (any of :data:`FORCE_METRICS`, ``fraction_stable``, ``h_r_mae`` are
    used when present). Returns ``rows`` sorted by force MAE in descending order (the
    x-axis of paper 003 Fig. 3) and, per force metric, Spearman's rank correlation with
    the mean t_inst over the models (NaN with fewer than three models: a rank correlation
    of two points is ±1 by construction and says nothing).
    """
    from scipy.stats import spearmanr

    if not models:
        raise ValueError("no models to compare")
    for name, m in models.items():
        missing = {"forces_mae", "t_inst_mean_fs"} - set(m)
        if missing:
            raise ValueError(f"model {name!r} lacks {sorted(missing)}")
    rows = sorted(({"model": k, **v} for k, v in models.items()), key=lambda r: -r["forces_mae"])
    t = np.array([r["t_inst_mean_fs"] for r in rows], float)
    corr: dict[str, dict[str, float]] = {}
    for key in FORCE_METRICS:
        if not all(key in r for r in rows):
            continue
        x = np.array([r[key] for r in rows], float)
        if len(rows) < 3 or np.ptp(x) == 0 or np.ptp(t) == 0:
            corr[key] = {"spearman_rho": float("nan"), "p_value": float("nan")}
        else:
            res = spearmanr(x, t)
            corr[key] = {"spearman_rho": float(res.statistic), "p_value": float(res.pvalue)}
    return {"rows": rows, "correlation": corr}


def force_vs_stability_table(result: dict) -> str:
    """Markdown: models by descending force MAE beside their stability, then Spearman ρ.

    Stability is the stable count with its Wilson 95 % interval and the restricted mean
    t_inst (RMST up to the run length) with its 95 % interval, where the rows carry them
    (:func:`survival_summary`)."""
    rows = result["rows"]
    head = (
        "| model | F-MAE (meV/Å) | F max-err (meV/Å) | FNM-MAE (meV/Å/u) | stable [95 % CI] | "
        "mean t_inst = RMST (fs) [95 % CI] | "
        + H_R_MAE_LABEL
        + " |\n|---|---|---|---|---|---|---|\n"
    )
    nan = float("nan")
    lines = []
    for r in rows:
        stable = (
            f"{round(r['fraction_stable'] * r['n_replicas'])}/{r['n_replicas']}"
            if "fraction_stable" in r and "n_replicas" in r
            else "—"
        )
        if stable != "—" and "fraction_stable_lo" in r:
            stable += f" [{r['fraction_stable_lo']:.2f}, {r['fraction_stable_hi']:.2f}]"
        rmst = (
            format_ci(r["rmst_fs"], r["rmst_fs_lo"], r["rmst_fs_hi"])
            if all(k in r for k in ("rmst_fs", "rmst_fs_lo", "rmst_fs_hi"))
            else f"{r['t_inst_mean_fs']:.0f}"
        )
        lines.append(
            f"| {r['model']} | {r['forces_mae'] * 1e3:.1f} | "
            f"{r.get('forces_max_err', nan) * 1e3:.1f} | {r.get('fnm_mae', nan) * 1e3:.2f} | "
            f"{stable} | {rmst} | {r.get('h_r_mae', nan):.3f} |"
        )
    corr = "\n".join(
        f"- {k} vs mean t_inst: Spearman ρ = {v['spearman_rho']:.2f} (p = {v['p_value']:.2g})"
        for k, v in result["correlation"].items()
    )
    return head + "\n".join(lines) + "\n\n" + corr + "\n"
