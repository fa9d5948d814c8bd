"""Stability detectors: per replica, is the trajectory still physical?

A detector is called on an :class:`~ase_mlff.md.MDState` and returns a (S,) bool tensor,
True where a replica has become unphysical; its ``name`` is the reason recorded. Detectors
that keep per-replica references implement ``select(keep_s)`` so that the runner can drop
replicas that stopped. All reductions are vectorised over replicas (no Python loop over
atoms or replicas).

- :class:`BondLengthDeviation` (papers 000 and 003): max over bonds |r_ij(t) − b_ij| > Δ,
  Δ = 0.5 Å by default (0.3 Å in paper 002); bonds and b_ij from reference structures.
- :class:`AtomOverlap` (paper 004): some pair closer than ``fraction`` × the replica's
  initial minimum interatomic distance (½ in the paper).
- :class:`LindemannIndex` (paper 004): local q_i > 0.25 or global q > 0.2.
- :class:`NonFinite`: NaN or inf energies, forces or positions.
- :class:`ExplodingForces`: any force component above ``max_force`` eV/Å.
- :class:`TemperatureBounds`: temperature outside [0.1, 1e5] K.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms
from torch import Tensor

from ase_mlff.graph.geometry import (
    BondGraph,
    bond_graph,
    bond_graphs_from_frames,
    minimum_image_torch,
)
from ase_mlff.graph.rdf import half_cell_height, min_image_rdf, rdf_per_system
from ase_mlff.md.state import MDState


def scatter_max(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Per-bin maximum of ``src`` (-inf for empty bins)."""
    out = torch.full((dim_size,), -torch.inf, dtype=src.dtype, device=src.device)
    return out.scatter_reduce(0, index, src, reduce="amax", include_self=True)


class Detector:
    """A per-replica judgement. A subclass declares its per-replica tensors in
    ``per_system`` (first dimension = replicas; None allowed) and what it accumulates over a
    run in ``accumulators``; selecting replicas and saving or restoring a checkpoint are then
    generic (:meth:`select`, :meth:`state_dict`, :meth:`load_state_dict`)."""

    name = "detector"
    #: a flagged replica cannot go on (non-finite values, runaway forces or temperature):
    #: it stops even in a run that judges every criterion to the end
    #: (``run_md(stop_on_failure=False)``)
    terminal = False
    #: checks by which the judged onset precedes the check that flags it (a window judged
    #: at its end dates the failure at the window's start, paper 003 Eq. 8)
    onset_lag_checks = 0
    #: attributes indexed by replica, kept in step with the replicas that remain
    per_system: tuple[str, ...] = ()
    #: attributes a windowed detector accumulates; saved in the MD checkpoint
    accumulators: tuple[str, ...] = ()

    def __call__(self, state: MDState) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def select(self, keep_s: Tensor, state: MDState) -> None:
        """Drop replicas where ``keep_s`` is False (``state`` is the state before dropping)."""
        for f in self.per_system:
            v = getattr(self, f)
            if v is not None:
                setattr(self, f, v[keep_s])

    def extend(self, other: Detector, state: MDState) -> None:
        """Append the replicas of ``other`` (the same kind of detector, built by the same
        factory on replicas that enter the batch) after those of ``state``, the batch
        before they enter: a replica queue (``run_md(batch_size=...)``). A detector that
        accumulates over a window shared by all replicas cannot take late entrants."""
        if type(other) is not type(self):
            raise TypeError(f"cannot extend {type(self).__name__} by {type(other).__name__}")
        if self.shared_accumulators():
            raise ValueError(
                f"the {self.name} detector accumulates over a window shared by its replicas: "
                "it cannot run with a replica queue (batch_size); run without one"
            )
        for f in self.per_system:
            v, w = getattr(self, f), getattr(other, f)
            setattr(self, f, None if v is None else torch.cat([v, w]))

    def shared_accumulators(self) -> list[str]:
        """The accumulators not indexed by replica (a window's count of checks): such a
        detector judges all its replicas on one clock, so none can enter late."""
        per_replica = set(self.per_system) | set(getattr(self, "per_pair", ()))
        return [f for f in self.accumulators if f not in per_replica]

    def state_dict(self) -> dict:
        """What the detector has accumulated during the run (windowed detectors), saved in
        the MD checkpoint so that a resumed run judges exactly as an uninterrupted one."""
        return {
            f: v.detach().cpu() if isinstance(v := getattr(self, f), Tensor) else v
            for f in self.accumulators
        }

    def load_state_dict(self, data: dict) -> None:
        """Restore :meth:`state_dict` (after the replicas were selected as saved)."""
        missing = [f for f in self.accumulators if f not in data]
        if missing:
            raise ValueError(
                f"the saved {self.name} detector state lacks {missing}: it was written by "
                "another version of the detector; restart the run in a new directory"
            )
        for f in self.accumulators:
            old, new = getattr(self, f), data[f]
            if isinstance(old, Tensor):
                if new.shape != old.shape:
                    raise ValueError(
                        f"the saved {self.name} accumulator {f!r} belongs to other replicas "
                        f"(shape {tuple(new.shape)}, this run {tuple(old.shape)})"
                    )
                new = new.to(old)
            setattr(self, f, new)


