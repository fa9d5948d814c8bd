"""Survival statistics of stability studies: Kaplan–Meier with right-censoring at the run
length, Greenwood / log-log band, median and RMST with CIs, Wilson interval, log-rank with
Holm, and what the study writer puts on disk. Expected values are computed by hand or by
independent code here, never by the functions under test."""

import csv
import json
import math
import re

import numpy as np
import pytest
from scipy import stats

from ase_mlff.metrics.stability import (
    kaplan_meier,
    pairwise_logrank,
    survival_curve,
    survival_metrics,
    survival_summary,
    t_inst_summary,
)

NAN = float("nan")
Z95 = 1.959963984540054


def _product_limit(events, censored, grid):
    """Independent KM: loop over the distinct times, S *= 1 - d/n."""
    events, censored = np.asarray(events, float), np.asarray(censored, float)
    obs = np.concatenate([events, censored])
    s, steps = 1.0, []
    for t in np.unique(obs):
        n = np.sum(obs >= t)
        d = np.sum(events == t)
        s *= 1.0 - d / n
        steps.append((t, s))
    out = []
    for g in grid:
        val = 1.0
        for t, v in steps:
            if t <= g:
                val = v
        out.append(val)
    return np.array(out)


def test_km_hand_computed_three_replicas():
    km = kaplan_meier([10.0, 20.0, NAN], [False, False, True], 30.0)
    s = km.evaluate([0.0, 9.999, 10.0, 15.0, 19.0, 20.0, 25.0, 30.0])
    np.testing.assert_allclose(s, [1, 1, 2 / 3, 2 / 3, 2 / 3, 1 / 3, 1 / 3, 1 / 3])
    assert np.isnan(km.evaluate(30.5))  # nothing is known past the run
    lo, hi = km.band([0.0, 15.0, 25.0])
    assert lo[0] == hi[0] == 1.0
    assert np.all(lo[1:] < s[[3, 6]]) and np.all(s[[3, 6]] < hi[1:])
    assert np.all((lo >= 0) & (hi <= 1))


def test_km_with_ties_and_interior_censoring_matches_product_limit():
    # events with ties at 5 and 12, a replica cut short (censored) at 8 and at 12, rest at 40
    t = np.array([5, 5, 12, 12, 12, 20, NAN, NAN, NAN, NAN, 3])
    stable = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0], bool)
    censor = np.array([NAN] * 6 + [8, 12, 40, 40] + [NAN])
    km = kaplan_meier(t, stable, 40.0, censor_fs=censor)
    grid = np.linspace(0, 40, 81)
    expected = _product_limit(t[~stable], censor[stable], grid)
    np.testing.assert_allclose(km.evaluate(grid), expected, atol=1e-12)
    # by hand: at risk 11 at t=3 (1 fails), 10 at t=5 (2 fail), 7 at t=12 (3 fail: the one
    # censored at 8 has left, the one censored at 12 is still at risk), 3 at t=20 (1 fails)
    s3 = 10 / 11
    s5 = s3 * (1 - 2 / 10)
    s12 = s5 * (1 - 3 / 7)
    s20 = s12 * (1 - 1 / 3)
    np.testing.assert_allclose(km.evaluate([4, 6, 13, 21]), [s3, s5, s12, s20])
    # Greenwood at t = 12: S² Σ d/(n(n-d)) over 3, 5, 12
    gw = s12**2 * (1 / (11 * 10) + 2 / (10 * 8) + 3 / (7 * 4))
    i = int(np.flatnonzero(km.times == 12)[0])
    assert km.greenwood_variance()[i] == pytest.approx(gw, rel=1e-12)
    # and the log-log band built on it: S^{exp(±z σ)}, σ² = Σ d/(n(n-d)) / (log S)²
    sig = math.sqrt(gw / s12**2) / abs(math.log(s12))
    assert km.lower[i] == pytest.approx(s12 ** math.exp(Z95 * sig), rel=1e-9)
    assert km.upper[i] == pytest.approx(s12 ** math.exp(-Z95 * sig), rel=1e-9)


def test_last_replica_failing_alone_is_counted():
    # the old bug: a curve that ignored the last replica stays at 1
    t = np.array([NAN, NAN, NAN, 50.0])
    stable = np.array([True, True, True, False])
    times, frac = survival_curve(t, stable, 100.0, n_points=101)
    assert frac[times < 50].min() == 1.0
    np.testing.assert_allclose(frac[times >= 50], 0.75)
    s = survival_summary(t, stable, 100.0)
    assert s["n_unstable"] == 1 and s["fraction_stable"] == 0.75
    assert s["t_inst_min_fs"] == 50.0
    assert s["rmst_fs"] == pytest.approx((3 * 100 + 50) / 4)
    # failing on the very last step is an instability, not a survivor
    s = survival_summary([NAN, NAN, 100.0], [True, True, False], 100.0)
    assert s["n_unstable"] == 1 and s["fraction_stable"] == pytest.approx(2 / 3)
    times, frac = survival_curve([NAN, NAN, 100.0], [True, True, False], 100.0, n_points=11)
    assert frac[-1] == pytest.approx(2 / 3) and frac[-2] == 1.0


def test_median_reached_and_its_ci():
    t = np.array([10, 20, 30, 40, 50, 60, 70, 80, NAN, NAN], float)
    stable = np.isnan(t)
    s = survival_summary(t, stable, 100.0)
    # S drops by 1/10 at each event: S(50) = 0.5 is the first S <= 0.5
    assert s["median_reached"] and s["t_inst_median_fs"] == 50.0
    # CI limits: first times the log-log band's lower / upper curve reach 0.5, band by hand
    lo_hit = hi_hit = None
    surv, acc = 1.0, 0.0
    for k, tk in enumerate(t[:8]):
        n_k = 10 - k
        surv *= 1 - 1 / n_k
        acc += 1 / (n_k * (n_k - 1))
        sig = math.sqrt(acc) / abs(math.log(surv))
        if lo_hit is None and surv ** math.exp(Z95 * sig) <= 0.5:
            lo_hit = tk
        if hi_hit is None and surv ** math.exp(-Z95 * sig) <= 0.5:
            hi_hit = tk
    assert (s["t_inst_median_fs_lo"], s["t_inst_median_fs_hi"]) == (lo_hit, hi_hit)
    assert s["t_inst_median_fs_lo"] <= 50.0 <= s["t_inst_median_fs_hi"]
    assert s["t_inst_median_fs_lo"] < s["t_inst_median_fs_hi"]


