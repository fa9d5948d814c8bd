"""Batched Berendsen NPT (paper 004 § 2.4.1) against ASE's NPTBerendsen."""

import json
import re

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.constraints import FixCom
from ase.md.nptberendsen import Inhomogeneous_NPTBerendsen, NPTBerendsen
from ase.md.nvtberendsen import NVTBerendsen

from ase_mlff.calculators import MLFFCalculator
from ase_mlff.data.io import SHIPPED_DIR
from ase_mlff.md.integrators import instantaneous_pressure_bar, npt_berendsen_step
from ase_mlff.md.state import init_state
from ase_mlff.models import EAM

torch.set_num_threads(1)  # as the other MD test modules: no thread contention on 2 cores

A0 = 3.06  # near the zero-pressure lattice constant of this (initial, binding-Morse) EAM


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = EAM(species=[29], cutoff=5.0).double()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _cu(scale=1.0, seed=0):
    a = bulk("Cu", "fcc", A0 * scale, cubic=True) * (2, 2, 2)  # 32 atoms
    a.rattle(0.02, seed=seed)
    return a


def _volumes(state):
    return torch.linalg.det(state.batch.cell_s33).abs()


def test_volume_relaxes_towards_target_pressure(model):
    # one batch: a compressed and an expanded replica, each with its own cell
    state = init_state(model, [_cu(0.95), _cu(1.05, seed=1)], temperature_K=300.0, seed=0)
    # copper's compressibility: this EAM is as stiff as a metal (±5 % strain is ~10⁶ bar)
    kw = dict(
        dt=2.0, temperature_K=300.0, taut=100.0, pressure_bar=0.0, taup=200.0, compressibility=7e-7
    )
    state = npt_berendsen_step(state, model, **kw)
    p_start = instantaneous_pressure_bar(state)
    assert p_start[0] > 0 > p_start[1]
    v0 = _volumes(state)
    for _ in range(30):
        state = npt_berendsen_step(state, model, **kw)
    v1 = _volumes(state)
    assert v1[0] > v0[0] and v1[1] < v0[1]
    p_end = instantaneous_pressure_bar(state)
    assert (p_end.abs() < p_start.abs()).all()
    # each cell stays cubic (isotropic scaling)
    c = state.batch.cell_s33
    off = c - torch.diag_embed(torch.diagonal(c, dim1=1, dim2=2))
    assert off.abs().max() < 1e-12


def test_anisotropic_scales_cell_vectors_separately(model):
    """Each cell vector follows its own pressure component (an isotropic barostat would
    scale all three alike)."""
    from ase_mlff.md.integrators import instantaneous_stress

    a = _cu()
    a.set_cell(a.cell * np.array([0.95, 1.0, 1.05])[:, None], scale_atoms=True)
    state = init_state(model, [a], temperature_K=0.0, seed=0)
    kw = dict(
        dt=2.0, temperature_K=10.0, taut=100.0, taup=200.0, anisotropic=True, compressibility=7e-7
    )
    state = npt_berendsen_step(state, model, **kw)
    p_axes = -torch.diagonal(instantaneous_stress(state)[0])  # pressure along x, y, z
    c0 = state.batch.cell_s33[0].diagonal().clone()
    for _ in range(10):
        state = npt_berendsen_step(state, model, **kw)
    ratio = state.batch.cell_s33[0].diagonal() / c0
    assert ((ratio - 1.0) * p_axes > 0).all()  # each axis grows under its own pressure
    assert len(set(torch.sign(p_axes).tolist())) == 2  # and they differ in sign here
    assert float(ratio.max() - ratio.min()) > 1e-3


@pytest.mark.parametrize("off", [dict(compressibility=0.0), dict(taup=float("inf"))])
def test_no_coupling_keeps_the_volume(model, off):
    state = init_state(model, [_cu(0.95)], temperature_K=300.0, seed=0)
    v0 = _volumes(state)
    kw = dict(dt=2.0, temperature_K=300.0, taut=100.0, **off)
    for _ in range(5):
        state = npt_berendsen_step(state, model, **kw)
    assert torch.equal(_volumes(state), v0)


