"""Batched well-tempered metadynamics: the free energy recovered on an analytic double
well against the exact one, the bias formula by hand (periodic CVs included), walkers that
follow the replicas, hills that survive a killed run, and PLUMED's HILLS format."""

import numpy as np
import pytest
import torch
from ase import Atoms, units

from ase_mlff.graph import Batch
from ase_mlff.md.colvars import Dihedral, Distance
from ase_mlff.md.metadynamics import BiasedPotential, Metadynamics
from ase_mlff.md.runner import run_md
from ase_mlff.models.analytic import PairDoubleWell
from tests.conftest import CrashAfter

torch.set_num_threads(1)

R1, R2, A = 1.2, 1.8, 25.0  # two wells at 1.2 and 1.8 Å, barrier A (0.3 · 0.3)² = 0.2 eV


def DoubleWell():  # noqa: N802 - reads as the potential it builds
    return PairDoubleWell(A, R1, R2)


def _dimers(n):
    return [Atoms("C2", positions=[[0, 0, 0], [R1, 0, 0]]) for _ in range(n)]


def _shared_run(steps):
    """32 walkers sharing their hills, Langevin 300 K, 1 fs: (metadynamics, MD run)."""
    metad = _metad(shared=True)
    run = run_md(
        DoubleWell(),
        _dimers(32),
        steps=steps,
        dt=1.0,
        integrator="langevin",
        temperature_K=300.0,
        friction=0.01,
        detectors=[],
        metadynamics=metad,
        seed=1,
    )
    return metad, run


def _metad(**kw):
    args = dict(sigma=[0.03], height=0.005, pace=20, temperature_K=300.0, bias_factor=4.0)
    return Metadynamics([Distance(0, 1)], **{**args, **kw})


@pytest.fixture(scope="module")
def shared_run():
    """The 32-walker run of :func:`_shared_run` at 8,000 steps, made once for its tests."""
    return _shared_run(8000)


def test_well_tempered_free_energy_of_a_double_well_is_the_exact_one(shared_run):
    """32 walkers sharing their hills, 8,000 Langevin steps at 300 K: F(r) from the hills
    (−γ/(γ−1) V) equals U(r) − 2 k_B T ln r (the exact free energy along a distance in
    3-D, its Jacobian r² included) within issue 18's bar, 0.5 kJ/mol, in mean absolute and
    in rms error over 1.05–1.95 Å, all of which the walkers visit: the barrier (8 k_B T)
    and the walls up to 13 k_B T (measured over seeds 1-6: MAE 0.22-0.29, rms 0.29-0.39,
    largest 0.84-1.30 kJ/mol, at the r = 1.05 Å edge). Reading the hills as plain metadynamics
    (−V instead of −γ/(γ−1) V, γ = 4) misses the bar more than three times over: the test can fail.
    Reweighting the frames gives the same F; the unweighted histogram does not.
    (With 16 walkers, 8,000 steps: MAE 0.26-0.51 kJ/mol over seeds 1-6, seed 4 above
    the bar; hence 32.)"""
    metad, run = shared_run
    assert metad.centers.shape == (1, 32 * 400, 1)  # a hill per walker every 20 steps
    kt = units.kB * 300.0
    r = np.linspace(1.05, 1.95, 37)
    exact = A * ((r - R1) * (r - R2)) ** 2 - 2 * kt * np.log(r)
    err = metad.free_energy(r[:, None]) - (exact - exact.min())
    err -= err.mean()
    kj = err / (units.kJ / units.mol)  # eV -> kJ/mol (ASE)
    assert np.abs(kj).mean() <= 0.5 and np.sqrt(np.mean(kj**2)) <= 0.5
    assert np.abs(err).max() < 1.0 * kt
    plain = metad.free_energy(r[:, None]) * (1 - 1 / 4.0)  # −V instead of −γ/(γ−1) V
    wrong = plain - (exact - exact.min())
    wrong_kj = (wrong - wrong.mean()) / (units.kJ / units.mol)
    assert np.abs(wrong_kj).mean() > 1.0  # measured 1.7 kJ/mol: over three times the bar

    # the same F by reweighting the visited frames with exp((V(s,t) − c(t))/kT) (Tiwary &
    # Parrinello): the last 3/4 of every walker's recorded frames (every 20 fs)
    d = [
        np.linalg.norm(x.positions_tn3[:, 1] - x.positions_tn3[:, 0], axis=1) for x in run.replicas
    ]
    s, t = np.concatenate(d), np.concatenate([x.times_fs for x in run.replicas])
    keep = t > 1000.0
    edges = [np.linspace(1.05, 1.95, 37)]
    (centres,), f_rw = metad.reweighted_free_energy(s[keep, None], t[keep], edges)
    exact_c = A * ((centres - R1) * (centres - R2)) ** 2 - 2 * kt * np.log(centres)
    err = f_rw - exact_c
    assert np.isfinite(err).all()
    err -= err.mean()
    assert np.sqrt(np.mean(err**2)) < 0.5 * kt and np.abs(err).max() < 1.5 * kt
    biased, _ = np.histogram(s[keep], bins=edges[0])  # the biased, unweighted sampling
    raw = -kt * np.log(biased) - exact_c
    assert np.abs(raw - raw.mean()).max() > 3.0 * kt


