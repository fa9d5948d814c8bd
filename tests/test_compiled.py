"""The compiled path (issue 19): every graph potential traces as one graph, compiled
energies, forces and stress equal the eager model's, a new neighbour graph does not
recompile, a failed compilation falls back to eager with its reason logged, and the
calculator's exact state check answers as ASE's."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.calculator import compare_atoms

from ase_mlff.calculators import MLFFCalculator
from ase_mlff.graph import Batch
from ase_mlff.md.runner import run_md
from ase_mlff.models import EAM, PaiNN, SchNet, compute_properties
from ase_mlff.models.compiled import CompiledPotential
from ase_mlff.models.hybrid import HybridPotential
from tests.conftest import random_species_model

SPECIES = [1, 6, 8, 29]


def _model(name: str):
    torch.manual_seed(0)
    eam = EAM(species=SPECIES, cutoff=4.0)
    with torch.no_grad():
        for p in eam.parameters():
            p.add_(0.2 * torch.randn_like(p))
    small = dict(cutoff=4.0, hidden=8, n_interactions=2)
    if name == "painn":
        return random_species_model(PaiNN, SPECIES, **small)
    if name == "schnet":
        return random_species_model(SchNet, SPECIES, n_rbf=10, **small)
    if name == "eam":
        return eam
    return HybridPotential(
        random_species_model(PaiNN, SPECIES, cutoff=3.0, hidden=8, n_interactions=1), eam
    )


@pytest.mark.parametrize("name", ["painn", "schnet", "eam", "hybrid"])
def test_every_graph_potential_traces_without_a_graph_break(name, molecules, periodic_cells):
    """``fullgraph=True`` compilation needs one graph: no data-dependent branch or shape
    in the forward, molecular or periodic, with or without a Verlet skin."""
    model = _model(name).double()
    for images in (molecules[:1], periodic_cells[1:]):
        for skin in (0.0, 1.0):
            batch = Batch.from_atoms(images, cutoff=model.cutoff, dtype=torch.float64, skin=skin)
            explained = torch._dynamo.explain(model)(batch)
            assert explained.graph_break_count == 0, explained.break_reasons
            assert explained.graph_count == 1


def _displaced(atoms, rng, scale):
    a = atoms.copy()
    a.positions += rng.normal(0.0, scale, a.positions.shape)
    return a


@pytest.mark.parametrize("name", ["painn", "hybrid"])
def test_compiled_calculator_equals_eager_and_reuses_the_compiled_code(name, aspirin):
    """Through ``MLFFCalculator(compile=True)`` (float64, Verlet skin 0.5 Å): energy and
    forces equal the eager calculator's to 1e-10 at positions that keep the graph and at
    positions that rebuild it with another edge count, and the rebuilt graph runs the same
    compiled code (no recompilation). The hybrid keeps the edges between its parts'
    cutoffs when compiled: its result checks that they weigh exactly nothing."""
    torch._dynamo.reset()
    model = _model(name)
    compiled = MLFFCalculator(model, dtype="float64", skin=0.5, compile=True)
    eager = MLFFCalculator(model, dtype="float64", skin=0.5, compile=False)
    rng = np.random.default_rng(0)
    edges, frames = [], []
    for scale in (0.0, 0.02, 0.4, 0.4):
        frames.append(_displaced(aspirin, rng, scale))
    for atoms in frames:
        for calc in (compiled, eager):
            calc.get_forces(atoms)
        assert compiled.potential.compiled, compiled.potential.fallback_reason
        np.testing.assert_allclose(
            compiled.get_potential_energy(atoms), eager.get_potential_energy(atoms), atol=1e-10
        )
        np.testing.assert_allclose(compiled.get_forces(atoms), eager.get_forces(atoms), atol=1e-10)
        edges.append(compiled._batch.edge_index_2e.shape[1])
        if len(edges) == 2:
            frames_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert len(set(edges)) > 1  # the graph was rebuilt with another number of edges
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames_before
    assert not eager.potential.compiled and eager.potential.eager_seconds > 0


def test_compiled_batched_md_follows_the_eager_trajectory(molecules):
    """``run_md(compile=True)`` on a batch of three molecules (Verlet skin 0.5 Å): the
    frames equal those of the eager run to rounding, and the training path (force loss)
    never takes the compiled evaluation."""
    model = _model("painn").double()
    kw = dict(steps=40, check_every=10, record_every=10, seed=1, skin=0.5, detectors=[])
    eager = run_md(model, molecules, **kw)
    compiled = run_md(model, molecules, compile=True, **kw)
    for a, b in zip(eager.replicas, compiled.replicas):
        np.testing.assert_allclose(a.positions_tn3, b.positions_tn3, atol=1e-9)
        np.testing.assert_allclose(a.energy_t, b.energy_t, atol=1e-9)
    fast = CompiledPotential(model)
    batch = Batch.from_atoms(molecules, cutoff=model.cutoff, dtype=torch.float64)
    out = compute_properties(fast, batch, forces=True, training=True)
    assert out["forces"].requires_grad and not fast.compiled  # autograd, not compiled
    # evaluated compiled, the results carry no graph to the (trainable) parameters, or an
    # MD loop would chain every step's graph
    assert any(p.requires_grad for p in model.parameters())
    out = compute_properties(fast, batch, forces=True)
    assert fast.compiled and not out["forces"].requires_grad


@pytest.mark.slow
def test_compiled_stress_equals_eager(periodic_cells):
    """A periodic cell: the compiled stress (strain derivative through the compiled
    backward) equals the eager one."""
    model = _model("painn")
    atoms = periodic_cells[1]
    compiled = MLFFCalculator(model, dtype="float64", compile=True)
    eager = MLFFCalculator(model, dtype="float64", compile=False)
    np.testing.assert_allclose(compiled.get_stress(atoms), eager.get_stress(atoms), atol=1e-12)
    np.testing.assert_allclose(compiled.get_forces(atoms), eager.get_forces(atoms), atol=1e-10)
    assert compiled.potential.compiled


def test_failed_compilation_falls_back_to_eager_with_its_reason(aspirin, monkeypatch, caplog):
    """A compiler that fails on the first call: the call still returns the eager result,
    the reason is logged once and kept, and later calls run eagerly."""

    def broken_compile(model, **kw):
        def run(*args):
            raise RuntimeError("InductorError: no C++ compiler found\nlong traceback")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = _model("painn")
    calc = MLFFCalculator(model, dtype="float64", compile=True)
    eager = MLFFCalculator(model, dtype="float64", compile=False)
    with caplog.at_level(logging.WARNING, logger="ase_mlff.models.compiled"):
        f = calc.get_forces(aspirin)
        calc.get_forces(_displaced(aspirin, np.random.default_rng(1), 0.01))
    np.testing.assert_allclose(f, eager.get_forces(aspirin), atol=1e-12)
    assert not calc.potential.compiled
    assert calc.potential.fallback_reason == "RuntimeError: InductorError: no C++ compiler found"
    warnings = [r for r in caplog.records if "running the model eagerly" in r.getMessage()]
    assert len(warnings) == 1 and "no C++ compiler" in warnings[0].getMessage()


def test_eager_model_errors_are_not_hidden_by_the_fallback(aspirin, monkeypatch):
    """When the eager model fails too, its error is what the caller sees."""

    class Broken(torch.nn.Module):
        cutoff = 4.0

        def forward(self, batch):
            raise ValueError("the model itself is broken")

    monkeypatch.setattr(torch, "compile", lambda model, **kw: model)
    fast = CompiledPotential(Broken())
    batch = Batch.from_atoms(aspirin, cutoff=4.0, dtype=torch.float64)
    with pytest.raises(ValueError, match="the model itself is broken"):
        compute_properties(fast, batch, forces=True)
    assert fast.fallback_reason.startswith("ValueError")
    assert fast.cutoff == 4.0  # attributes are the model's


def test_auto_compiles_only_after_its_eager_time(aspirin, monkeypatch):
    """``compile="auto"`` runs ``auto_compile_after`` evaluations eagerly, then compiles
    once (a stand-in compiler records
    when); ``False`` never compiles."""
    compiled_at = []

    def recording_compile(model, **kw):
        compiled_at.append(True)
        return model

    monkeypatch.setattr(torch, "compile", recording_compile)
    model = _model("painn")
    never = MLFFCalculator(model, compile=False, auto_compile_after=0)
    late = MLFFCalculator(model, compile="auto", auto_compile_after=10**9)
    soon = MLFFCalculator(model, compile="auto", auto_compile_after=1)
    rng = np.random.default_rng(2)
    for k in range(3):
        atoms = _displaced(aspirin, rng, 0.01)
        for calc in (never, late, soon):
            calc.get_forces(atoms)
        if k == 0:  # the first call ran eagerly, and was counted
            assert not soon.potential.compiled and soon.potential.eager_calls == 1
    assert not never.potential.compiled and not late.potential.compiled
    assert soon.potential.compiled and len(compiled_at) == 1
    assert late.potential.eager_calls == 3 and late.potential.eager_seconds > 0
    for bad in ({"compile": "yes"}, {"auto_compile_after": -1}, {"auto_compile_after": 2.5}):
        with pytest.raises(ValueError, match="compile"):
            MLFFCalculator(model, **bad)


def test_state_check_answers_as_ase_compare_atoms(aspirin):
    """The calculator's exact state check lists the same changes as ASE's own
    ``compare_atoms`` for every kind of change (and none for an identical copy)."""
    calc = MLFFCalculator(_model("painn"), compile=False)
    calc.get_forces(aspirin)
    cu = bulk("Cu", "fcc", 3.6, cubic=True)
    variants = {"same": aspirin.copy()}
    a = aspirin.copy()
    a.positions[3, 1] += 1e-6
    variants["positions"] = a
    a = aspirin.copy()
    a.numbers[0] = 8
    variants["numbers"] = a
    a = aspirin.copy()
    a.cell = [10, 10, 10]
    variants["cell"] = a
    a = aspirin.copy()
    a.pbc = [True, False, False]
    variants["pbc"] = a
    a = aspirin.copy()
    a.set_initial_magnetic_moments(np.ones(len(a)))
    variants["magmoms"] = a
    a = aspirin.copy()
    a.set_initial_charges(np.zeros(len(a)))
    variants["charges"] = a
    variants["other system"] = cu
    for name, atoms in variants.items():
        ours = sorted(calc.check_state(atoms))
        assert ours == sorted(compare_atoms(calc.atoms, atoms)), name
        assert bool(ours) == (name != "same")


def test_run_md_refuses_what_compiled_md_cannot_do(molecules):
    """Before any work: an element the model never saw (a compiled EAM would read past its
    table instead of raising), and compile with metadynamics (the bias would bypass the
    compiled evaluation)."""
    from ase_mlff.md.colvars import Distance
    from ase_mlff.md.metadynamics import Metadynamics

    eam = EAM(species=[1, 6], cutoff=4.0)  # ethanol has O
    with pytest.raises(ValueError, match="never trained on element"):
        run_md(eam.double(), molecules[:1], steps=10, compile=True)
    metad = Metadynamics([Distance(0, 1)], height=0.01, sigma=[0.1], pace=10, temperature_K=300)
    with pytest.raises(ValueError, match="metadynamics"):
        run_md(_model("painn").double(), molecules[:1], steps=10, compile=True, metadynamics=metad)
