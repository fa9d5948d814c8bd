"""Periodic-system observables and detectors: RDF vs ASE, Lindemann and RDF criteria."""

import math

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.geometry import get_distances
from ase.geometry.rdf import get_rdf

from ase_mlff.graph import Batch
from ase_mlff.md.detectors import LindemannIndex, RDFDeviation, materials_detectors
from ase_mlff.md.state import MDState
from ase_mlff.metrics.rdf import rdf

torch.set_num_threads(1)  # as the other MD test modules: no thread contention on 2 cores


def _crystal(seed=0, rattle=0.1):
    a = bulk("NaCl", "rocksalt", 5.64, cubic=True) * (2, 2, 2)  # 64 atoms, 11.3 Å cell
    a.rattle(rattle, seed=seed)
    return a


def _state(images, cutoff=5.0):
    b = Batch.from_atoms(images, cutoff=cutoff, dtype=torch.float64)
    z = torch.zeros_like(b.pos_nc)
    return MDState(
        batch=b,
        vel_nc=z,
        mass_n=torch.ones(len(z), dtype=torch.float64),
        forces_nc=z.clone(),
        energy_s=torch.zeros(b.n_systems, dtype=torch.float64),
    )


@pytest.mark.parametrize("pair", [(11, 17), (11, 11), (17, 17)])
def test_rdf_matches_ase(pair):
    atoms = _crystal()
    r_max, n_bins = 5.0, 50
    centres, g = rdf(
        Batch.from_atoms(atoms, cutoff=r_max, dtype=torch.float64), [pair], r_max, n_bins
    )
    g_ase, r_ase = get_rdf(atoms, r_max, n_bins, elements=pair)
    np.testing.assert_allclose(centres, r_ase, atol=1e-12)
    # ASE normalises by N_a (N_b) per ordered pair the same way; compare where g is non-zero
    np.testing.assert_allclose(g[0], g_ase, rtol=1e-6, atol=1e-8)


def _moved(state, pos):
    state.batch = state.batch.with_positions(pos)
    return state


def test_lindemann_quiet_for_vibrating_crystal_fires_for_melt():
    rng = np.random.default_rng(0)
    solid, melt = _crystal(1), _crystal(2)
    state = _state([solid, melt])
    lin = LindemannIndex(state, window=20)
    base = state.batch.pos_nc.clone()
    cell = torch.as_tensor(solid.cell[:])
    flags = None
    for _ in range(20):
        pos = base + torch.as_tensor(rng.normal(scale=0.05, size=base.shape))
        pos[64:] = torch.as_tensor(rng.random((64, 3))) @ cell  # the second replica "melts"
        flags = lin(_moved(state, pos))
    assert flags.tolist() == [False, True]


def test_lindemann_index_value_for_known_fluctuation():
    """Two atoms whose distance alternates 1 ± a: q = a / 1 for both."""
    from ase import Atoms

    a = Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]])
    state = _state([a])
    lin = LindemannIndex(state, window=1000)
    for k in range(100):
        pos = torch.tensor([[0, 0, 0], [1 + 0.1 * (-1) ** k, 0, 0]], dtype=torch.float64)
        lin(_moved(state, pos))
    q_n, q_s = lin.indices(state)
    np.testing.assert_allclose(q_n.numpy(), [0.1, 0.1], atol=1e-12)
    np.testing.assert_allclose(q_s.numpy(), [0.1], atol=1e-12)


def test_rdf_detector():
    ref_atoms = [_crystal(k, 0.08) for k in range(4)]
    pairs = [(11, 11), (11, 17), (17, 17)]
    _, g_ref = rdf(Batch.from_atoms(ref_atoms, cutoff=5.0, dtype=torch.float64), pairs, 5.0, 50)
    fine, squeezed = _crystal(7, 0.08), _crystal(8, 0.08)
    squeezed.set_cell(squeezed.cell * 0.85, scale_atoms=True)  # a collapsed structure
    state = _state([fine, squeezed])
    det = RDFDeviation(pairs, g_ref, r_max=5.0, window=3, delta=1.0)
    assert det(state).tolist() == [False, False]  # window not full yet
    det(state)
    flags = det(state)
    assert flags.tolist() == [False, True]
    with pytest.raises(ValueError, match="exceeds the graph cutoff"):
        rdf(Batch.from_atoms(fine, cutoff=3.0), pairs, 5.0, 50)