def test_median_not_reached():
    t = np.array([10, 20, NAN, NAN, NAN], float)
    s = survival_summary(t, np.isnan(t), 100.0)
    assert not s["median_reached"]
    assert math.isnan(s["t_inst_median_fs"]) and math.isnan(s["t_inst_median_fs_hi"])
    assert "t_inst_median_fs" not in survival_metrics(s)  # MLflow gets no NaN
    assert survival_metrics(s)["median_reached"] == 0.0
    # old key set is still there for older callers
    assert t_inst_summary is survival_summary
    for k in ("t_inst_mean_fs", "t_inst_median_fs", "t_inst_min_fs", "fraction_stable"):
        assert k in s
    assert s["n_replicas"] == 5


def test_rmst_hand_computed_with_ci():
    t = np.array([10, 20, 20, 70, NAN], float)
    stable = np.isnan(t)
    s = survival_summary(t, stable, 100.0)
    # area under the step function: 1 on [0,10), 4/5 on [10,20), 2/5 on [20,70), 1/5 on [70,100)
    area = 10 * 1 + 10 * 0.8 + 50 * 0.4 + 30 * 0.2
    assert s["rmst_fs"] == pytest.approx(area)
    # all censoring at τ: the restricted mean is the mean of min(t, τ)
    assert s["rmst_fs"] == pytest.approx(np.mean(np.where(stable, 100.0, t)))
    assert s["t_inst_mean_fs"] == s["rmst_fs"]
    # variance Σ A_i² d_i / (n_i (n_i - d_i)), A_i = ∫_{t_i}^τ S
    a10, a20, a70 = 10 * 0.8 + 50 * 0.4 + 30 * 0.2, 50 * 0.4 + 30 * 0.2, 30 * 0.2
    var = a10**2 * 1 / (5 * 4) + a20**2 * 2 / (4 * 2) + a70**2 * 1 / (2 * 1)
    assert s["rmst_fs_lo"] == pytest.approx(area - Z95 * math.sqrt(var))
    assert s["rmst_fs_hi"] == pytest.approx(area + Z95 * math.sqrt(var))
    assert s["rmst_fs_lo"] < s["rmst_fs"] < s["rmst_fs_hi"]


@pytest.mark.parametrize("k,n", [(3, 10), (0, 7), (7, 7), (12, 40)])
def test_wilson_interval_closed_formula(k, n):
    stable = np.arange(n) < k
    t = np.where(stable, NAN, 5.0)
    s = survival_summary(t, stable, 10.0)
    p = k / n
    z2 = Z95**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    assert s["fraction_stable"] == pytest.approx(p)
    assert s["fraction_stable_lo"] == pytest.approx(centre - half, abs=1e-12)
    assert s["fraction_stable_hi"] == pytest.approx(centre + half, abs=1e-12)


@pytest.mark.parametrize(
    "t,stable,total,match",
    [
        ([1.0, 2.0], [False], 10.0, "entries"),
        ([], [], 10.0, "no replicas"),
        ([-1.0], [False], 10.0, "negative"),
        ([NAN], [False], 10.0, "NaN"),
        ([11.0], [False], 10.0, "past the run"),
        ([1.0], [False], 0.0, "positive"),
    ],
)
def test_bad_inputs_raise(t, stable, total, match):
    with pytest.raises(ValueError, match=match):
        kaplan_meier(t, stable, total)


def test_logrank_against_scipy_and_holm_by_hand():
    rng = np.random.default_rng(3)
    total = 100.0
    groups = {}
    for name, scale in (("a", 30.0), ("b", 60.0), ("c", 200.0)):
        t = rng.exponential(scale, 15)
        groups[name] = (np.where(t < total, t, NAN), t >= total)
    rows = pairwise_logrank(groups, total)
    assert [(r["a"], r["b"]) for r in rows] == [("a", "b"), ("a", "c"), ("b", "c")]
    for r in rows:
        xa, sa = groups[r["a"]]
        xb, sb = groups[r["b"]]
        ref = stats.logrank(
            stats.CensoredData(uncensored=xa[~sa], right=np.full(sa.sum(), total)),
            stats.CensoredData(uncensored=xb[~sb], right=np.full(sb.sum(), total)),
        )
        assert r["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)
        assert r["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
    # Holm by hand: sort, multiply by (m, m-1, ..., 1), running max, cap at 1
    p = [r["p_value"] for r in rows]
    order = sorted(range(3), key=lambda i: p[i])
    adj, running = [0.0] * 3, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (3 - rank) * p[i]))
        adj[i] = running
    assert [r["p_holm"] for r in rows] == pytest.approx(adj, rel=1e-12)


def test_logrank_identical_different_and_no_events():
    t = np.array([5, 10, 15, 20, 25, 30, 35, 40, NAN, NAN], float)
    same = pairwise_logrank({"x": (t, np.isnan(t)), "y": (t.copy(), np.isnan(t))}, 50.0)
    assert same[0]["p_value"] == pytest.approx(1.0) and same[0]["p_holm"] == pytest.approx(1.0)
    early = np.linspace(1, 10, 20)
    late = np.full(20, NAN)
    diff = pairwise_logrank(
        {"early": (early, np.zeros(20, bool)), "late": (late, np.ones(20, bool))}, 50.0
    )
    assert diff[0]["p_value"] < 0.01 and diff[0]["statistic"] > 0
    none = pairwise_logrank(
        {"p": (late[:5], np.ones(5, bool)), "q": (late[:3], np.ones(3, bool))}, 50.0
    )
    assert none == [{"a": "p", "b": "q", "statistic": 0.0, "p_value": 1.0, "p_holm": 1.0}]
    assert pairwise_logrank({"only": (t, np.isnan(t))}, 50.0) == []