def test_molecules_are_refused(model):
    cluster = Atoms("Cu4", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0], [0, 0, 2.5]])
    state = init_state(model, [cluster], temperature_K=0.0, seed=0)
    message = (
        "NPT needs every replica periodic in 3-D with a cell; molecules (no cell) "
        "cannot be simulated at constant pressure — use an NVT/NVE integrator"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        npt_berendsen_step(state, model, dt=1.0, temperature_K=300.0)
    crystal = init_state(model, [_cu()], temperature_K=0.0, seed=0)
    with pytest.raises(ValueError, match="^barostat_every must be positive$"):
        npt_berendsen_step(crystal, model, dt=1.0, temperature_K=300.0, barostat_every=0)


@pytest.mark.parametrize("anisotropic", [False, True])
def test_matches_ase_nptberendsen(model, anisotropic):
    start = _cu(0.97)
    state = init_state(model, [start], temperature_K=600.0, seed=3)
    atoms = start.copy()
    atoms.set_velocities(state.vel_nc.numpy())  # Å per ASE time unit, as ASE
    atoms.set_constraint(FixCom())  # 3N-3 degrees of freedom, as the batched thermostat
    atoms.calc = MLFFCalculator(model)
    dt, taut, taup, beta, p0 = 2.0, 50.0, 100.0, 1e-4, 1000.0
    cls = Inhomogeneous_NPTBerendsen if anisotropic else NPTBerendsen
    dyn = cls(
        atoms,
        dt * units.fs,
        temperature_K=1000.0,
        taut=taut * units.fs,
        taup=taup * units.fs,
        pressure_au=p0 * 1e5 * units.Pascal,
        compressibility_au=beta / (1e5 * units.Pascal),
    )
    kw = dict(
        dt=dt,
        temperature_K=1000.0,
        taut=taut,
        taup=taup,
        pressure_bar=p0,
        compressibility=beta,
        anisotropic=anisotropic,
    )
    for _ in range(5):
        dyn.run(1)
        state = npt_berendsen_step(state, model, **kw)
    assert not np.allclose(atoms.cell[:], start.cell[:])  # the cell did move
    np.testing.assert_allclose(state.batch.cell_s33[0].numpy(), atoms.cell[:], atol=1e-9)
    np.testing.assert_allclose(state.batch.pos_nc.numpy(), atoms.positions, atol=1e-8)
    np.testing.assert_allclose(state.vel_nc.numpy(), atoms.get_velocities(), atol=1e-8)


def test_run_md_npt_records_the_cell_per_frame(model, tmp_path):
    from ase_mlff.md.runner import run_md
    from ase_mlff.md.storage import read_replica

    kw = dict(
        steps=20,
        dt=2.0,
        integrator="npt_berendsen",
        temperature_K=300.0,
        taut=100.0,
        taup=200.0,
        compressibility=7e-7,
        detectors=[],
        check_every=5,
        record_every=5,
    )
    images = [_cu(0.95), _cu(1.05, seed=1)]
    run = run_md(model, images, traj_dir=tmp_path / "a", **kw)
    vol = [np.abs(np.linalg.det(r.cell_t33)) for r in run.replicas]
    assert vol[0][-1] > vol[0][0] and vol[1][-1] < vol[1][0]
    stored = read_replica(tmp_path / "a", 0)
    assert len(stored) == len(run.replicas[0].cell_t33) == 5
    np.testing.assert_allclose([a.cell[:] for a in stored], run.replicas[0].cell_t33)
    np.testing.assert_allclose([a.positions for a in stored], run.replicas[0].positions_tn3)
    assert run.settings["pressure_bar"] == 0.0 and run.settings["taup"] == 200.0

    # a run killed after a checkpoint resumes bit-identically, cells included
    half = run_md(model, images, traj_dir=tmp_path / "b", checkpoint_every=10, **kw | {"steps": 10})
    assert half.replicas[0].cell_t33.shape[0] == 3
    # continue it to 20 steps (the checkpoint records steps=10: rewrite that setting)
    ckpt_dir = tmp_path / "b"
    summary = json.loads((ckpt_dir / "summary.json").read_text())
    summary["settings"]["steps"] = 20
    (ckpt_dir / "summary.json").write_text(json.dumps(summary))
    data = torch.load(ckpt_dir / "md_state.pt", weights_only=True)
    data["settings"]["steps"] = 20
    torch.save(data, ckpt_dir / "md_state.pt")
    full = run_md(model, images, traj_dir=ckpt_dir, checkpoint_every=10, **kw)
    for r_full, r_ref in zip(full.replicas, run.replicas):
        np.testing.assert_array_equal(r_full.cell_t33, r_ref.cell_t33)
        np.testing.assert_array_equal(r_full.positions_tn3, r_ref.positions_tn3)


# ------------------------------------------------------------------ α-quartz (triclinic)
@pytest.fixture(scope="module")
def silica_model():
    torch.manual_seed(0)
    m = EAM(species=[8, 14], cutoff=5.0).double()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _quartz():
    """The shipped GFN1-relaxed α-quartz: 36 atoms, two elements, a hexagonal (120°) cell
    with small off-diagonal terms, so rows and columns of the cell differ."""
    frames = ase.io.read(SHIPPED_DIR / "silica_gfn1_polymorphs.xyz", ":")
    a = next(f for f in frames if f.info.get("polymorph") == "alpha_quartz")
    a.rattle(0.02, seed=0)
    return a


def _ase_npt_pair(atoms, anisotropic, dt, taut, taup, beta, p0, temp, every=1):
    """ASE's NPTBerendsen (or Inhomogeneous_) with τ_P / k for the barostat steps, and
    NVTBerendsen (the same step without the cell scaling) for the steps in between."""
    cls = Inhomogeneous_NPTBerendsen if anisotropic else NPTBerendsen
    baro = cls(
        atoms,
        dt * units.fs,
        temperature_K=temp,
        taut=taut * units.fs,
        taup=taup / every * units.fs,  # the scaling then uses k·Δt/τ_P
        pressure_au=p0 * 1e5 * units.Pascal,
        compressibility_au=beta / (1e5 * units.Pascal),
    )
    nvt = NVTBerendsen(atoms, dt * units.fs, temperature_K=temp, taut=taut * units.fs)
    return baro, nvt


@pytest.mark.parametrize("anisotropic", [False, True])
@pytest.mark.parametrize("every", [1, 3])
def test_quartz_matches_ase_nptberendsen(silica_model, anisotropic, every):
    """50 steps of α-quartz (triclinic cell, Si and O of different masses) against ASE's
    NPTBerendsen / Inhomogeneous_NPTBerendsen: cell, positions and velocities to 1e-8.
    With ``barostat_every=k`` the cell stays exactly fixed between barostat steps, and a
    barostat step equals ASE's with Δt/τ_P replaced by kΔt/τ_P (τ_P / k in ASE), the
    steps in between ASE's NVTBerendsen."""
    start = _quartz()
    state = init_state(silica_model, [start], temperature_K=600.0, seed=3)
    atoms = start.copy()
    atoms.set_velocities(state.vel_nc.numpy())
    atoms.set_constraint(FixCom())
    atoms.calc = MLFFCalculator(silica_model)
    dt, taut, taup, beta, p0, temp = 2.0, 50.0, 100.0, 2e-5, 1000.0, 1000.0
    baro, nvt = _ase_npt_pair(atoms, anisotropic, dt, taut, taup, beta, p0, temp, every)
    kw = dict(
        dt=dt,
        temperature_K=temp,
        taut=taut,
        taup=taup,
        pressure_bar=p0,
        compressibility=beta,
        anisotropic=anisotropic,
        barostat_every=every,
    )
    cells = [state.batch.cell_s33[0].clone()]
    for n in range(50):
        (baro if n % every == 0 else nvt).run(1)
        state = npt_berendsen_step(state, silica_model, **kw)
        cells.append(state.batch.cell_s33[0].clone())
        np.testing.assert_allclose(cells[-1].numpy(), atoms.cell[:], rtol=0, atol=1e-9)
    assert np.abs(atoms.cell[:] - start.cell[:]).max() > 1e-2  # the cell did move
    np.testing.assert_allclose(state.batch.pos_nc.numpy(), atoms.positions, rtol=0, atol=1e-8)
    np.testing.assert_allclose(state.vel_nc.numpy(), atoms.get_velocities(), rtol=0, atol=1e-8)
    moved = [not torch.equal(cells[n + 1], cells[n]) for n in range(50)]
    assert moved == [n % every == 0 for n in range(50)]
    if anisotropic:  # the three cell vectors were scaled by different factors
        ratio = np.linalg.norm(atoms.cell[:], axis=1) / np.linalg.norm(start.cell[:], axis=1)
        assert np.ptp(ratio) > 1e-4


def test_instantaneous_pressure_and_berendsen_factors_against_ase(model):
    """The pressure of replicas with velocities is ASE's -tr(σ)/3 with the ideal-gas term
    (``get_stress(include_ideal_gas=True)``), in bar; the Berendsen velocity factors are
    √(1 + (T₀/T − 1) dt/τ_T) clipped to [0.9, 1.1] as in ASE, for a cold and a hot replica;
    a state without stress is refused by name."""
    from ase_mlff.md.integrators import berendsen_velocity_scale, instantaneous_stress

    starts = [_cu(0.97), _cu(1.03, seed=1), _cu(1.0, seed=2)]
    state = init_state(model, starts, temperature_K=600.0, seed=4)
    with pytest.raises(ValueError, match=r"^the state carries no stress \(start NPT with"):
        instantaneous_stress(state)
    kw = dict(dt=1.0, temperature_K=600.0, taut=100.0, taup=1e9, compressibility=0.0)
    state = npt_berendsen_step(state, model, **kw)
    p = instantaneous_pressure_bar(state).numpy()
    for k, a in enumerate(starts):
        a = a.copy()
        n = len(a)
        a.positions = state.batch.pos_nc[k * n : (k + 1) * n].numpy()
        a.set_cell(state.batch.cell_s33[k].numpy())
        a.set_velocities(state.vel_nc[k * n : (k + 1) * n].numpy())
        a.calc = MLFFCalculator(model)
        ase_p = -np.trace(a.get_stress(voigt=False, include_ideal_gas=True)) / 3 / units.bar
        assert p[k] == pytest.approx(ase_p, rel=1e-9)
    assert p[0] > 0 > p[1]  # compressed and stretched copper
    scale = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    scale[0], scale[1] = (1.0 / 600.0) ** 0.5, (1e4 / 600.0) ** 0.5  # 1 K, 10,000 K, 600 K
    state.vel_nc = state.vel_nc * scale[state.batch.system_n][:, None]
    lam = berendsen_velocity_scale(state, dt=1.0, temperature_K=600.0, taut=2.0).numpy()
    t = state.temperature().numpy()
    raw = np.sqrt(1 + (600.0 / t - 1) * 1.0 / 2.0)
    np.testing.assert_allclose(lam, np.clip(raw, 0.9, 1.1), rtol=1e-12)
    assert lam[0] == 1.1 and lam[1] == 0.9 and 0.9 < lam[2] < 1.1  # both bounds reached