def test_lindemann_keeps_working_after_a_replica_is_dropped():
    rng = np.random.default_rng(1)
    state = _state([_crystal(3), _crystal(4)])
    lin = LindemannIndex(state, window=10)
    cell = torch.as_tensor(_crystal(4).cell[:])
    base = state.batch.pos_nc.clone()
    for _ in range(5):
        lin(_moved(state, base + torch.as_tensor(rng.normal(scale=0.05, size=base.shape))))
    keep = torch.tensor([False, True])
    lin.select(keep, state)
    state = state.select(keep)
    base = state.batch.pos_nc.clone()
    flags = None
    for _ in range(5):  # the kept replica now melts; its accumulated half-window carries over
        flags = lin(_moved(state, torch.as_tensor(rng.random((64, 3))) @ cell))
    assert flags.tolist() == [True]
    assert lin.pairs_2p.max() < 64 and lin.s1.shape[0] == 64 * 63 // 2


# ------------------------------------------------------------ windows: judged, then reset
def _three_windows(window, rng):
    """Frames of two NaCl replicas over three windows: replica 0 vibrates (σ = 0.05 Å) in
    all of them, replica 1 vibrates in windows 1 and 3 and is a random "melt" in window 2."""
    a = _crystal(0, rattle=0.0)
    base, cell = a.positions.copy(), a.cell[:]
    frames = []
    for w in range(3):
        for _ in range(window):
            solid = [base + rng.normal(scale=0.05, size=base.shape) for _ in range(2)]
            if w == 1:
                solid[1] = rng.random(base.shape) @ cell
            frames.append(solid)
    return a, frames


def _ase_lindemann(frames, cell):
    """q_i from ASE's minimum-image distances over ``frames`` (paper 004, root-mean-square
    fluctuation of r_ij over its mean, averaged over the N - 1 partners)."""
    d = np.stack([get_distances(p, cell=cell, pbc=True)[1] for p in frames])
    n = d.shape[1]
    iu = np.triu_indices(n, 1)
    lp = d.std(0)[iu] / d.mean(0)[iu]
    q = np.zeros(n)
    np.add.at(q, iu[0], lp)
    np.add.at(q, iu[1], lp)
    return q / (n - 1)