def test_study_writer_outputs(tmp_path):
    from ase_mlff.agents.study import StudyResult, summarize_study, write_study_files

    rows = []
    for model, ts in (("good", [NAN, NAN, NAN, 40.0]), ("bad", [5.0, 10.0, 10.0, NAN])):
        for k, t in enumerate(ts):
            rows.append(
                {
                    "model": model,
                    "replica_id": k,
                    "t_inst_fs": None if np.isnan(t) else t,
                    "stable": bool(np.isnan(t)),
                    "reason": None if np.isnan(t) else "bond",
                }
            )
    res = summarize_study(StudyResult(rows=rows, total_fs=50.0, out_dir=tmp_path))
    write_study_files(res, {"steps": 100, "dt": 0.5})

    summary = json.loads((tmp_path / "summary.json").read_text())  # strict JSON: no NaN
    assert summary["total_fs"] == 50.0 and list(summary["models"]) == ["good", "bad"]
    good, bad = summary["models"]["good"], summary["models"]["bad"]
    assert good["fraction_stable"] == 0.75 and good["n_unstable"] == 1
    assert good["median_reached"] is False and good["t_inst_median_fs"] is None
    assert good["rmst_fs"] == pytest.approx((3 * 50 + 40) / 4)
    assert bad["median_reached"] is True and bad["t_inst_median_fs"] == 10.0
    assert bad["fraction_stable_lo"] < 0.25 < bad["fraction_stable_hi"]
    assert [(r["a"], r["b"]) for r in summary["logrank"]] == [("good", "bad")]
    assert 0 < summary["logrank"][0]["p_value"] <= summary["logrank"][0]["p_holm"] <= 1

    with open(tmp_path / "survival.csv") as f:
        rows_csv = list(csv.DictReader(f))
    assert list(rows_csv[0]) == ["model", "time_fs", "survival", "lower", "upper"]
    bad_curve = {float(r["time_fs"]): r for r in rows_csv if r["model"] == "bad"}
    assert sorted(bad_curve) == [0.0, 5.0, 10.0, 50.0]
    assert float(bad_curve[0.0]["survival"]) == 1.0
    assert float(bad_curve[5.0]["survival"]) == pytest.approx(0.75)
    assert float(bad_curve[10.0]["survival"]) == pytest.approx(0.25)
    for r in rows_csv:
        assert float(r["lower"]) <= float(r["survival"]) <= float(r["upper"])

    with open(tmp_path / "logrank.csv") as f:
        lr = list(csv.DictReader(f))
    assert len(lr) == 1 and lr[0]["a"] == "good" and lr[0]["b"] == "bad"
    assert float(lr[0]["p_value"]) == pytest.approx(summary["logrank"][0]["p_value"])
    assert (tmp_path / "survival.png").stat().st_size > 5000
    assert res.logrank == summary["logrank"]


def test_survival_figure_old_and_new_curve_forms():
    from ase_mlff.metrics.plots import survival_figure

    t = np.array([10.0, 20.0, NAN])
    stable = np.isnan(t)
    fig = survival_figure(
        {
            "tuple": survival_curve(t, stable, 30.0),  # (times, fraction) as before
            "bands": survival_curve(t, stable, 30.0, bands=True),
            "km": kaplan_meier(t, stable, 30.0),
        }
    )
    ax = fig.axes[0]
    assert len(ax.lines) == 3 and len(ax.collections) == 2  # two shaded bands
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["tuple", "bands", "km"]
    # the drawn steps are the estimate's, time in ps
    steps_t, steps_s, _, _ = kaplan_meier(t, stable, 30.0).steps()
    x, y = ax.lines[2].get_data()
    np.testing.assert_allclose(x, steps_t / 1000.0)
    np.testing.assert_allclose(y, steps_s)


def test_comparison_table_shows_intervals_and_logrank():
    from ase_mlff.agents.comparison import SURVIVAL_KEYS, best_by_criterion, comparison_markdown

    t1, t2 = np.array([5.0, 10.0, 15.0, NAN]), np.array([NAN, NAN, NAN, 40.0])
    groups = {"m1": (t1, np.isnan(t1)), "m2": (t2, np.isnan(t2))}
    rows = []
    for name, (t, stable) in groups.items():
        s = survival_summary(t, stable, 50.0)
        rows.append(
            {
                "model": name,
                "kind": "scratch",
                "forces_mae": 0.05,
                "forces_max_err": 0.2,
                "fnm_mae": 0.01,
                "energy_mae_per_atom": 0.001,
                **{k: s[k] for k in SURVIVAL_KEYS},
                "h_r_mae": 0.1,
                "train_minutes": 1.0,
            }
        )
    table = comparison_markdown(rows, pairwise_logrank(groups, 50.0))
    m1 = next(line for line in table.splitlines() if line.startswith("| m1 "))
    m2 = next(line for line in table.splitlines() if line.startswith("| m2 "))
    w = rows[0]
    assert f"1/4 [{w['fraction_stable_lo']:.2f}, {w['fraction_stable_hi']:.2f}]" in m1
    assert "| 10 [" in m1  # KM median 10 fs with its CI
    assert "> run [" in m2  # median of m2 not reached within the run
    assert f"{rows[1]['rmst_fs']:.0f} [" in m2
    assert "| m1 | m2 |" in table and "Holm" in table
    assert best_by_criterion(rows) == "m2"  # the selection criterion still works on these keys