class NonFinite(Detector):
    name = "non_finite"
    terminal = True

    def __call__(self, state: MDState) -> Tensor:
        b = state.batch
        bad_n = ~torch.isfinite(state.forces_nc).all(dim=1) | ~torch.isfinite(b.pos_nc).all(dim=1)
        bad_s = torch.zeros(b.n_systems, dtype=torch.bool, device=b.device)
        bad_s = bad_s.index_put(
            (b.system_n[bad_n],), torch.ones_like(b.system_n[bad_n], dtype=torch.bool)
        )
        return bad_s | ~torch.isfinite(state.energy_s)


class ExplodingForces(Detector):
    name = "exploding_forces"
    terminal = True

    def __init__(self, max_force: float = 100.0) -> None:
        self.max_force = max_force

    def __call__(self, state: MDState) -> Tensor:
        f = state.forces_nc.abs().amax(dim=1).nan_to_num(nan=torch.inf)
        return scatter_max(f, state.batch.system_n, state.batch.n_systems) > self.max_force


class TemperatureBounds(Detector):
    name = "temperature"
    terminal = True

    def __init__(self, low_K: float = 0.1, high_K: float = 1e5) -> None:
        self.low, self.high = low_K, high_K

    def __call__(self, state: MDState) -> Tensor:
        t = state.temperature().nan_to_num(nan=torch.inf)
        return (t < self.low) | (t > self.high)


class _PairDetector(Detector):
    """Shared bookkeeping of detectors defined on fixed atom pairs of each replica; per-pair
    attributes are declared in ``per_pair`` and selected with their replicas."""

    pairs_2p: Tensor  # global atom indices in the current batch
    pair_sys_p: Tensor
    #: attributes indexed by pair (first dimension = pairs)
    per_pair: tuple[str, ...] = ()

    def _distances(self, state: MDState) -> Tensor:
        """(P,) pair distances, the exact minimum image in periodic replicas."""
        b = state.batch
        i, j = self.pairs_2p
        d = b.pos_nc.index_select(0, j) - b.pos_nc.index_select(0, i)
        if b.periodic:
            d = minimum_image_torch(d, b.cell_s33, b.pbc_s3, self.pair_sys_p)
        return torch.linalg.vector_norm(d, dim=1)

    def select(self, keep_s: Tensor, state: MDState) -> None:
        b = state.batch
        new_index_n = torch.cumsum(keep_s[b.system_n].long(), 0) - 1  # old atom -> new atom
        keep_p = keep_s[self.pair_sys_p]
        new_sys = torch.cumsum(keep_s.long(), 0) - 1
        self.pairs_2p = new_index_n[self.pairs_2p[:, keep_p]]
        self.pair_sys_p = new_sys[self.pair_sys_p[keep_p]]
        for f in self.per_pair:
            setattr(self, f, getattr(self, f)[keep_p])
        super().select(keep_s, state)

    def extend(self, other: Detector, state: MDState) -> None:
        b = state.batch
        self.pairs_2p = torch.cat([self.pairs_2p, other.pairs_2p + b.pos_nc.shape[0]], dim=1)
        self.pair_sys_p = torch.cat([self.pair_sys_p, other.pair_sys_p + b.n_systems])
        for f in self.per_pair:
            setattr(self, f, torch.cat([getattr(self, f), getattr(other, f)]))
        super().extend(other, state)