def test_bias_and_well_tempered_heights_by_hand_with_a_periodic_cv():
    """V(s) = Σ w_k exp(−Δ²/(2σ²)) with Δ wrapped for a dihedral (a hill just below +π acts
    just above −π), and the second hill's height w0 exp(−V(s)/(k_B T (γ − 1)))."""
    metad = Metadynamics(
        [Dihedral(0, 1, 2, 3)],
        sigma=[0.2],
        height=0.01,
        pace=10,
        temperature_K=300.0,
        bias_factor=5.0,
    )

    def torsion(deg):
        t = np.radians(deg)
        pos = [[1, 0, 0], [0, 0, 0], [0, 0, 1.5], [np.cos(t), np.sin(t), 1.5]]
        return Atoms("C4", positions=pos)

    from ase_mlff.md.state import MDState

    batch = Batch.from_atoms([torsion(179.0)], cutoff=2.0, dtype=torch.float64)
    z = torch.zeros_like(batch.pos_nc)
    state = MDState(batch=batch, vel_nc=z, mass_n=z[:, 0] + 1, forces_nc=z, energy_s=z[:1, 0])
    metad.deposit(state)
    metad.deposit(state)
    kdt = units.kB * 300.0 * 4.0
    w2 = 0.01 * np.exp(-0.01 / kdt)
    np.testing.assert_allclose(metad.heights.numpy()[0], [0.01, w2], rtol=1e-12)
    s = torch.tensor([[np.radians(-179.0)], [np.radians(179.0)], [0.0]], dtype=torch.float64)
    d = np.radians(2.0)  # −179° is 2° from 179° across the seam
    want = (0.01 + w2) * np.array([np.exp(-0.5 * (d / 0.2) ** 2), 1.0, 0.0])
    want[2] = (0.01 + w2) * np.exp(-0.5 * (np.radians(179.0) / 0.2) ** 2)
    metad.shared = True  # evaluate the one walker's hills at three points
    np.testing.assert_allclose(metad.bias(s).numpy(), want, rtol=1e-12)


def test_independent_walkers_follow_their_replicas():
    """Each replica has its own hills; dropping replicas drops their hills, and a shared
    set stays whole."""
    from ase_mlff.md.state import MDState

    batch = Batch.from_atoms(_dimers(3), cutoff=2.0, dtype=torch.float64)
    z = torch.zeros_like(batch.pos_nc)
    state = MDState(batch=batch, vel_nc=z, mass_n=z[:, 0] + 1, forces_nc=z, energy_s=z[:3, 0])
    own, shared = _metad(), _metad(shared=True)
    for m in (own, shared):
        m.deposit(state)
        m.select(torch.tensor([True, False, True]), state)
    assert own.centers.shape == (2, 1, 1) and shared.centers.shape == (1, 3, 1)