def test_holm_step_down_keeps_adjusted_p_monotone():
    from ase_mlff.metrics.stability import holm_adjust

    # sorted 0.01, 0.03, 0.04 -> ×3, ×2, ×1 = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06
    np.testing.assert_allclose(holm_adjust(np.array([0.01, 0.04, 0.03])), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm_adjust(np.array([0.5, 0.9])), [1.0, 1.0])  # capped at 1


def test_band_where_survival_reaches_zero_and_all_stable():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's NaN-band warning is handled, not leaked
        km = kaplan_meier([5.0, 6.0, 7.0], [False, False, False], 30.0)
        none = kaplan_meier([NAN, NAN], [True, True], 30.0)
    assert km.survival[-1] == 0.0 and km.lower[-1] == 0.0
    # log-log is undefined at S = 0: the previous upper limit is carried forward
    assert km.upper[-1] == km.upper[-2] > 0.0
    assert not np.isnan(np.concatenate([km.lower, km.upper])).any()
    assert km.evaluate(30.0) == 0.0
    # nothing failed: S = 1 on the whole run, band [1, 1], median beyond the run
    assert none.evaluate(30.0) == 1.0 and none.band(15.0) == (1.0, 1.0)
    assert all(math.isnan(x) for x in none.median())


def test_force_vs_stability_spearman_against_hand_ranks_and_scipy():
    """Spearman ρ of each force metric with the mean t_inst over models, in the models'
    own pairing (the rows are re-sorted by force MAE for display; the pairs must not be).
    forces_mae ranks 1..5 against t_inst ranks 5, 3, 4, 2, 1: Σd² = 38, ρ = 1 - 6·38/120
    = -0.9; forces_max_err has a tie (average ranks), compared with scipy.stats.spearmanr
    computed here on the input order."""
    from ase_mlff.metrics.stability import force_vs_stability

    names = ["a", "b", "c", "d", "e"]
    mae = [0.10, 0.20, 0.30, 0.40, 0.50]
    max_err = [1.0, 0.8, 1.5, 1.2, 1.2]
    t_inst = [500.0, 450.0, 480.0, 100.0, 50.0]
    models = {
        n: {"forces_mae": m, "forces_max_err": x, "t_inst_mean_fs": t}
        for n, m, x, t in zip(names, mae, max_err, t_inst)
    }
    res = force_vs_stability(models)
    assert [r["model"] for r in res["rows"]] == ["e", "d", "c", "b", "a"]
    assert set(res["correlation"]) == {"forces_mae", "forces_max_err"}  # only those present
    rho = res["correlation"]["forces_mae"]["spearman_rho"]
    assert rho == pytest.approx(-0.9, abs=1e-12)
    for key, x in (("forces_mae", mae), ("forces_max_err", max_err)):
        ref = stats.spearmanr(x, t_inst)
        got = res["correlation"][key]
        assert got["spearman_rho"] == pytest.approx(ref.statistic, abs=1e-12), key
        assert got["p_value"] == pytest.approx(ref.pvalue, rel=1e-9), key
    # two models: a rank correlation of two points says nothing
    two = force_vs_stability({n: models[n] for n in names[:2]})
    assert math.isnan(two["correlation"]["forces_mae"]["spearman_rho"])


# ----------------------------------------------------------------------------------------
# edge cases and exact messages (found by mutation testing: see docs/testing.md)
@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"t_inst_fs": [1.0, 2.0], "stable": [False]}, "t_inst_fs has 2 entries but stable has 1"),
        ({"t_inst_fs": [], "stable": []}, "no replicas: survival statistics need at least one"),
        ({"t_inst_fs": [1.0], "stable": [0.5]}, "stable must be booleans, got dtype float64"),
        ({"total_fs": 0.0}, "total_fs must be a positive run length, got 0.0"),
        ({"total_fs": NAN}, "total_fs must be a positive run length, got nan"),
        ({"t_inst_fs": [NAN]}, "an unstable replica has a NaN or infinite t_inst"),
        ({"t_inst_fs": [float("inf")]}, "an unstable replica has a NaN or infinite t_inst"),
        ({"t_inst_fs": [-1.0]}, "negative t_inst of an unstable replica: -1.0"),
        ({"t_inst_fs": [10.1]}, "t_inst 10.1 fs is past the run length total_fs=10.0"),
        ({"censor_fs": [1.0, 2.0]}, "censor_fs has 2 entries but stable has 1"),
        (
            {"stable": [True], "censor_fs": [NAN]},
            "censor_fs of a stable replica must be finite and >= 0",
        ),
        (
            {"stable": [True], "censor_fs": [-1.0]},
            "censor_fs of a stable replica must be finite and >= 0",
        ),
        ({"stable": [True], "censor_fs": [10.5]}, "censor_fs 10.5 is past the run length 10.0"),
        ({"confidence": 1.0}, "confidence must be in (0, 1), got 1.0"),
        ({"confidence": 0.0}, "confidence must be in (0, 1), got 0.0"),
    ],
)
def test_every_bad_input_is_named(kwargs, message):
    args = {"t_inst_fs": [1.0], "stable": [False], "total_fs": 10.0, **kwargs}
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        kaplan_meier(**args)


def test_run_length_tolerance_and_integer_flags():
    """A t_inst or censoring time a rounding error past τ is τ; 0/1 integers are flags."""
    km = kaplan_meier([10.0 * (1 + 1e-12), 4.0], [0, 0], 10.0)
    np.testing.assert_array_equal(km.times, [4.0, 10.0])
    np.testing.assert_array_equal(km.n_events, [1, 1])
    c = kaplan_meier([NAN, 4.0], [1, 0], 10.0, censor_fs=[10.0 * (1 + 1e-12), NAN])
    np.testing.assert_array_equal(c.times, [4.0, 10.0])
    assert c.evaluate(10.0) == 0.5


