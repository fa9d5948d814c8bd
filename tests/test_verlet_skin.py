"""Verlet-skin neighbour lists (issue 19): the graph is reused while no atom has moved half
the skin, and energies, forces and MD trajectories equal those of a graph rebuilt at
every step, for every potential with a graph, molecular and periodic."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from ase.build import bulk

import ase_mlff.graph.batch as batch_module
from ase_mlff.graph import Batch
from ase_mlff.md.runner import run_md
from ase_mlff.models import EAM, PaiNN, SchNet, compute_properties
from ase_mlff.models.hybrid import HybridPotential
from tests.conftest import CrashAfter, random_species_model

SPECIES = [1, 6, 8, 14, 29]


def _models():
    torch.manual_seed(0)
    eam = EAM(species=SPECIES, cutoff=4.0)
    with torch.no_grad():
        for p in eam.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return {
        "painn": random_species_model(PaiNN, SPECIES, cutoff=4.0, hidden=16, n_interactions=2),
        "schnet": random_species_model(SchNet, SPECIES, cutoff=4.0, hidden=16, n_interactions=2),
        "eam": eam,
        "hybrid": HybridPotential(
            random_species_model(PaiNN, SPECIES, cutoff=3.0, hidden=8, n_interactions=1), eam
        ),
    }


def _out(model, batch):
    out = compute_properties(model, batch, forces=True, stress=batch.periodic)
    return {k: v.detach() for k, v in out.items() if v is not None}


@pytest.mark.parametrize("name", ["painn", "schnet", "eam", "hybrid"])
def test_skin_graph_gives_the_forces_of_a_fresh_graph(name, molecules, periodic_cells):
    """Moved by less than skin/2 the graph is kept (no rebuild) and energy, forces and
    stress equal those of a fresh graph; moved further it is rebuilt, and still equal."""
    model = _models()[name].double()
    rng = np.random.default_rng(0)
    for images in (molecules, periodic_cells):
        base = Batch.from_atoms(images, cutoff=model.cutoff, dtype=torch.float64)
        skin = base.with_skin(1.0)
        assert skin.edge_index_2e.shape[1] > base.edge_index_2e.shape[1]  # the extra shell
        for scale, kept in ((0.2, True), (0.9, False)):
            step = rng.normal(size=base.pos_nc.shape)
            step *= scale / np.linalg.norm(step, axis=1).max()  # largest move: scale Å
            pos = base.pos_nc + torch.as_tensor(step)
            moved = skin.with_positions(pos)
            assert (moved.edge_index_2e is skin.edge_index_2e) == kept
            got, ref = _out(model, moved), _out(model, base.with_positions(pos))
            for k in ref:
                torch.testing.assert_close(got[k], ref[k], rtol=1e-10, atol=1e-10)


def test_a_pair_jumping_into_range_forces_a_rebuild():
    """Two atoms 4.0 + 1.2 Å apart (outside cutoff + skin) brought to 3.5 Å in one move:
    the move exceeds skin/2, the graph is rebuilt and the pair interacts."""
    model = _models()["eam"].double()
    from ase import Atoms

    a = Atoms("CuCu", positions=[[0, 0, 0], [5.2, 0, 0]])
    b = Batch.from_atoms(a, cutoff=model.cutoff, dtype=torch.float64).with_skin(1.0)
    assert b.edge_index_2e.shape[1] == 0
    close = b.with_positions(torch.tensor([[0.0, 0, 0], [3.5, 0, 0]], dtype=torch.float64))
    assert close.edge_index_2e.shape[1] == 2
    f = _out(model, close)["forces"]
    assert float(f.abs().max()) > 1e-3


def _cu_cells(n=3):
    cells = []
    for k in range(n):
        a = bulk("Cu", "fcc", 3.06, cubic=True) * (2, 2, 2)
        a.rattle(0.03, seed=k)
        cells.append(a)
    return cells


def test_md_with_a_skin_follows_the_md_without_and_rebuilds_rarely(tmp_path, aspirin):
    """200 Langevin steps of periodic copper (EAM) and of aspirin (PaiNN) with a 1 Å skin
    follow the runs that rebuild the graph every step (to rounding), with far fewer
    builds; a run killed and resumed with the skin is bit-identical to one that was not."""
    models = _models()
    cases = [
        (models["eam"].double(), _cu_cells(), dict(temperature_K=600.0, dt=2.0)),
        (
            models["painn"].double(),
            [aspirin.copy() for _ in range(3)],
            dict(temperature_K=500.0, dt=0.5),
        ),
    ]
    for model, images, kw in cases:
        kw = dict(steps=200, integrator="langevin", detectors=[], seed=1, record_every=10, **kw)
        ref = run_md(model, images, **kw)
        with mock.patch.object(batch_module, "_graph", wraps=batch_module._graph) as built:
            fast = run_md(model, images, skin=1.0, **kw)
        assert 1 < built.call_count < 40  # 201 without the skin
        for a, b in zip(ref.replicas, fast.replicas):
            np.testing.assert_allclose(a.positions_tn3, b.positions_tn3, atol=1e-8)
    model, images, kw = cases[0]
    kw = dict(steps=200, integrator="langevin", detectors=[], seed=1, record_every=10, **kw)
    whole = run_md(model, images, skin=1.0, traj_dir=tmp_path / "whole", **kw)
    with pytest.raises(RuntimeError, match="worker killed"):
        run_md(
            CrashAfter(model, 130),
            images,
            skin=1.0,
            traj_dir=tmp_path / "r",
            checkpoint_every=50,
            **kw,
        )
    again = run_md(model, images, skin=1.0, traj_dir=tmp_path / "r", checkpoint_every=50, **kw)
    for a, b in zip(whole.replicas, again.replicas):
        np.testing.assert_array_equal(a.positions_tn3, b.positions_tn3)
    with pytest.raises(ValueError, match="skin"):
        run_md(model, images, skin=-0.5, **kw)


def test_calculator_with_a_skin_equals_the_calculator_without(aspirin, periodic_cells):
    """MLFFCalculator(skin=1): along a sequence of small moves and one large jump, the
    same energy, forces and stress as without a skin, with the graph built twice (start
    and after the jump); a new cell gets a new batch. ASE MD through it follows the
    same trajectory."""
    from ase.md.verlet import VelocityVerlet

    from ase_mlff.calculators import MLFFCalculator

    model = _models()["painn"]
    rng = np.random.default_rng(3)
    for atoms in (aspirin, periodic_cells[0]):
        plain = MLFFCalculator(model, dtype="float64")
        skin = MLFFCalculator(model, dtype="float64", skin=1.0)
        props = ["energy", "forces"] + (["stress"] if atoms.pbc.all() else [])
        a = atoms.copy()
        with mock.patch.object(batch_module, "_graph", wraps=batch_module._graph) as built:
            for k in range(6):  # an MD-like walk of small steps, one jump at k = 4
                a = a.copy()
                a.positions += rng.normal(scale=0.02 if k != 4 else 0.8, size=a.positions.shape)
                skin.calculate(a, props)
                plain.calculate(a, props)
                for p in props:
                    np.testing.assert_allclose(skin.results[p], plain.results[p], atol=1e-10)
        assert built.call_count == 6 + 2  # the plain calculator: 6; with the skin: 2
    b = periodic_cells[0].copy()
    b.set_cell(b.cell * 1.01, scale_atoms=True)
    skin.calculate(b, ["energy"])
    plain.calculate(b, ["energy"])
    assert skin.results["energy"] == pytest.approx(plain.results["energy"], abs=1e-10)
    runs = []
    for calc in (
        MLFFCalculator(model, dtype="float64"),
        MLFFCalculator(model, dtype="float64", skin=1.0),
    ):
        a = aspirin.copy()
        a.calc = calc
        VelocityVerlet(a, timestep=0.5 * 0.09822694788464063).run(40)  # 0.5 fs
        runs.append(a.positions.copy())
    np.testing.assert_allclose(runs[0], runs[1], atol=1e-8)
    with pytest.raises(ValueError, match="skin"):
        MLFFCalculator(model, skin=-1.0)
