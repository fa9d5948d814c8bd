"""Survival statistics of stability studies: Kaplan–Meier with right-censoring at the run
length, Greenwood / log-log band, median and RMST with CIs, Wilson interval, log-rank with
Holm, and what the study writer puts on disk. Expected values are computed by hand or by
independent code here, never by the functions under test."""

import csv
import json
import math

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
    from ase_mlff.agents.study import StudyResult, _write, summarize_study

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
    _write(res, {"steps": 100, "dt": 0.5})

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
    from ase_mlff.metrics.stability import survival_figure

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


def test_comparison_table_shows_intervals_and_logrank():
    from ase_mlff.agents.comparison import SURVIVAL_KEYS, _best, comparison_markdown

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
    assert _best(rows) == "m2"  # the selection criterion still works on these keys


def test_holm_step_down_keeps_adjusted_p_monotone():
    from ase_mlff.metrics.stability import _holm

    # sorted 0.01, 0.03, 0.04 -> ×3, ×2, ×1 = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06
    np.testing.assert_allclose(_holm(np.array([0.01, 0.04, 0.03])), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(_holm(np.array([0.5, 0.9])), [1.0, 1.0])  # capped at 1


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