def test_at_risk_counts_steps_and_evaluation_at_the_ends():
    """n_i, d_i, n and the step listing by hand; an instability at t = 0; S at τ exactly."""
    km = kaplan_meier([0.0, 4.0, 4.0, 7.0, NAN], [0, 0, 0, 0, 1], 10.0)
    np.testing.assert_array_equal(km.times, [0.0, 4.0, 7.0, 10.0])
    np.testing.assert_array_equal(km.n_at_risk, [5, 4, 2, 1])
    np.testing.assert_array_equal(km.n_events, [1, 2, 1, 0])
    assert km.n == 5
    s = [4 / 5, 4 / 5 * 2 / 4, 4 / 5 * 2 / 4 * 1 / 2, 0.2]
    np.testing.assert_allclose(km.survival, s)
    t, surv, lo, hi = km.steps()
    np.testing.assert_array_equal(t, [0.0, 4.0, 7.0, 10.0])  # 0 is an event time here
    np.testing.assert_allclose(surv, s)
    np.testing.assert_allclose(lo, km.lower) and np.testing.assert_allclose(hi, km.upper)
    assert km.evaluate(10.0) == pytest.approx(0.2) and np.isnan(km.evaluate(10.0 + 1e-9))
    assert km.evaluate(-1.0) == 1.0  # before the first step
    np.testing.assert_array_equal(np.isnan(km.band([10.0, 11.0])[0]), [False, True])
    # without an event at 0 the listing starts at t = 0 with S = 1
    t, surv, lo, hi = kaplan_meier([5.0], [False], 10.0).steps()
    np.testing.assert_array_equal(t, [0.0, 5.0, 10.0])
    np.testing.assert_array_equal(surv, [1.0, 0.0, 0.0])
    assert lo[0] == hi[0] == 1.0
    # nothing failed: at risk everyone at τ, no events
    none = kaplan_meier([NAN, NAN, NAN], [True] * 3, 10.0)
    np.testing.assert_array_equal(none.times, [10.0])
    np.testing.assert_array_equal(none.n_at_risk, [3])
    np.testing.assert_array_equal(none.n_events, [0])
    assert none.n == 3


def test_median_exactly_half_and_a_band_limit_beyond_the_run():
    """S = 0.5 exactly is the median (first S ≤ 0.5); the band's upper curve not reaching
    0.5 within the run gives a NaN upper limit, the lower one its first crossing."""
    km = kaplan_meier([10.0, 20.0, NAN, NAN], [0, 0, 1, 1], 30.0)
    med, lo, hi = km.median()
    assert med == 20.0
    assert math.isnan(hi)
    i = int(np.flatnonzero(km.lower <= 0.5)[0])
    assert lo == km.times[i]
    s = survival_summary([10.0, 20.0, NAN, NAN], [0, 0, 1, 1], 30.0)
    assert s["median_reached"] is True and s["t_inst_median_fs"] == 20.0
    assert s["t_inst_min_fs"] == 10.0


def test_rmst_up_to_an_earlier_tau_and_the_all_failed_term():
    """RMST(τ') for τ' < τ by hand; the variance term of a step where everyone at risk
    fails (n_i = d_i) adds nothing; τ' outside (0, τ] is refused."""
    km = kaplan_meier([10.0, 20.0, 20.0, 70.0, NAN], [0, 0, 0, 0, 1], 100.0)
    area, var = km.rmst(50.0)
    assert area == pytest.approx(10 * 1 + 10 * 0.8 + 30 * 0.4)
    a10, a20 = 10 * 0.8 + 30 * 0.4, 30 * 0.4
    assert var == pytest.approx(a10**2 / (5 * 4) + a20**2 * 2 / (4 * 2))
    assert km.rmst(20.0) == pytest.approx((18.0, (10 * 0.8) ** 2 / 20))
    for bad in (0.0, -5.0, 100.5):
        with pytest.raises(ValueError, match=rf"^tau must be in \(0, total_fs=100.0\], got {bad}$"):
            km.rmst(bad)
    # every replica fails: the last step (n = d) has A = 0
    allf = kaplan_meier([10.0, 30.0], [0, 0], 50.0)
    area, var = allf.rmst()
    assert area == pytest.approx(10 + 20 * 0.5)
    assert var == pytest.approx((20 * 0.5) ** 2 / (2 * 1))


def test_summary_intervals_clip_to_the_run_and_follow_the_confidence():
    # one failure late: RMST + half-width is past τ and is clipped to τ
    t = np.array([NAN] * 9 + [90.0])
    s = survival_summary(t, np.isnan(t), 100.0)
    assert s["rmst_fs"] == pytest.approx(99.0)
    half = Z95 * math.sqrt((10 * 0.9) ** 2 / (10 * 9))
    assert s["rmst_fs_hi"] == 100.0 and s["rmst_fs_lo"] == pytest.approx(99.0 - half)
    # one failure of three at 40 fs: only the upper limit is clipped
    s = survival_summary([40.0, NAN, NAN], [False, True, True], 100.0)
    half = Z95 * math.sqrt((60 * 2 / 3) ** 2 / (3 * 2))
    assert s["rmst_fs"] == pytest.approx(80.0)
    assert (s["rmst_fs_lo"], s["rmst_fs_hi"]) == (pytest.approx(80.0 - half), 100.0)
    assert s["n_replicas"] == 3 and s["n_unstable"] == 1 and s["tau_fs"] == 100.0
    # four of five fail at once early: only the lower limit is clipped, to 0
    s = survival_summary([1.0, 1.0, 1.0, 1.0, NAN], [0, 0, 0, 0, 1], 100.0)
    half = Z95 * math.sqrt((99 * 0.2) ** 2 * 4 / (5 * 1))
    assert s["rmst_fs"] == pytest.approx(1 + 99 * 0.2) and half > s["rmst_fs"]
    assert (s["rmst_fs_lo"], s["rmst_fs_hi"]) == (0.0, pytest.approx(20.8 + half))
    # 90 % intervals: z = 1.6449 for the RMST, Wilson at 0.9
    t = np.array([10, 20, 20, 70, NAN], float)
    s90 = survival_summary(t, np.isnan(t), 100.0, confidence=0.9)
    s95 = survival_summary(t, np.isnan(t), 100.0)
    z90 = stats.norm.ppf(0.95)
    assert (s90["rmst_fs_hi"] - s90["rmst_fs"]) / (s95["rmst_fs_hi"] - s95["rmst_fs"]) == (
        pytest.approx(z90 / Z95)
    )
    p, n, z2 = 0.2, 5, z90**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    h = z90 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    assert s90["fraction_stable_lo"] == pytest.approx(centre - h, abs=1e-12)
    assert s90["fraction_stable_hi"] == pytest.approx(centre + h, abs=1e-12)
    assert s90["t_inst_min_fs"] == 10.0
    # nobody failed: the smallest t_inst is the run length
    assert survival_summary([NAN], [True], 100.0)["t_inst_min_fs"] == 100.0