class _RecordingLindemann(LindemannIndex):
    """Keeps the indices of every judged window (count, q_n)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.judged = []

    def indices(self, state):
        q_n, q_s = super().indices(state)
        self.judged.append((self.count, q_n.clone(), q_s.clone()))
        return q_n, q_s


def test_lindemann_judges_each_window_on_its_own_frames():
    """Three tumbling windows, "melting" in the second only. Each window's indices equal
    those from ASE's minimum-image distances over exactly that window's frames, and only
    the end of window 2 flags (the solid window 3 after the melt must not: an accumulator
    that is never reset would carry the melt over)."""
    rng = np.random.default_rng(0)
    window = 10
    a, frames = _three_windows(window, rng)
    state = _state([a, a.copy()])
    det = _RecordingLindemann(state, window=window)
    flags = []
    for f in frames:
        pos = torch.as_tensor(np.concatenate(f))
        flags.append(det(_moved(state, pos)).tolist())
    expected = [[False, False]] * (3 * window)
    expected[2 * window - 1] = [False, True]
    assert flags == expected
    assert [c for c, _, _ in det.judged] == [window] * 3
    for w, (_, q_n, q_s) in enumerate(det.judged):
        sl = frames[w * window : (w + 1) * window]
        for r in range(2):
            ref = _ase_lindemann([f[r] for f in sl], a.cell[:])
            np.testing.assert_allclose(q_n[64 * r : 64 * (r + 1)].numpy(), ref, rtol=1e-9)
            assert float(q_s[r]) == pytest.approx(ref.mean(), rel=1e-9)
    assert float(det.judged[1][2][1]) > 0.2 > 0.05 > float(det.judged[2][2][1])


def _numpy_rdf(frames, numbers, cell, pairs, r_max, n_bins):
    """(P, n_bins) g_ab(r) averaged over frames, from an independent histogram of ASE's
    minimum-image distances (exact here: r_max < half the cell height), ordered pairs
    i ∈ a, j ∈ b, j ≠ i, normalised by V / (N_a N_b 4π r² dr) with exact shell volumes."""
    edges = np.linspace(0.0, r_max, n_bins + 1)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    volume = abs(np.linalg.det(cell))
    out = np.zeros((len(pairs), n_bins))
    for pos in frames:
        d = get_distances(pos, cell=cell, pbc=True)[1]
        np.fill_diagonal(d, np.inf)
        for p, (za, zb) in enumerate(pairs):
            sub = d[np.ix_(numbers == za, numbers == zb)].ravel()
            counts, _ = np.histogram(sub[sub < r_max], bins=edges)
            n_ab = np.sum(numbers == za) * np.sum(numbers == zb)
            out[p] += counts * volume / (n_ab * shell)
    return out / len(frames)


class _RecordingRDF(RDFDeviation):
    """Keeps the window-averaged g and its deviation of every judged window."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.judged = []

    def deviation(self, g_spb):
        dev = super().deviation(g_spb)
        self.judged.append((self.count, g_spb.clone(), dev.clone()))
        return dev


def test_rdf_detector_judges_every_sliding_window_on_its_own_frames():
    """As the Lindemann test: at every check from the window-th on, ⟨g_ab⟩ over the last
    ``window`` frames equals a numpy histogram of ASE's minimum-image distances over those
    frames, the deviation is max_ab Σ|⟨g⟩ − g_ref| dr, and a check flags exactly when that
    deviation exceeds Δ: the fully melted window does, the ordered ones do not."""
    rng = np.random.default_rng(1)
    window, r_max, n_bins = 5, 5.0, 50
    pairs = [(11, 11), (11, 17), (17, 17)]
    a, frames = _three_windows(window, rng)
    cell, numbers = a.cell[:], a.numbers
    ref_frames = [a.positions + rng.normal(scale=0.05, size=a.positions.shape) for _ in range(4)]
    g_ref = _numpy_rdf(ref_frames, numbers, cell, pairs, r_max, n_bins)
    state = _state([a, a.copy()], cutoff=r_max)
    det = _RecordingRDF(pairs, g_ref, r_max=r_max, window=window, delta=1.0)
    assert det.onset_lag_checks == window - 1
    flags = [det(_moved(state, torch.as_tensor(np.concatenate(f)))).tolist() for f in frames]
    assert flags[: window - 1] == [[False, False]] * (window - 1)  # no full window yet
    assert [c for c, _, _ in det.judged] == list(range(window, 3 * window + 1))
    dr = r_max / n_bins
    for (count, g_spb, dev), flag in zip(det.judged, flags[window - 1 :]):
        sl = frames[count - window : count]
        for r in range(2):
            g = _numpy_rdf([f[r] for f in sl], numbers, cell, pairs, r_max, n_bins)
            np.testing.assert_allclose(g_spb[r].numpy(), g, rtol=1e-9, atol=1e-9)
            expected_dev = (np.abs(g - g_ref).sum(axis=1) * dr).max()
            assert float(dev[r]) == pytest.approx(expected_dev, rel=1e-9)
            assert flag[r] == (expected_dev > 1.0)
    assert flags[window - 1] == [False, False] and flags[-1] == [False, False]  # ordered
    assert flags[2 * window - 1] == [False, True]  # the melted window of replica 1