@pytest.mark.parametrize("shared", [False, True])
def test_hills_survive_a_killed_run_and_are_written_as_plumed_hills(tmp_path, shared):
    """Killed after a checkpoint, then run again: the same hills and the same trajectory
    as an uninterrupted run, bit for bit, for independent and for shared walkers; the
    HILLS file has PLUMED's header and one line per hill."""
    kw = dict(steps=400, dt=1.0, integrator="langevin", temperature_K=300.0, detectors=[])
    ref = _metad(shared=shared)
    ref_run = run_md(DoubleWell(), _dimers(3), metadynamics=ref, traj_dir=tmp_path / "ref", **kw)
    with pytest.raises(RuntimeError, match="worker killed"):
        run_md(
            CrashAfter(DoubleWell(), 250),
            _dimers(3),
            metadynamics=_metad(shared=shared),
            traj_dir=tmp_path / "run",
            checkpoint_every=100,
            **kw,
        )
    resumed = _metad(shared=shared)
    run = run_md(
        DoubleWell(),
        _dimers(3),
        metadynamics=resumed,
        traj_dir=tmp_path / "run",
        checkpoint_every=100,
        **kw,
    )
    assert resumed.centers.shape == ref.centers.shape == ((1, 60, 1) if shared else (3, 20, 1))
    # a resume with other metadynamics (another CV, hill width, bias factor or wall) is
    # refused: the stored hills belong to the bias the run was made with
    others = (
        Metadynamics([Distance(1, 0)], sigma=[0.03], height=0.005, pace=20, temperature_K=300.0),
        _metad(shared=shared, sigma=[0.04]),
        _metad(shared=shared, bias_factor=6.0),
        _metad(shared=shared, upper_walls=[(0, 1.9, 1.0)]),
    )
    for other in others:
        with pytest.raises(ValueError, match="written by a run with other settings"):
            run_md(
                DoubleWell(),
                _dimers(3),
                metadynamics=other,
                traj_dir=tmp_path / "run",
                checkpoint_every=100,
                **kw,
            )
    assert torch.equal(resumed.centers, ref.centers) and torch.equal(resumed.heights, ref.heights)
    for a, b in zip(ref_run.replicas, run.replicas):
        np.testing.assert_array_equal(a.positions_tn3, b.positions_tn3)
    if shared:
        return
    path = resumed.write_hills(tmp_path / "HILLS", walker=1)
    lines = path.read_text().splitlines()
    assert lines[0] == "#! FIELDS time distance0 sigma_distance0 height biasf"
    rows = np.array([[float(x) for x in ln.split()] for ln in lines if not ln.startswith("#")])
    assert rows.shape == (20, 5)
    np.testing.assert_allclose(rows[:, 0], np.arange(1, 21) * 20.0)  # fs
    np.testing.assert_allclose(rows[:, 1], ref.centers[1, :, 0].numpy(), atol=1e-8)
    np.testing.assert_allclose(rows[:, 3], ref.heights[1].numpy(), rtol=1e-9)


def test_bad_metadynamics_settings_are_named():
    with pytest.raises(ValueError, match="one sigma per CV"):
        Metadynamics([Distance(0, 1)], sigma=[0.1, 0.2], height=0.01, pace=10, temperature_K=300)
    with pytest.raises(ValueError, match="the bias factor must be > 1"):
        _metad(bias_factor=1.0)
    with pytest.raises(ValueError, match="pace 15 must be a multiple of check_every 10"):
        run_md(DoubleWell(), _dimers(1), steps=20, detectors=[], metadynamics=_metad(pace=15))


def openmm_double_well_free_energy(steps: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The same double well and well-tempered settings (γ = 4, σ = 0.03 Å, w0 = 5 meV
    every 20 steps, 300 K, Langevin 1 fs) run by OpenMM's own ``app.Metadynamics`` on its
    Reference platform: (r grid in Å, F in eV)."""
    openmm = pytest.importorskip("openmm")
    from openmm import app, unit

    ev = 96.48533212331  # kJ/mol
    system = openmm.System()
    for _ in range(2):
        system.addParticle(12.011)
    well = openmm.CustomBondForce(f"{A * ev}*((10*r-{R1})*(10*r-{R2}))^2")  # r in nm
    well.addBond(0, 1, [])
    system.addForce(well)
    cv = openmm.CustomBondForce("r")
    cv.addBond(0, 1, [])
    bias = app.BiasVariable(cv, 0.100, 0.200, 0.003, False, gridWidth=181)
    meta = app.Metadynamics(
        system, [bias], 300.0 * unit.kelvin, 4.0, 0.005 * ev * unit.kilojoule_per_mole, 20
    )
    integ = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 10 / unit.picosecond, 0.001)
    integ.setRandomNumberSeed(seed)
    top = app.Topology()
    res = top.addResidue("DW", top.addChain())
    for _ in range(2):
        top.addAtom("C", app.element.carbon, res)
    platform = openmm.Platform.getPlatformByName("Reference")
    sim = app.Simulation(top, system, integ, platform)
    sim.context.setPositions(np.array([[0, 0, 0], [0.12, 0, 0]]) * unit.nanometer)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    meta.step(sim, steps)
    f = meta.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole) / ev
    return np.linspace(1.0, 2.0, 181), f


def test_free_energy_agrees_with_openmms_metadynamics(shared_run):
    """Ours (32 walkers sharing hills, 8,000 steps) against OpenMM's app.Metadynamics (one
    walker, 10⁶ steps) with the same well-tempered settings: the two F(r) agree to 0.5 k_B T
    rms and 1.25 k_B T at worst over 1.05–1.95 Å (each has its own sampling error), and
    OpenMM's agrees with the exact F to 0.2 k_B T rms."""
    r, f_omm = openmm_double_well_free_energy(1_000_000)
    metad, _ = shared_run
    kt = units.kB * 300.0
    sel = (r >= 1.05) & (r <= 1.95)
    ours = metad.free_energy(r[sel, None])
    exact = A * ((r[sel] - R1) * (r[sel] - R2)) ** 2 - 2 * kt * np.log(r[sel])
    # measured (seed 1, 32 walkers, 8,000 steps): 0.16 k_B T rms and 0.57 at worst
    # against OpenMM, 0.12 / 0.46 against exact; OpenMM against exact 0.08 / 0.28
    for other, rms_max, worst in ((f_omm[sel], 0.5, 1.25), (exact, 0.5, 1.0)):
        d = ours - other
        d -= d.mean()
        assert np.sqrt(np.mean(d**2)) < rms_max * kt and np.abs(d).max() < worst * kt
    d = f_omm[sel] - exact
    d -= d.mean()
    assert np.sqrt(np.mean(d**2)) < 0.2 * kt