class BondLengthDeviation(_PairDetector):
    """Unstable when some bond deviates from its reference length by more than ``delta`` Å
    (papers 000 and 003: max_(i,j)∈𝓑 |r_ij(t) − b_ij| > Δ, Δ = 0.5 Å).

    The bonds 𝓑 and lengths b_ij come from :func:`ase_mlff.graph.geometry.bond_graph`:
    ``reference`` is one :class:`~ase_mlff.graph.geometry.BondGraph` (or a list of them,
    e.g. :func:`~ase_mlff.graph.geometry.bond_graphs_from_dataset`) made from a
    representative structure or an ensemble; each replica uses the graph whose atoms
    match its own. A replica with no matching graph gets one perceived on its start
    structure (``references[s]``), with the thermal-motion tolerance of the one
    molecular-graph criterion, which finds exactly the chemical graph on every shipped
    frame. Periodic replicas use the exact minimum image.
    """

    name = "bond_length"
    per_pair = ("b_p",)

    def __init__(
        self,
        references: Sequence[Atoms],
        delta: float = 0.5,
        reference: BondGraph | Sequence[BondGraph] | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if not delta > 0:
            raise ValueError(f"the bond deviation threshold delta must be positive, got {delta}")
        self.delta = delta
        graphs = [reference] if isinstance(reference, BondGraph) else list(reference or [])
        pairs, lengths, sys_p, offset = [], [], [], 0
        self.graphs: list[BondGraph] = []
        for s, atoms in enumerate(references):
            g = next((g for g in graphs if g.matches(atoms.numbers)), None)
            if g is None:
                g = bond_graph(atoms)
            self.graphs.append(g)
            pairs.append(g.bonds.T.reshape(2, -1) + offset)
            lengths.append(g.lengths)
            sys_p.append(np.full(len(g), s))
            offset += len(atoms)
        self.pairs_2p = torch.as_tensor(np.concatenate(pairs, axis=1), device=device)
        self.b_p = torch.as_tensor(np.concatenate(lengths), device=device)
        self.pair_sys_p = torch.as_tensor(np.concatenate(sys_p), device=device)

    def deviation(self, state: MDState) -> Tensor:
        """(S,) max |r_ij − b_ij| over each replica's bonds, Å (0 for a replica with none)."""
        dev = (self._distances(state) - self.b_p.to(state.batch.dtype)).abs()
        out = scatter_max(dev.nan_to_num(nan=torch.inf), self.pair_sys_p, state.batch.n_systems)
        return out.clamp_min(0.0)

    def __call__(self, state: MDState) -> Tensor:
        return self.deviation(state) > self.delta


class AtomOverlap(Detector):
    """Unstable when two atoms come closer than ``fraction`` × the initial minimum distance.

    Uses the neighbour graph of the batch (all pairs within the model's cutoff), so the
    threshold must be below the cutoff, as it always is for interatomic distances.
    """

    name = "atom_overlap"
    per_system = ("threshold_s",)

    def __init__(self, state: MDState, fraction: float = 0.5) -> None:
        self.threshold_s = fraction * self.min_distance(state)

    @staticmethod
    def min_distance(state: MDState) -> Tensor:
        from ase_mlff.graph.batch import edge_vectors

        b = state.batch
        d = edge_vectors(b).norm(dim=1)
        return -scatter_max(-d, b.system_n[b.edge_index_2e[0]], b.n_systems)

    def __call__(self, state: MDState) -> Tensor:
        return self.min_distance(state) < self.threshold_s


def default_detectors(
    references: Sequence[Atoms],
    state: MDState,
    delta: float = 0.5,
    bond_reference: BondGraph | Sequence[BondGraph] | None = None,
) -> list:
    """The molecular default: bonds (Δ = 0.5 Å), overlap, non-finite, forces, temperature.

    Bond graphs and lengths come from ``bond_reference`` when given (see
    :class:`BondLengthDeviation`), else from the ensemble of this run's start structures
    (:func:`~ase_mlff.graph.geometry.bond_graphs_from_frames`: per molecule, the median
    topology and mean lengths over its starts; a molecule with a single start uses that
    structure). Picklable as ``functools.partial(default_detectors, delta=...,
    bond_reference=...)``.
    """
    if bond_reference is None:
        bond_reference = bond_graphs_from_frames(references)
    return [
        NonFinite(),
        BondLengthDeviation(
            references, delta=delta, reference=bond_reference, device=state.batch.device
        ),
        AtomOverlap(state),
        ExplodingForces(),
        TemperatureBounds(),
    ]


class LindemannIndex(_PairDetector):
    """Unstable when a local Lindemann index q_i > 0.25 or the global one > 0.2 (paper 004).

    q_i = 1/(N−1) Σ_{j≠i} √(⟨r_ij²⟩ − ⟨r_ij⟩²) / ⟨r_ij⟩ over all pairs of a replica
    (minimum-image distances in periodic cells), q_global = mean_i q_i. Paper 004's text
    defines q_i as the normalised *root*-mean-squared fluctuation; its printed equation
    omits the square root, which we follow the text in keeping. Averages run over
    ``window`` consecutive checks (tumbling windows); the index is judged at each
    window's end, so a replica is flagged at the first window that shows melting.
    """

    name = "lindemann"
    per_pair = ("s1", "s2")
    accumulators = ("s1", "s2", "count")

    def __init__(
        self, state: MDState, window: int = 50, local: float = 0.25, global_: float = 0.2
    ) -> None:
        self.window, self.local, self.global_ = window, local, global_
        b = state.batch
        ptr = (torch.cumsum(b.n_atoms_s, 0) - b.n_atoms_s).tolist()
        pairs = [
            torch.triu_indices(int(n), int(n), 1, device=b.device) + p
            for n, p in zip(b.n_atoms_s.tolist(), ptr)
        ]
        self.pairs_2p = torch.cat(pairs, dim=1)
        self.pair_sys_p = b.system_n[self.pairs_2p[0]]
        self._reset(state)

    def _reset(self, state: MDState) -> None:
        dtype = state.batch.dtype
        self.s1 = torch.zeros(self.pairs_2p.shape[1], dtype=dtype, device=state.batch.device)
        self.s2 = torch.zeros_like(self.s1)
        self.count = 0

    def indices(self, state: MDState) -> tuple[Tensor, Tensor]:
        """(N,) local and (S,) global Lindemann indices of the current window."""
        b = state.batch
        mean = self.s1 / self.count
        l_p = torch.sqrt((self.s2 / self.count - mean**2).clamp_min(0.0)) / mean
        i, j = self.pairs_2p
        q_n = torch.zeros(len(b.numbers_n), dtype=l_p.dtype, device=l_p.device)
        q_n.index_add_(0, i, l_p).index_add_(0, j, l_p)
        partners_n = (b.n_atoms_s[b.system_n] - 1).clamp_min(1).to(l_p.dtype)
        q_n = q_n / partners_n
        q_s = torch.zeros(b.n_systems, dtype=l_p.dtype, device=l_p.device)
        q_s.index_add_(0, b.system_n, q_n)
        return q_n, q_s / b.n_atoms_s.to(l_p.dtype)

    def __call__(self, state: MDState) -> Tensor:
        d = self._distances(state)
        self.s1 += d
        self.s2 += d * d
        self.count += 1
        b = state.batch
        if self.count < self.window:
            return torch.zeros(b.n_systems, dtype=torch.bool, device=b.device)
        q_n, q_s = self.indices(state)
        flags = (scatter_max(q_n, b.system_n, b.n_systems) > self.local) | (q_s > self.global_)
        self._reset(state)
        return flags


def materials_detectors(references: Sequence[Atoms], state: MDState, window: int = 500) -> list:
    """The materials set of paper 004: atom overlap (stops at once) and the Lindemann
    criterion over ``window`` checks (the number of checks of the whole run reproduces the
    paper's average over all time steps), plus non-finite values, forces and temperature.
    Picklable with ``functools.partial(materials_detectors, window=...)`` (Ray agents)."""
    return [
        NonFinite(),
        AtomOverlap(state),
        LindemannIndex(state, window=window),
        ExplodingForces(),
        TemperatureBounds(),
    ]


class RDFDeviation(Detector):
    """Unstable when ∫₀^r_max |⟨g_ab⟩_τ − g_ab^ref| dr > Δ for any element pair (paper 003,
    App. A, Eq. 8; the paper uses τ = 1 ps, Δ = 3.0 for water, 1.0 for LiPS).

    **Sliding windows.** At every check the RDF of each replica, averaged over the last
    ``window`` checks (τ = window × check interval), is compared with ``reference_g``
    (P, n_bins, on the same bins), so t_inst has the resolution of the check interval. A
    failing window dates the instability at its *start* (``onset_lag_checks = window − 1``):
    Eq. 8 names T the start of the window [T, T + τ], and MDsim's ``observable.ipynb``
    slides its 10-frame window one frame at a time and reports the window's start too.

    **Range.** Eq. 8 integrates over all r; in a periodic box g is known up to half the
    cell height, which is the range to pass (:func:`ase_mlff.graph.rdf.half_cell_height`;
    MDsim integrates its water box to 6 Å). Distances are the minimum images of all atom
    pairs (:func:`ase_mlff.graph.rdf.min_image_rdf`: exact up to half the cell height, no
    graph to build) when every replica has the same atoms and the range allows it, else the
    MD batch's neighbour graph (then r_max must not exceed the model's cutoff).
    """

    name = "rdf"
    per_system = ("hist",)
    accumulators = ("hist", "count")

    def __init__(
        self,
        element_pairs: list[tuple[int, int]],
        reference_g: np.ndarray,
        r_max: float,
        window: int,
        delta: float,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1 check, got {window}")
        self.element_pairs, self.r_max, self.window, self.delta = (
            element_pairs,
            r_max,
            window,
            delta,
        )
        self.reference_g = torch.as_tensor(np.asarray(reference_g))
        self.n_bins = self.reference_g.shape[-1]
        self.onset_lag_checks = window - 1
        self.hist: Tensor | None = None  # (S, window, P, n_bins): the last `window` g's
        self.count = 0  # checks seen

    def deviation(self, g_spb: Tensor) -> Tensor:
        """(S,) max over element pairs of ∫|g − g_ref| dr."""
        dr = self.r_max / self.n_bins
        ref = self.reference_g.to(g_spb)
        return ((g_spb - ref[None]).abs().sum(dim=2) * dr).amax(dim=1)

    def rdf(self, state: MDState) -> Tensor:
        """(S, P, n_bins) g_ab of every replica now."""
        b = state.batch
        n = int(b.n_atoms_s[0])
        same = bool((b.n_atoms_s == n).all()) and bool(
            (b.numbers_n.view(-1, n) == b.numbers_n[:n]).all()
        )
        periodic = bool(b.pbc_s3.all())  # minimum images only where every axis is periodic
        if same and periodic and bool((half_cell_height(b.cell_s33) >= self.r_max - 1e-9).all()):
            pos = b.pos_nc.detach().view(b.n_systems, n, 3)
            return min_image_rdf(
                pos, b.numbers_n[:n], b.cell_s33, self.element_pairs, self.r_max, self.n_bins
            )
        return rdf_per_system(b, self.element_pairs, self.r_max, self.n_bins)

    def __call__(self, state: MDState) -> Tensor:
        g = self.rdf(state)
        if self.hist is None:
            self.hist = g.new_zeros((g.shape[0], self.window, *g.shape[1:]))
        self.hist = self.hist.to(g)  # (restored on the CPU)
        self.hist[:, self.count % self.window] = g
        self.count += 1
        if self.count < self.window:
            return torch.zeros(g.shape[0], dtype=torch.bool, device=g.device)
        return self.deviation(self.hist.mean(dim=1)) > self.delta