def test_survival_curve_grid_bands_and_confidence():
    t, stable = np.array([10.0, 20.0, NAN]), np.array([False, False, True])
    times, frac = survival_curve(t, stable, 30.0, n_points=7)
    np.testing.assert_allclose(times, [0, 5, 10, 15, 20, 25, 30])
    np.testing.assert_allclose(frac, [1, 1, 2 / 3, 2 / 3, 1 / 3, 1 / 3, 1 / 3])
    _, _, lo95, hi95 = survival_curve(t, stable, 30.0, n_points=7, bands=True)
    _, _, lo80, hi80 = survival_curve(t, stable, 30.0, n_points=7, bands=True, confidence=0.8)
    km = kaplan_meier(t, stable, 30.0, 0.8)
    np.testing.assert_allclose(lo80, km.band(times)[0])
    assert np.all(lo80[2:] > lo95[2:]) and np.all(hi80[2:] < hi95[2:])


def test_logrank_with_zero_variance_counts_as_no_evidence():
    """Everyone in both models fails at the same instant: V = 0, scipy's statistic is
    NaN; the pair is reported as no evidence (statistic 0, p = 1)."""
    rows = pairwise_logrank({"x": ([5.0, 5.0], [0, 0]), "y": ([5.0, 5.0], [0, 0])}, 10.0)
    assert rows == [{"a": "x", "b": "y", "statistic": 0.0, "p_value": 1.0, "p_holm": 1.0}]


def test_json_values_atomic_write_and_mlflow_metrics(tmp_path):
    from ase_mlff.utils import jsonable, write_json

    x = {
        1: np.float64(NAN),
        "a": [np.int64(3), (float("inf"), -float("inf")), np.array([1.5, NAN])],
        "b": {"c": np.bool_(True), "d": "text", "e": None},
    }
    out = jsonable(x)
    assert out == {
        "1": None,
        "a": [3, [None, None], [1.5, None]],
        "b": {"c": True, "d": "text", "e": None},
    }
    assert type(out["a"][0]) is int and type(out["b"]["c"]) is bool
    json.dumps(out, allow_nan=False)  # strict JSON
    from dataclasses import dataclass
    from pathlib import Path

    @dataclass
    class Row:
        p: Path
        t: float

    keep = jsonable({"r": Row(Path("/a/b"), NAN)}, nan_as_null=False)
    assert keep["r"]["p"] == "/a/b" and math.isnan(keep["r"]["t"])
    path = write_json(tmp_path / "s.json", {"m": np.float64(NAN), "k": (1, 2)})
    assert path.read_text() == '{\n "m": null,\n "k": [\n  1,\n  2\n ]\n}'
    assert not list(tmp_path.glob("*.tmp"))  # written through a temporary file, renamed
    write_json(tmp_path / "n.json", {"m": NAN}, nan_as_null=False)
    assert math.isnan(json.loads((tmp_path / "n.json").read_text())["m"])
    m = survival_metrics(
        {
            "n": np.int64(4),
            "f": 0.5,
            "ok": True,
            "no": False,
            "m": NAN,
            "s": "x",
            "g": np.float32(2),
        },
        prefix="p/",
    )
    assert m == {"p/n": 4.0, "p/f": 0.5, "p/ok": 1.0, "p/no": 0.0, "p/g": 2.0}
    assert all(type(v) is float for v in m.values())