def test_the_double_well_and_the_biased_potential_pass_the_shared_potential_checks():
    """Forces = −∇E (finite differences), stress of a periodic cell by strain, invariance
    under translation and rotation, batch = single, calculator = model: for the analytic
    double well alone and with a metadynamics bias of two shared hills on its distance
    (the bias force is part of the forces)."""
    from tests.potential_checks import check_potential

    free = [
        Atoms("C2", positions=[[0, 0, 0], [1.45, 0.1, 0.05]]),
        Atoms("CCH", positions=[[0, 0, 0], [0.2, 1.55, -0.1], [2.0, 0.3, 0.4]]),
    ]
    box = Atoms("C2", positions=[[0.2, 0.1, 5.7], [0.4, 0.3, 1.0]], pbc=True)
    box.set_cell([[6.0, 0, 0], [1.0, 6.5, 0], [0.5, -0.8, 6.2]])  # the pair across the wall
    check_potential(PairDoubleWell(A, R1, R2), free, [box], permutation=False)
    d = box.get_distance(0, 1, mic=True)  # ASE's minimum image (4.7 Å without it)
    assert d < 2.0 and PairDoubleWell(A, R1, R2)(
        Batch.from_atoms([box], cutoff=4.0, dtype=torch.float64)
    ).item() == pytest.approx(A * ((d - R1) * (d - R2)) ** 2, rel=1e-12)
    metad = _metad(shared=True)
    metad._start(1, 1, torch.float64, "cpu")
    metad.centers = torch.tensor([[[1.45], [1.6]]], dtype=torch.float64)
    metad.heights = torch.tensor([[0.02, 0.03]], dtype=torch.float64)
    biased = BiasedPotential(PairDoubleWell(A, R1, R2), metad)
    check_potential(biased, free, [box], permutation=False)


def test_walls_restrain_by_hand_and_stay_out_of_the_hills():
    """PLUMED's UPPER_WALLS/LOWER_WALLS with EXP=2: κ (s − at)² beyond ``at``, 0 inside;
    the bias force includes it (shared checks), hills and their free energy do not; a
    dimer pushed by hills stays below an upper wall; bad walls are named."""
    from tests.potential_checks import check_potential

    metad = _metad(shared=True, upper_walls=[(0, 1.7, 5.0)], lower_walls=[(0, 1.0, 2.0)])
    s = torch.tensor([[0.8], [1.3], [1.9]], dtype=torch.float64)
    np.testing.assert_allclose(metad.wall(s).numpy(), [2.0 * 0.2**2, 0.0, 5.0 * 0.2**2])
    assert metad.bias(s).abs().max() == 0  # no hills yet: the wall is not a hill
    free = [Atoms("C2", positions=[[0, 0, 0], [1.9, 0.1, 0.05]])]  # beyond the wall
    check_potential(BiasedPotential(PairDoubleWell(A, R1, R2), metad), free, permutation=False)

    def farthest(**walls):
        run = run_md(
            DoubleWell(),
            _dimers(4),
            steps=3000,
            dt=1.0,
            integrator="langevin",
            temperature_K=300.0,
            friction=0.01,
            detectors=[],
            metadynamics=_metad(height=0.05, **walls),
            seed=2,
            record_every=20,
        )
        return max(
            np.linalg.norm(r.positions_tn3[:, 1] - r.positions_tn3[:, 0], axis=1).max()
            for r in run.replicas
        )

    assert farthest() > 1.8  # the hills push the dimers past R2 = 1.8 Å
    assert farthest(upper_walls=[(0, 1.6, 20.0)]) < 1.75
    with pytest.raises(ValueError, match="wall"):
        _metad(upper_walls=[(1, 1.0, 1.0)])  # one CV only
