"""The combustion_fes study (paper 001 Fig. 4): state classification by geometry, the FES
comparison against the reference, and a tiny end-to-end run of the recipe (MLFF walkers
beside spGFN2-xTB walkers, HILLS files, MLflow)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ase_mlff.agents import combustion_fes as cf


def _frame(d_oh, d_oo, d_o2h=None):
    """O1 at 0, O2 on x, H in the plane at d_oh from O1 (and far from O2 unless given)."""
    h = np.array([-d_oh, 0.0, 0.0]) if d_o2h is None else None
    if h is None:  # H placed at d_o2h from O2 and d_oh from O1
        x = (d_oh**2 - d_o2h**2 + d_oo**2) / (2 * d_oo)
        h = np.array([x, math.sqrt(max(d_oh**2 - x**2, 0.0)), 0.0])
    return np.array([[0.0, 0, 0], [d_oo, 0, 0], h])


def test_states_are_read_from_the_geometry():
    pos = np.stack(
        [
            _frame(0.98, 1.31),  # HO2
            _frame(3.0, 1.21),  # H + O2
            _frame(2.2, 1.30, d_o2h=0.99),  # H moved to O2: still HO2
            _frame(3.0, 2.4),  # O2 broken
            _frame(0.4, 1.3),  # H pushed onto O1
            _frame(0.98, 2.0),  # hot HO2, O-O stretched to 2.0 Å: not broken (2.2 Å)
        ]
    )
    s = cf.states(pos)
    assert s["HO2"].tolist() == [True, False, True, False, False, True]
    assert s["H + O2"].tolist() == [False, True, False, False, False, False]
    assert s["O2 broken"].tolist() == [False, False, False, True, False, False]
    assert s["contact"].tolist() == [False, False, False, False, True, False]
    np.testing.assert_allclose(s["d_OO"], [1.31, 1.21, 1.30, 2.4, 1.3, 2.0])
    np.testing.assert_allclose(s["r_H"][:3], [0.98, 3.0, 0.99])


def test_fes_errors_ignore_a_constant_and_see_a_real_difference():
    o2h, o1h = np.meshgrid(cf.GRID_OH, cf.GRID_OH, indexing="ij")
    ref = 200.0 * (np.minimum(o1h, o2h) - 1.0) ** 2 + 20.0 * (np.abs(o1h - o2h) - 0.9) ** 2
    same = cf.fes_errors(ref + 7.0, ref)
    assert same["mae_F_kj"] == pytest.approx(0.0, abs=1e-9)
    assert same["mae_F_r_kj"] == pytest.approx(0.0, abs=1e-9)
    tilted = cf.fes_errors(ref + 10.0 * (o1h - 1.0), ref)
    assert tilted["mae_F_kj"] > 1.0 and tilted["dF_reaction_kj"] > same["dF_reaction_kj"]
    # ΔF between the states' integrated F: one HO2 cell at 0 and two H + O2 cells at 100
    # kJ/mol -> 100 − kT ln 2; a cell beyond the walls (r = 3.0, far = 4.5 Å) is not H + O2
    kt = 8.314462618e-3 * 300.0
    f = np.full_like(ref, 1e4)
    at = {round(float(x), 2): k for k, x in enumerate(cf.GRID_OH)}
    f[at[2.0], at[1.0]] = 0.0  # H on O1: HO2
    f[at[3.5], at[2.6]] = f[at[2.6], at[3.5]] = 100.0  # H + O2, within the walls
    assert cf.reaction_free_energy(f) == pytest.approx(100.0 - kt * np.log(2.0), abs=1e-5)
    f[at[4.5], at[3.0]] = 0.0  # past the wall on d(O2-H3)
    assert cf.reaction_free_energy(f) == pytest.approx(100.0 - kt * np.log(2.0), abs=1e-5)


def test_the_profile_is_along_the_distance_to_the_nearer_oxygen():
    """F(r), r = min(d(O1–H3), d(O2–H3)): HO2 with its H on O1 and on O2 is one basin at
    r ≈ 1 Å (the map and its mirror give one profile), and F(r) sums the cells of equal r."""
    o2h, o1h = np.meshgrid(cf.GRID_OH, cf.GRID_OH, indexing="ij")
    well = 400.0 * ((o1h - 1.0) ** 2 + (o2h - 2.0) ** 2)  # H on O1
    p1, p2 = cf.profile_oh(well), cf.profile_oh(well.T)  # and on O2
    np.testing.assert_allclose(p1, p2, atol=1e-9)
    assert cf.GRID_OH[np.argmin(p1)] == pytest.approx(1.0)
    # a sum over each strip of equal r, not a mean or a minimum: two cells at 0 kJ/mol with
    # r = 1.5 Å against one with r = 2.0 Å -> F(2.0) − F(1.5) = kT ln 2
    kt = 8.314462618e-3 * 300.0
    cells = np.full_like(well, 1e4)
    i, j, k = (int(np.argmin(np.abs(cf.GRID_OH - x))) for x in (1.5, 3.0, 2.0))
    cells[i, j] = cells[j, i] = cells[k, j] = 0.0  # r = 1.5 twice (mirror), r = 2.0 once
    p = cf.profile_oh(cells)
    assert p[i] == pytest.approx(0.0, abs=1e-9)
    assert p[k] - p[i] == pytest.approx(kt * np.log(2.0), abs=1e-5)
    assert np.delete(p, [i, k]).min() > 5e3


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from ase_mlff.recipes import combustion_fes

    out = tmp_path_factory.mktemp("cfes")
    argv = ["--n-train", "40", "--n-val", "10", "--n-pretrain", "60", "--md-steps", "400"]
    argv += ["--replicas", "2", "--out", str(out), "--tracking-uri", f"sqlite:///{out}/m.db"]
    argv += ["--pretrain-minutes", "0.05", "--finetune-minutes", "0.05"]
    return out, combustion_fes.main(argv)


def test_the_recipe_runs_end_to_end_with_the_reference_walkers(quick_run):
    out, results = quick_run
    models = results["models"]
    assert set(models) == {"spGFN2-xTB", "scratch", "ffpt"}
    assert "test" not in models["spGFN2-xTB"] and "test" in models["scratch"]
    for r in models.values():
        assert r["survival"]["n_replicas"] == 2 and len(r["t_unphysical_fs"]) == 2
    ref_hills = (out / "md_spGFN2-xTB" / "HILLS.0").read_text().splitlines()
    assert ref_hills[0].startswith("#! FIELDS time distance0 distance1 sigma_distance0")
    assert len([ln for ln in ref_hills if not ln.startswith("#")]) == 4  # every 100 steps
    maps = np.load(out / "fes_maps.npz")
    assert maps["spGFN2-xTB"].shape == (len(cf.GRID_OH), len(cf.GRID_OH))
    saved = json.loads((out / "results.json").read_text())
    assert saved["protocol"]["metadynamics"]["sigma_A"] == 0.5
    assert (out / "figures" / "fes.png").exists() and (out / "comparison.md").exists()


def test_walker_outcomes_count_a_broken_walker_as_failed():
    """The first unphysical frame is a walker's t_inst; a walker stopped by broken numbers
    before any unphysical frame fails at that stop (not 'stable')."""
    from types import SimpleNamespace

    t = np.array([0.0, 20.0, 40.0])
    calm = np.stack([_frame(0.98, 1.31)] * 3)
    broken_o2 = np.stack([_frame(0.98, 1.31), _frame(3.0, 2.5), _frame(3.0, 2.6)])

    def rep(pos, t_inst=float("nan"), reason=None):
        return SimpleNamespace(
            positions_tn3=pos, times_fs=t, t_inst_fs=t_inst, reason=reason, stable=reason is None
        )

    run = SimpleNamespace(
        steps=300,
        dt_fs=0.2,
        replicas=[rep(calm), rep(broken_o2), rep(calm[:2], 30.0, "non_finite")],
    )
    out = cf.walker_outcomes(run)
    assert out["t_unphysical_fs"][0] != out["t_unphysical_fs"][0]  # NaN: never
    assert out["t_unphysical_fs"][1:] == [20.0, 30.0]
    assert out["survival"]["n_unstable"] == 2
    assert out["fractions"]["O2 broken"] == pytest.approx(2 / 8)