def test_rdf_detector_minimum_image_path_equals_the_graph_path():
    """The all-pairs minimum-image RDF (used when every replica has the same atoms)
    equals the neighbour-graph one, in an orthorhombic and a triclinic cell."""
    from ase_mlff.graph.rdf import half_cell_height, min_image_rdf, rdf_per_system

    pairs = [(11, 11), (11, 17), (17, 17)]
    tilted = _crystal(2, 0.1)
    tilted.set_cell(tilted.cell[:] + np.array([[0, 0, 0], [1.5, 0, 0], [0.8, -1.1, 0]]), True)
    for images in ([_crystal(1, 0.1), _crystal(3, 0.1)], [tilted, tilted.copy()]):
        b = Batch.from_atoms(images, cutoff=8.0, dtype=torch.float64)
        r_max = float(half_cell_height(b.cell_s33).min())
        assert r_max < 8.0
        n = len(images[0])
        args = (b.pos_nc.view(2, n, 3), b.numbers_n[:n], b.cell_s33, pairs)
        g_min = min_image_rdf(*args, r_max, 40)
        g_graph = rdf_per_system(b, pairs, r_max, 40)
        torch.testing.assert_close(g_min, g_graph, rtol=1e-12, atol=1e-12)
        assert float(g_min.sum()) > 0
        with pytest.raises(ValueError, match="half the smallest cell height"):
            min_image_rdf(
                b.pos_nc.view(2, n, 3), b.numbers_n[:n], b.cell_s33, pairs, r_max + 0.1, 40
            )


# ------------------------------------------------- defaults, each criterion alone, limits
def _lindemann_probe_frames():
    """Three replicas whose Lindemann indices are known: H2 whose distance alternates
    1 ± 0.22 (q_i = q = 0.22: only the global bound 0.2 is crossed), H2 at 1 ± 0.1
    (neither) and a 6-atom cluster in which one atom oscillates by ± 0.9 Å (its q_i ≈
    0.36 > 0.25, the global q ≈ 0.12: only the local bound is crossed)."""
    from ase import Atoms

    fixed = np.array([[0, 0, 0], [1.5, 0, 0], [0, 1.5, 0], [1.5, 1.5, 0], [0.75, 0.75, 1.2]])
    mover = np.array([0.75, 0.75, -1.0])
    images = [
        Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]]),
        Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]]),
        Atoms("H6", positions=np.vstack([fixed, mover])),
    ]

    def frame(k):
        s = (-1) ** k
        h2 = [[0, 0, 0], [1 + 0.22 * s, 0, 0], [0, 0, 0], [1 + 0.1 * s, 0, 0]]
        return torch.tensor(np.vstack([h2, fixed, mover + [0, 0, -0.9 * s]]))

    return images, frame


def test_lindemann_defaults_each_criterion_alone_and_exact_limits():
    """Paper 004's defaults (a window of 50 checks, local 0.25, global 0.2; 500 checks in
    ``materials_detectors``): nothing before the window ends, then the local-only and the
    global-only replicas both flag (either criterion suffices). An index exactly at its
    bound does not flag, the next float below it does."""
    images, frame = _lindemann_probe_frames()
    state = _state(images)
    probe = LindemannIndex(state, window=10**6)
    lin = LindemannIndex(state)
    flags = [lin(_moved(state, frame(k))).tolist() for k in range(50)]
    assert flags[:49] == [[False] * 3] * 49
    assert flags[49] == [True, False, True]
    for k in range(50):
        probe(_moved(state, frame(k)))
    q_n, q_s = probe.indices(state)
    q_local = [float(q_n[0:2].max()), float(q_n[2:4].max()), float(q_n[4:].max())]
    assert q_local[0] < 0.25 < q_local[2] and q_s[2] < 0.2 < q_s[0]  # the design above
    # each bound exactly at the largest index of its kind, then one float below it
    loc, glob = max(q_local), float(q_s.max())
    for kw, expected in (
        (dict(local=loc, global_=1.0), [False, False, False]),
        (dict(local=math.nextafter(loc, 0.0), global_=1.0), [False, False, True]),
        (dict(local=1.0, global_=glob), [False, False, False]),
        (dict(local=1.0, global_=math.nextafter(glob, 0.0)), [True, False, False]),
    ):
        det = LindemannIndex(state, window=50, **kw)
        for k in range(50):
            out = det(_moved(state, frame(k)))
        assert out.tolist() == expected, kw
    dets = materials_detectors(images, state)
    names = [d.name for d in dets]
    assert names == ["non_finite", "atom_overlap", "lindemann", "exploding_forces", "temperature"]
    lin500 = dets[2]
    flags = [lin500(_moved(state, frame(k))).tolist() for k in range(500)]
    assert flags[:499] == [[False] * 3] * 499 and flags[499] == [True, False, True]


