"""What every stability figure rests on, checked against independent peers:

- the one exact minimum image against ``ase.geometry.get_distances(mic=True)`` (60°, 120°,
  triclinic, strongly skewed cells, α-quartz) and against a rigorous brute-force image
  search (partial periodicity, where ASE's own ``find_mic`` is not exact);
- the one molecular graph: exactly the chemical graph on every shipped frame (aspirin,
  water), and the same bonds as MDAnalysis' guesser on the aspirin frames;
- planted failures: every one of aspirin's 21 bonds pulled apart in its own replica is
  flagged *by the bond criterion* within two check intervals of the moment its deviation
  (measured independently with ASE on an undetected copy of the run) passes Δ; the
  control never is;
- the Lindemann detector on triclinic Einstein crystals: no false alarm, and its indices
  equal the ones computed from ASE's minimum-image distances.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import product

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.cell import Cell
from ase.geometry import get_distances

from ase_mlff.data import load_dataset
from ase_mlff.data.io import SHIPPED_DIR
from ase_mlff.graph import Batch
from ase_mlff.graph.geometry import (
    bond_graph,
    bond_graphs_from_dataset,
    minimum_image,
    minimum_image_torch,
    perceive_bonds,
)
from ase_mlff.md.detectors import BondLengthDeviation, LindemannIndex, default_detectors
from ase_mlff.md.runner import run_md
from ase_mlff.md.state import MDState
from ase_mlff.models.base import Potential, scatter_sum

#: aspirin's covalent graph in the MD17 atom order (0-based), written out from its chemistry:
#: ring C0-C2-C3-C1-C6-C5 with H14-H17 on C0-C3; carboxylic acid C5-C10(=O7)-O9-H13;
#: ester C6-O12-C11(=O8)-C4 with the methyl H18-H20 on C4
ASPIRIN_BONDS = {
    (0, 2), (2, 3), (1, 3), (1, 6), (5, 6), (0, 5),
    (0, 14), (1, 15), (2, 16), (3, 17),
    (5, 10), (7, 10), (9, 10), (9, 13),
    (6, 12), (11, 12), (8, 11), (4, 11), (4, 18), (4, 19), (4, 20),
}  # fmt: skip

CELLS = {
    "hexagonal 60°": Cell.fromcellpar([5.0, 5.0, 7.0, 90, 90, 60]).array,
    "hexagonal 120°": Cell.fromcellpar([5.0, 5.0, 7.0, 90, 90, 120]).array,
    "triclinic": Cell.fromcellpar([4.0, 6.0, 5.0, 70, 110, 65]).array,
    "skewed": np.array([[3.0, 0, 0], [10.3, 2.5, 0], [5.7, 3.2, 4.0]]),
    "very skewed": 3.0 * np.array([[1.0, 0, 0], [17.3, 1.1, 0], [-9.7, 6.2, 1.3]]),
}


def _quartz() -> Atoms:
    frames = ase.io.read(SHIPPED_DIR / "silica_gfn1_polymorphs.xyz", ":")
    return next(a for a in frames if len(a) == 9 or "quartz" in str(a.info))


def _aspirin() -> Atoms:
    return ase.io.read(SHIPPED_DIR / "aspirin_md17_order.xyz")


# --------------------------------------------------------------------------- minimum image
def _brute_lengths(v: np.ndarray, cell: np.ndarray, pbc) -> np.ndarray:
    """Rigorous brute force: every lattice vector that can be the minimum image. A lattice
    vector of length ≤ L has |n_k| ≤ L / h_k (h_k: the cell height along k), and the
    minimum image is never longer than the fractionally wrapped vector."""
    pbc = np.asarray(pbc, bool)
    out = []
    for x in v:
        frac = np.linalg.solve(cell.T, x)
        w = x - np.where(pbc, np.round(frac), 0) @ cell
        bound = 2 * np.linalg.norm(w) + 1e-9
        ranges = []
        for k in range(3):
            if not pbc[k]:
                ranges.append([0])
                continue
            per = [cell[m] for m in range(3) if m != k and pbc[m]]
            if len(per) == 2:
                nrm = np.cross(*per)
                h = abs(cell[k] @ nrm) / np.linalg.norm(nrm)
            elif len(per) == 1:
                u = per[0] / np.linalg.norm(per[0])
                h = np.linalg.norm(cell[k] - (cell[k] @ u) * u)
            else:
                h = np.linalg.norm(cell[k])
            r = int(np.ceil(bound / h)) + 1
            ranges.append(range(-r, r + 1))
        shifts = np.array(list(product(*ranges))) @ cell
        out.append(np.linalg.norm(w + shifts, axis=1).min())
    return np.array(out)


@pytest.mark.parametrize("name", list(CELLS) + ["alpha-quartz"])
def test_minimum_image_matches_ase_in_every_cell(name, rng):
    cell = _quartz().cell.array if name == "alpha-quartz" else CELLS[name]
    p = rng.uniform(-15, 15, (120, 3))
    v = p[1:] - p[:-1]
    _, d_ase = get_distances(p[:-1], p[1:], cell=cell, pbc=True)
    d_ase = np.diagonal(d_ase)
    d = np.linalg.norm(minimum_image(v, cell), axis=1)
    np.testing.assert_allclose(d, d_ase, rtol=0, atol=1e-9)
    # torch, two cells in one batch, each vector with its own system
    cells = torch.as_tensor(np.stack([cell, 1.1 * cell]))
    sys_p = torch.as_tensor(rng.integers(0, 2, len(v)))
    vt = minimum_image_torch(torch.as_tensor(v), cells, torch.ones(2, 3, dtype=bool), sys_p)
    for s in (0, 1):
        m = (sys_p == s).numpy()
        _, ref = get_distances(np.zeros((1, 3)), v[m], cell=cells[s].numpy(), pbc=True)
        np.testing.assert_allclose(vt[m].norm(dim=1).numpy(), ref[0], rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ["hexagonal 60°", "triclinic", "skewed"])
@pytest.mark.parametrize("pbc", [(1, 1, 0), (1, 0, 0), (0, 1, 1), (0, 1, 0), (1, 1, 1)])
def test_minimum_image_exact_with_partial_periodicity(name, pbc, rng):
    """Against a brute-force search (ASE's find_mic is off by Å here when a non-periodic
    cell vector is not orthogonal to the periodic ones)."""
    cell = CELLS[name]
    v = rng.uniform(-10, 10, (40, 3))
    d = np.linalg.norm(minimum_image(v, cell, np.array(pbc, bool)), axis=1)
    np.testing.assert_allclose(d, _brute_lengths(v, cell, pbc), rtol=0, atol=1e-9)


def test_minimum_image_accepts_a_slab_with_zero_c_and_rejects_bad_cells():
    cell = np.array([[4.0, 0, 0], [1.0, 3.0, 0], [0, 0, 0]])
    v = np.array([[3.9, 2.9, 25.0]])
    out = minimum_image(v, cell, np.array([1, 1, 0], bool))
    completed = cell + np.diag([0, 0, 1.0])  # the non-periodic vector does not translate
    np.testing.assert_allclose(np.linalg.norm(out), _brute_lengths(v, completed, (1, 1, 0))[0])
    with pytest.raises(ValueError, match="zero-length cell vector"):
        minimum_image(v, cell, np.ones(3, bool))
    with pytest.raises(ValueError, match="NaN or inf"):
        minimum_image(v, np.full((3, 3), np.nan), np.ones(3, bool))


def test_minimum_image_is_differentiable():
    cell = torch.as_tensor(CELLS["triclinic"], dtype=torch.float64).requires_grad_()
    v = torch.tensor([[3.1, -2.2, 4.4]], dtype=torch.float64, requires_grad=True)
    d = minimum_image_torch(v, cell, torch.ones(3, dtype=bool)).norm()
    d.backward()
    assert torch.isfinite(v.grad).all() and torch.isfinite(cell.grad).all()
    assert float(v.grad.norm()) == pytest.approx(1.0)  # ∂|v + n·cell|/∂v is a unit vector


# --------------------------------------------------------------------------- molecular graph
def test_aspirin_graph_is_chemistry():
    a = _aspirin()
    got = {tuple(map(int, b)) for b in perceive_bonds(a)}
    assert got == ASPIRIN_BONDS
    degree = np.bincount(np.array(sorted(got)).ravel(), minlength=21)
    valence = {1: {1}, 6: {3, 4}, 8: {1, 2}}
    assert all(degree[k] in valence[z] for k, z in enumerate(a.numbers))


def test_graph_is_exact_on_every_shipped_aspirin_frame_and_matches_mdanalysis():
    import warnings

    ds = load_dataset("aspirin")
    for k in range(len(ds)):
        got = {tuple(map(int, b)) for b in perceive_bonds(ds.to_atoms(k, with_labels=False))}
        assert got == ASPIRIN_BONDS, f"frame {k}: {got ^ ASPIRIN_BONDS}"
    mda = pytest.importorskip("MDAnalysis")
    from ase.data import chemical_symbols
    from MDAnalysis.guesser.default_guesser import DefaultGuesser

    warnings.filterwarnings("ignore", module="MDAnalysis")
    u = mda.Universe.empty(21, trajectory=True)
    u.add_TopologyAttr("types", [chemical_symbols[z] for z in ds.numbers_n[:21]])
    guesser = DefaultGuesser(u)
    pos = ds.positions_nc.reshape(-1, 21, 3)
    for k in range(0, len(ds), 5):
        found = {tuple(sorted(map(int, b))) for b in guesser.guess_bonds(u.atoms, pos[k])}
        assert found == ASPIRIN_BONDS, f"MDAnalysis differs on frame {k}"


def test_graph_is_exact_on_every_shipped_water_frame():
    ds = load_dataset("water")
    n = int(ds.n_atoms_s[0])
    assert list(ds.numbers_n[:3]) == [8, 1, 1]
    expected = {(o, o + 1) for o in range(0, n, 3)} | {(o, o + 2) for o in range(0, n, 3)}
    for k in range(len(ds)):
        got = {tuple(map(int, b)) for b in perceive_bonds(ds.to_atoms(k, with_labels=False))}
        assert got == expected, f"frame {k}: {sorted(got ^ expected)[:4]}"


def test_ensemble_graph_lengths_are_the_mean_and_topology_the_median():
    ds = load_dataset("aspirin")
    (g,) = bond_graphs_from_dataset(ds, max_frames=len(ds))
    assert g.bond_set() == ASPIRIN_BONDS and "ensemble" in g.source
    pos = ds.positions_nc.reshape(-1, 21, 3)
    mean = np.linalg.norm(pos[:, g.bonds[:, 1]] - pos[:, g.bonds[:, 0]], axis=-1).mean(0)
    np.testing.assert_allclose(g.lengths, mean, atol=1e-12)
    with pytest.raises(ValueError, match="other atoms"):
        bond_graph([_aspirin(), Atoms("H2O", positions=np.eye(3))])


def _frames_state(frames: list[Atoms]) -> MDState:
    b = Batch.from_atoms(frames, cutoff=0.0, dtype=torch.float64)
    zeros = torch.zeros_like(b.pos_nc)
    return MDState(
        batch=b,
        vel_nc=zeros,
        mass_n=torch.ones(len(b.numbers_n), dtype=torch.float64),
        forces_nc=zeros,
        energy_s=torch.zeros(b.n_systems, dtype=torch.float64),
    )


def test_no_bond_alarm_on_any_shipped_reference_frame():
    """Each frame as its own (hot) start, and against the ensemble reference."""
    ds = load_dataset("aspirin")
    frames = [ds.to_atoms(k, with_labels=False) for k in range(len(ds))]
    state = _frames_state(frames)
    own = BondLengthDeviation(frames)
    assert all(g.bond_set() == ASPIRIN_BONDS for g in own.graphs)
    ens = BondLengthDeviation(frames, reference=bond_graphs_from_dataset(ds))
    assert float(ens.deviation(state).max()) < 0.5 / 2  # a wide margin below Δ
    assert not ens(state).any()
    water = load_dataset("water")
    wf = [water.to_atoms(k, with_labels=False) for k in range(0, len(water), 10)]
    det = BondLengthDeviation(wf, reference=bond_graphs_from_dataset(water))
    assert float(det.deviation(_frames_state(wf)).max()) < 0.25


# --------------------------------------------------------------------------- planted failures
class PulledBonds(Potential):
    """Harmonic bonds (k = 30 eV/Å²) on a molecular graph; replica s < B has bond s replaced
    by a constant pull of ``force`` eV/Å apart (E = −F r), replica B is the control."""

    def __init__(self, bonds, lengths, n_atoms: int, force: float, cutoff: float = 3.0):
        super().__init__()
        self.cutoff, self.config = cutoff, {"name": "pulled_bonds"}
        self.bonds = torch.as_tensor(bonds)
        self.r0 = torch.as_tensor(lengths)
        self.n_atoms, self.force, self.k = n_atoms, force, 30.0

    def forward(self, batch: Batch) -> torch.Tensor:
        s_count = batch.n_systems
        ptr = torch.arange(s_count)[:, None] * self.n_atoms
        i = (ptr + self.bonds[:, 0][None]).flatten()
        j = (ptr + self.bonds[:, 1][None]).flatten()
        v = batch.pos_nc[j] - batch.pos_nc[i]
        if batch.periodic:
            v = minimum_image_torch(v, batch.cell_s33, batch.pbc_s3, batch.system_n[i])
        r = v.norm(dim=1)
        pulled = self.pulled_b[None, :] == self.replica_s[:, None]
        e = torch.where(
            pulled.flatten(),
            -self.force * r,
            0.5 * self.k * (r - self.r0.repeat(s_count)) ** 2,
        )
        return scatter_sum(e, batch.system_n[i], s_count)

    replica_s: torch.Tensor  # which entry of pulled_b each replica pulls (len: none)
    pulled_b: torch.Tensor  # for each bond, the replica slot that pulls it (-1: none)


def _pull_every_bond(
    ref: Atoms, steps: int, pull=None, check: int = 4, dt: float = 0.5, cutoff: float = 3.0
) -> None:
    """One replica per bond of ``ref`` (or per bond index in ``pull``) with that bond
    pulled apart, plus a control: each pulled replica must be stopped by the bond criterion
    within two check intervals of the moment its bond passes Δ, as measured with ASE
    (minimum image in cells) on an undetected copy of the same run; the control must stay
    stable."""
    g = bond_graph(ref)
    pull = list(range(len(g))) if pull is None else list(pull)
    nb, delta = len(pull), 0.5
    images = [ref.copy() for _ in range(nb + 1)]
    model = PulledBonds(g.bonds, g.lengths, len(ref), force=6.0, cutoff=cutoff).double()
    model.pulled_b = torch.full((len(g),), -1)
    model.pulled_b[torch.as_tensor(pull)] = torch.arange(nb)
    mic = bool(ref.pbc.any())

    def run(**detection):
        model.replica_s = torch.arange(nb + 1)
        return run_md(
            model,
            images,
            steps=steps,
            dt=dt,
            integrator="langevin",
            temperature_K=300.0,
            friction=0.01,
            seed=7,
            check_every=check,
            record_every=1,
            **detection,
        )

    def ase_deviation(positions, i, j):
        a = Atoms(ref.numbers, positions, cell=ref.cell, pbc=ref.pbc)
        return abs(a.get_distance(i, j, mic=mic) - ref.get_distance(i, j, mic=mic))

    # the undetected run: each pulled bond's deviation, step by step, measured by ASE
    free = run(detectors=[])
    crossing = {}
    for s, (i, j) in enumerate(g.bonds[pull].tolist()):
        rep = free.replicas[s]
        dev = [ase_deviation(p, i, j) > delta for p in rep.positions_tn3]
        assert any(dev), f"bond {i}-{j} never passed Δ in the undetected run"
        crossing[s] = rep.times_fs[int(np.argmax(dev))]
    ctrl = free.replicas[nb].positions_tn3
    assert max(ase_deviation(ctrl[t], i, j) for t in (0, -1) for i, j in g.bonds.tolist()) < delta

    # the watched run: replicas stop at their first failed check; the model must keep
    # pulling the right bond of the replicas that remain
    class KeepIndex:
        name = "keep_index"

        def __call__(self, state):
            return torch.zeros(state.batch.n_systems, dtype=torch.bool)

        def select(self, keep_s, state):
            model.replica_s = model.replica_s[keep_s]

    def detectors(references, state):
        return [*default_detectors(references, state, delta, bond_reference=g), KeepIndex()]

    watched = run(detector_factory=detectors)
    for s, (i, j) in enumerate(g.bonds[pull].tolist()):
        r = watched.replicas[s]
        assert r.reason == "bond_length", f"bond {i}-{j}: {r.reason} at {r.t_inst_fs} fs"
        assert crossing[s] <= r.t_inst_fs <= crossing[s] + 2 * check * dt, (
            f"bond {i}-{j}: passed Δ at {crossing[s]} fs, flagged at {r.t_inst_fs} fs"
        )
    # the control raises no bond alarm (its network has bonds only, no angle terms, so two
    # hydrogens of one carbon may meet: with seed 7 the overlap criterion stops it at 50 fs)
    assert "bond_length" not in watched.replicas[nb].fired_fs


def test_every_pulled_aspirin_bond_is_caught_by_the_bond_criterion():
    assert bond_graph(_aspirin()).bond_set() == ASPIRIN_BONDS
    _pull_every_bond(_aspirin(), steps=200)


def test_every_pulled_water_bond_is_caught_in_the_periodic_box():
    """Both O–H bonds of every molecule cut by the cell boundary and of four whole ones, in
    a shipped 64-molecule frame wrapped into the box (the minimum image must join the cut
    molecules). The potential has no neighbour graph (cutoff 0), so atom overlap is off."""
    ref = load_dataset("water").to_atoms(0, with_labels=False)
    ref.wrap()
    z, pos = ref.numbers, ref.positions
    cut = [k for k in range(0, len(ref), 3) if np.linalg.norm(pos[k + 1] - pos[k]) > 2.0]
    assert cut, "no molecule crosses the boundary in this frame: the MIC is not exercised"
    g = bond_graph(ref)
    assert len(g) == 2 * int((z == 8).sum())
    oxygens = sorted(set(cut) | {0, 3, 6, 9})
    pull = [b for b, (i, _) in enumerate(g.bonds.tolist()) if i in oxygens]
    assert len(pull) == 2 * len(oxygens)
    _pull_every_bond(ref, steps=60, pull=pull, cutoff=0.0)


# --------------------------------------------------------------------------- Lindemann
def _einstein_frames(cell: np.ndarray, sigma: float, n_frames: int, rng) -> list[np.ndarray]:
    """Sites of a 3x3x3 lattice in ``cell``, each atom displaced by N(0, σ²) per frame,
    then wrapped into the cell (so the minimum image matters)."""
    frac = np.array(list(product(range(3), repeat=3))) / 3.0
    sites = frac @ cell
    frames = []
    for _ in range(n_frames):
        pos = sites + rng.normal(0, sigma, sites.shape)
        a = Atoms("Ar27", positions=pos, cell=cell, pbc=True)
        a.wrap()
        frames.append(a.positions.copy())
    return frames


def _lindemann_by_ase(frames: list[np.ndarray], cell: np.ndarray) -> np.ndarray:
    n = len(frames[0])
    d = np.stack([get_distances(p, cell=cell, pbc=True)[1] for p in frames])  # (T, n, n)
    mean, std = d.mean(0), d.std(0)
    iu = np.triu_indices(n, 1)
    lp = std[iu] / mean[iu]
    q = np.zeros(n)
    np.add.at(q, iu[0], lp)
    np.add.at(q, iu[1], lp)
    return q / (n - 1)


@pytest.mark.parametrize("name", ["hexagonal 60°", "hexagonal 120°", "triclinic", "skewed"])
def test_lindemann_on_triclinic_einstein_crystals(name, rng):
    cell = 2.0 * CELLS[name]
    solid = _einstein_frames(cell, 0.05, 30, rng)
    melt = _einstein_frames(cell, 1.5, 30, rng)
    atoms = [Atoms("Ar27", positions=solid[0], cell=cell, pbc=True) for _ in range(2)]
    state = _frames_state(atoms)
    det = LindemannIndex(state, window=30)
    flags = None
    for t in range(30):
        pos = torch.as_tensor(np.concatenate([solid[t], melt[t]]))
        state = replace(state, batch=replace(state.batch, pos_nc=pos))
        flags = det(state)
    assert flags.tolist() == [False, True]
    # the detector's indices equal those from ASE's minimum-image distances
    det2 = LindemannIndex(_frames_state(atoms[:1]), window=10_000)
    st = _frames_state(atoms[:1])
    for t in range(30):
        st = replace(st, batch=replace(st.batch, pos_nc=torch.as_tensor(solid[t])))
        det2(st)
    q_n, q_s = det2.indices(st)
    ref = _lindemann_by_ase(solid, cell)
    np.testing.assert_allclose(q_n.numpy(), ref, rtol=1e-9, atol=1e-12)
    assert float(q_s[0]) == pytest.approx(ref.mean(), rel=1e-9)
    assert ref.max() < 0.1  # a solid: far below the 0.25 / 0.2 thresholds