def test_survival_and_logrank_csv_rows(tmp_path):
    from ase_mlff.metrics.stability import write_logrank_csv, write_survival_csv

    km = kaplan_meier([10.0, NAN], [False, True], 20.0)
    write_survival_csv(tmp_path / "s.csv", {"m": km, "n": kaplan_meier([NAN], [True], 20.0)})
    with open(tmp_path / "s.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["model", "time_fs", "survival", "lower", "upper"]
    body = [[r[0], *map(float, r[1:])] for r in rows[1:]]
    assert [r[:3] for r in body] == [
        ["m", 0.0, 1.0],
        ["m", 10.0, 0.5],
        ["m", 20.0, 0.5],
        ["n", 0.0, 1.0],
        ["n", 20.0, 1.0],
    ]
    assert body[1][3] == pytest.approx(km.lower[0]) and body[1][4] == pytest.approx(km.upper[0])
    lr = [{"a": "m", "b": "n", "statistic": 1.25, "p_value": 0.2, "p_holm": 0.4, "x": 9}]
    write_logrank_csv(tmp_path / "l.csv", lr)
    assert (tmp_path / "l.csv").read_text().splitlines() == [
        "a,b,statistic,p_value,p_holm",
        "m,n,1.25,0.2,0.4",
    ]
    write_logrank_csv(tmp_path / "e.csv", [])
    assert (tmp_path / "e.csv").read_text().splitlines() == ["a,b,statistic,p_value,p_holm"]


def test_markdown_of_logrank_rows_and_intervals():
    from ase_mlff.metrics.stability import format_ci, logrank_markdown

    md = logrank_markdown(
        [{"a": "x", "b": "y", "statistic": -2.345, "p_value": 0.01234, "p_holm": 0.0247}]
    )
    assert md.splitlines() == [
        "| model A | model B | log-rank z | p | p (Holm) |",
        "|---|---|---|---|---|",
        "| x | y | -2.35 | 0.0123 | 0.0247 |",
    ]
    assert format_ci(12.4, 3.6, NAN) == "12 [4, > run]"
    assert format_ci(NAN, None, 7.0, fmt=".1f", beyond="n/a") == "n/a [n/a, 7.0]"
    assert format_ci(0.5, 0.25, float("inf"), fmt=".2f") == "0.50 [0.25, > run]"


def test_force_vs_stability_table_rows_and_refusals():
    from ase_mlff.metrics.stability import force_vs_stability, force_vs_stability_table

    t = np.array([10.0, 20.0, NAN, NAN])
    s = survival_summary(t, np.isnan(t), 100.0)
    models = {
        "full": {
            "forces_mae": 0.0123,
            "forces_max_err": 0.25,
            "fnm_mae": 0.00456,
            "h_r_mae": 0.0789,
            **s,
        },
        "bare": {"forces_mae": 0.02, "t_inst_mean_fs": 321.4},
        "mid": {
            "forces_mae": 0.015,
            "t_inst_mean_fs": 50.0,
            "fraction_stable": 0.5,
            "n_replicas": 4,
        },
    }
    table = force_vs_stability_table(force_vs_stability(models))
    lines = table.splitlines()
    assert [line.split(" | ")[0] for line in lines[2:5]] == ["| bare", "| mid", "| full"]
    ci = f"{s['fraction_stable_lo']:.2f}, {s['fraction_stable_hi']:.2f}"
    rmst = f"{s['rmst_fs']:.0f} [{s['rmst_fs_lo']:.0f}, {s['rmst_fs_hi']:.0f}]"
    assert lines[4] == f"| full | 12.3 | 250.0 | 4.56 | 2/4 [{ci}] | {rmst} | 0.079 |"
    assert lines[2] == "| bare | 20.0 | nan | nan | — | 321 | nan |"
    assert lines[3] == "| mid | 15.0 | nan | nan | 2/4 | 50 | nan |"
    # Spearman by hand: F-MAE ranks full 1, mid 2, bare 3; RMST ranks mid 1, full 2, bare 3
    p = stats.spearmanr([0.0123, 0.02, 0.015], [s["rmst_fs"], 321.4, 50.0]).pvalue
    assert lines[6] == f"- forces_mae vs mean t_inst: Spearman ρ = 0.50 (p = {p:.2g})"
    with pytest.raises(ValueError, match="^no models to compare$"):
        force_vs_stability({})
    with pytest.raises(ValueError, match=r"^model 'x' lacks \['t_inst_mean_fs'\]$"):
        force_vs_stability({"x": {"forces_mae": 0.1}})


def test_boundaries_of_the_input_checks():
    """Exactly at the limits: a t_inst or censoring time of τ(1 + 1e-9) is accepted, just
    beyond it refused; censoring at 0 and run lengths below 1 fs are valid."""
    from dataclasses import FrozenInstanceError

    edge = 10.0 * (1 + 1e-9)
    assert kaplan_meier([edge], [False], 10.0).times.tolist() == [10.0]
    assert kaplan_meier([NAN], [True], 10.0, censor_fs=[edge]).times.tolist() == [10.0]
    with pytest.raises(ValueError, match="past the run length"):
        kaplan_meier([10.0 * (1 + 1.5e-9)], [False], 10.0)
    with pytest.raises(ValueError, match="past the run length"):
        kaplan_meier([NAN], [True], 10.0, censor_fs=[10.0 * (1 + 1.5e-9)])
    c = kaplan_meier([NAN, NAN, 0.3], [True, True, False], 0.5, censor_fs=[0.0, 0.2, NAN])
    np.testing.assert_array_equal(c.times, [0.0, 0.2, 0.3])
    np.testing.assert_array_equal(c.n_at_risk, [3, 2, 1])
    assert c.evaluate(0.4) == 0.0
    km = kaplan_meier([5.0, NAN], [False, True], 10.0)
    with pytest.raises(FrozenInstanceError):
        km.total_fs = 20.0  # an estimate is a result: read-only
    # Greenwood's variance is undefined (0·∞) once S = 0, finite before
    var = kaplan_meier([1.0, 2.0], [False, False], 5.0).greenwood_variance()
    assert np.isfinite(var[0]) and np.isnan(var[1])


def test_band_limits_where_survival_is_one_or_falls_to_zero_at_once():
    """Where S = 1 (a replica censored before any instability) the band is [1, 1]; when
    every replica fails at the first event S = 0 at once and the upper limit is the
    previous one, 1."""
    km = kaplan_meier([NAN, 6.0, 8.0], [True, False, False], 10.0, censor_fs=[2.0, NAN, NAN])
    assert km.times[0] == 2.0 and km.survival[0] == 1.0
    assert (km.lower[0], km.upper[0]) == (1.0, 1.0)
    assert not np.isnan(np.concatenate([km.lower, km.upper])).any()
    allfail = kaplan_meier([5.0, 5.0, 5.0], [False] * 3, 10.0)
    assert (allfail.survival[0], allfail.lower[0], allfail.upper[0]) == (0.0, 0.0, 1.0)


def test_rmst_variance_with_interior_censoring_and_a_short_tau():
    """Σ A_i² d_i/(n_i(n_i − d_i)) goes on past a censoring-only time; τ' below 1 fs is
    valid."""
    km = kaplan_meier(
        [NAN, 4.0, 6.0, NAN], [True, False, False, True], 10.0, censor_fs=[2.0, NAN, NAN, 10.0]
    )
    # S: 1 on [0, 4), 2/3 on [4, 6), 1/3 on [6, 10]; at risk 3 at t=4, 2 at t=6
    area, var = km.rmst()
    assert area == pytest.approx(4 + 2 * 2 / 3 + 4 / 3)
    a4, a6 = 2 * 2 / 3 + 4 / 3, 4 / 3
    assert var == pytest.approx(a4**2 / (3 * 2) + a6**2 / (2 * 1))
    assert km.rmst(0.5) == (0.5, 0.0)


def test_wilson_default_and_holm_cap_and_logrank_in_either_order():
    from ase_mlff.metrics.stability import holm_adjust, wilson_interval

    ci = stats.binomtest(3, 10).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(3, 10) == pytest.approx((ci.low, ci.high), rel=1e-12)
    np.testing.assert_allclose(holm_adjust(np.array([0.6, 0.9])), [1.0, 1.0])  # 1.2 capped at 1
    early = (np.linspace(1, 10, 20), np.zeros(20, bool))
    late = (np.full(20, NAN), np.ones(20, bool))
    ab = pairwise_logrank({"early": early, "late": late}, 50.0)[0]
    ba = pairwise_logrank({"late": late, "early": early}, 50.0)[0]
    assert ba["p_value"] == pytest.approx(ab["p_value"], rel=1e-12) and ba["p_value"] < 0.01
    assert ba["statistic"] == pytest.approx(-ab["statistic"], rel=1e-12)
    # a single instability in all is still tested (not taken as "no evidence")
    one = pairwise_logrank(
        {"a": ([3.0, NAN], [False, True]), "b": ([NAN, NAN], [True, True])}, 10.0
    )
    ref = stats.logrank(
        stats.CensoredData(uncensored=[3.0], right=[10.0]), stats.CensoredData(right=[10.0, 10.0])
    )
    assert one[0]["p_value"] == pytest.approx(ref.pvalue, rel=1e-12) and one[0]["p_value"] < 1


def test_survival_curve_default_grid_and_tables_of_several_rows():
    from ase_mlff.metrics.stability import force_vs_stability, logrank_markdown

    times, frac = survival_curve([5.0], [False], 10.0)
    assert len(times) == len(frac) == 200
    rows = [
        {"a": "x", "b": "y", "statistic": 1.0, "p_value": 0.5, "p_holm": 1.0},
        {"a": "x", "b": "z", "statistic": -3.0, "p_value": 0.002, "p_holm": 0.004},
    ]
    lines = logrank_markdown(rows).splitlines()
    assert lines[2:] == ["| x | y | 1.00 | 0.5 | 1 |", "| x | z | -3.00 | 0.002 | 0.004 |"]
    # every force metric present is correlated, also after one that is missing
    models = {
        n: {"forces_mae": m, "fnm_mae": f, "fnm_max_err": g, "t_inst_mean_fs": t}
        for n, m, f, g, t in (
            ("a", 0.1, 0.01, 0.3, 500.0),
            ("b", 0.2, 0.03, 0.2, 300.0),
            ("c", 0.3, 0.02, 0.1, 100.0),
        )
    }
    corr = force_vs_stability(models)["correlation"]
    assert set(corr) == {"forces_mae", "fnm_mae", "fnm_max_err"}
    assert corr["fnm_mae"]["spearman_rho"] == pytest.approx(
        stats.spearmanr([0.01, 0.03, 0.02], [500, 300, 100]).statistic
    )
    assert corr["fnm_max_err"]["spearman_rho"] == pytest.approx(1.0)


def test_force_vs_stability_table_formats_and_degenerate_correlations():
    """The table's header, three-decimal digits of the force columns (meV), a row with a
    stable fraction but no replica count (shown as —), one correlation line per metric; a
    rank correlation is NaN (p too) for fewer than three models or a constant column, and
    computed when a column spans exactly 1."""
    from ase_mlff.metrics.stability import force_vs_stability, force_vs_stability_table

    models = {
        "a": {"forces_mae": 0.5, "fnm_mae": 0.0025, "t_inst_mean_fs": 100.0},
        "b": {"forces_mae": 1.0, "fnm_mae": 0.5, "t_inst_mean_fs": 101.0},
        "c": {
            "forces_mae": 0.0,
            "fnm_mae": 1.0,
            "t_inst_mean_fs": 100.5,
            "fraction_stable": 0.5,
            "fraction_stable_lo": 0.1,
            "fraction_stable_hi": 0.9,
        },
    }
    res = force_vs_stability(models)
    lines = force_vs_stability_table(res).splitlines()
    assert lines[0] == (
        "| model | F-MAE (meV/Å) | F max-err (meV/Å) | FNM-MAE (meV/Å/u) | stable [95 % CI] | "
        "mean t_inst = RMST (fs) [95 % CI] | h(r) MAE (0–10 Å, 0.02 Å bins) |"
    )
    assert lines[2] == "| b | 1000.0 | nan | 500.00 | — | 101 | nan |"
    assert lines[3] == "| a | 500.0 | nan | 2.50 | — | 100 | nan |"
    assert lines[4] == "| c | 0.0 | nan | 1000.00 | — | 100 | nan |"
    assert [line[:22] for line in lines[6:]] == ["- forces_mae vs mean t", "- fnm_mae vs mean t_in"]
    # forces_mae spans exactly 1 (0 to 1) and t_inst exactly 1 fs (100 to 101): computed
    for key, x in (("forces_mae", [0.5, 1.0, 0.0]), ("fnm_mae", [0.0025, 0.5, 1.0])):
        ref = stats.spearmanr(x, [100.0, 101.0, 100.5])
        assert res["correlation"][key]["spearman_rho"] == pytest.approx(ref.statistic)
        assert res["correlation"][key]["p_value"] == pytest.approx(ref.pvalue)
    flat = {k: {**v, "forces_mae": 0.2} for k, v in models.items()}
    for corr in (
        force_vs_stability(flat)["correlation"]["forces_mae"],
        force_vs_stability({k: models[k] for k in "ab"})["correlation"]["forces_mae"],
    ):
        assert math.isnan(corr["spearman_rho"]) and math.isnan(corr["p_value"])