def test_rdf_detector_select_and_resume_mid_window_match_a_run_without_them():
    """Three replicas, windows of 3 checks. After 2 checks replica 0 is dropped and the
    detector is saved (``state_dict``) and restored into a new one: the window it then
    completes judges replicas 1 and 2 exactly as a detector that saw only them."""
    rng = np.random.default_rng(3)
    pairs = [(11, 11), (11, 17), (17, 17)]
    _, g_ref = rdf(
        Batch.from_atoms([_crystal(k, 0.08) for k in range(2)], cutoff=5.0, dtype=torch.float64),
        pairs,
        5.0,
        50,
    )
    squeezed = _crystal(8, 0.08)
    squeezed.set_cell(squeezed.cell * 0.85, scale_atoms=True)
    images = [_crystal(5, 0.08), _crystal(6, 0.08), squeezed]
    frames = [
        [torch.as_tensor(a.positions + rng.normal(scale=0.03, size=(64, 3))) for a in images]
        for _ in range(3)
    ]
    kw = dict(r_max=5.0, window=3, delta=1.0)
    full, alone = _state(images), _state(images[1:])
    det, only = _RecordingRDF(pairs, g_ref, **kw), _RecordingRDF(pairs, g_ref, **kw)
    assert det.name == "rdf"
    for f in frames[:2]:
        assert not det(_moved(full, torch.cat(f))).any()
        assert not only(_moved(alone, torch.cat(f[1:]))).any()
    keep = torch.tensor([False, True, True])
    det.select(keep, full)
    full = full.select(keep)
    saved = det.state_dict()
    assert saved["count"] == 2 and saved["hist"].shape == (2, 3, 3, 50)
    resumed = _RecordingRDF(pairs, g_ref, **kw)
    resumed.load_state_dict(saved)
    flags = resumed(_moved(full, torch.cat(frames[2][1:])))
    assert flags.tolist() == only(_moved(alone, torch.cat(frames[2][1:]))).tolist()
    assert flags.tolist() == [False, True]
    for a, b in zip(resumed.judged[0][1:], only.judged[0][1:]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert resumed.count == 3  # sliding: the next check judges the last 3 again


def test_rdf_detector_at_its_exact_bound():
    """A window whose deviation equals Δ exactly is not flagged; the next float below Δ
    is (∫|g − g_ref| dr > Δ, paper 003 App. A)."""
    pairs = [(11, 11), (11, 17), (17, 17)]
    ref_atoms = [_crystal(k, 0.08) for k in range(2)]
    _, g_ref = rdf(Batch.from_atoms(ref_atoms, cutoff=5.0, dtype=torch.float64), pairs, 5.0, 50)
    state = _state([_crystal(7, 0.08)])
    probe = _RecordingRDF(pairs, g_ref, r_max=5.0, window=1, delta=1e9)
    probe(state)
    dev = float(probe.judged[0][2][0])
    assert 0.0 < dev
    at = RDFDeviation(pairs, g_ref, r_max=5.0, window=1, delta=dev)
    below = RDFDeviation(pairs, g_ref, r_max=5.0, window=1, delta=math.nextafter(dev, 0.0))
    assert at(state).tolist() == [False] and below(state).tolist() == [True]
