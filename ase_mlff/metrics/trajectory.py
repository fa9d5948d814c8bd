"""Observables of MD trajectories: structure, fluctuations, physicality and energy series.

Works on positions arrays ``(T, N, 3)``, on lists of :class:`ase.Atoms` or on runs stored
by :class:`ase_mlff.md.storage.TrajectoryStore` (one ``replica_XXXX.traj`` per replica,
``summary.json`` with each replica's t_inst). Following paper 003 ("we ... only use the
trajectory before that time step for the computation of observables"), a stored replica
is read by default up to, not including, its instability time t_inst.

- RMSD to a reference structure after optimal superposition and per-atom RMSF about the
  mean (aligned) structure, and contact maps (mean pairwise distances; model in the lower,
  reference in the upper triangle): paper 002, Figs. 4-5.
- Lindemann index (paper 004, § 2.4.2) and the minimum interatomic distance of every
  frame (paper 004's atom-overlap criterion), minimum image in periodic cells.
- Maximum force, temperature, potential/total energy and energy drift series, and
  figures of any such series as mean ± std over replicas (paper 002, Fig. 4e-j).

All pair reductions are vectorised over frames and pairs and chunked over frames
(``MAX_PAIR_ENTRIES`` frame × pair distances at a time), so a 192-atom cell over any
number of frames stays within ~150 MB (1000 frames: ~1-2 s, ~5 s in a triclinic cell).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from ase import Atoms, units

from ase_mlff.graph.geometry import minimum_image
from ase_mlff.metrics.clusters import kabsch_align

#: pair-vector entries (frames × pairs) materialised at once by the chunked reductions
MAX_PAIR_ENTRIES = 1_000_000


def _positions(positions_tnc: np.ndarray, min_atoms: int = 1) -> np.ndarray:
    pos = np.asarray(positions_tnc, dtype=np.float64)
    if pos.ndim != 3 or pos.shape[-1] != 3 or pos.shape[1] < min_atoms or len(pos) == 0:
        raise ValueError(
            f"positions must be (frames >= 1, atoms >= {min_atoms}, 3), got {pos.shape}"
        )
    return pos


# --------------------------------------------------------------------------- trajectory
@dataclass
class Trajectory:
    """One trajectory as arrays (T frames, N atoms).

    Attributes:
        positions_tnc: (T, N, 3) positions, Å.
        numbers_n: (N,) atomic numbers.
        time_fs_t: (T,) times, fs.
        cell_33: (3, 3) cell rows (Å) of a periodic system, None for a molecule in vacuum
            (stored MD keeps the cell fixed; variable-cell frames are rejected).
        pbc_3: (3,) periodic directions (all True when a cell is given without it).
        energy_t: (T,) potential energies, eV (what the MD stores).
        temperature_t: (T,) instantaneous temperatures, K.
        max_force_t: (T,) largest atomic force norm per frame, eV/Å.
        forces_tnc: (T, N, 3) forces when available (lists of Atoms with forces).
        replica_id, t_inst_fs, reason: provenance of a stored replica (t_inst None or NaN
            when it stayed stable).
    """

    positions_tnc: np.ndarray
    numbers_n: np.ndarray
    time_fs_t: np.ndarray
    cell_33: np.ndarray | None = None
    pbc_3: np.ndarray | None = None
    energy_t: np.ndarray | None = None
    temperature_t: np.ndarray | None = None
    max_force_t: np.ndarray | None = None
    forces_tnc: np.ndarray | None = None
    replica_id: int | None = None
    t_inst_fs: float | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        self.positions_tnc = _positions(self.positions_tnc)
        t, n = self.positions_tnc.shape[:2]
        self.numbers_n = np.asarray(self.numbers_n, dtype=np.int64).reshape(-1)
        self.time_fs_t = np.asarray(self.time_fs_t, dtype=np.float64).reshape(-1)
        if len(self.numbers_n) != n:
            raise ValueError(f"{len(self.numbers_n)} atomic numbers for {n} atoms")
        if len(self.time_fs_t) != t:
            raise ValueError(f"{len(self.time_fs_t)} times for {t} frames")
        if self.cell_33 is not None:
            self.cell_33 = np.asarray(self.cell_33, dtype=np.float64)
            if self.cell_33.shape != (3, 3):
                raise ValueError(f"cell must be (3, 3), got {self.cell_33.shape}")
            self.pbc_3 = np.ones(3, bool) if self.pbc_3 is None else np.asarray(self.pbc_3, bool)
        for name in ("energy_t", "temperature_t", "max_force_t"):
            v = getattr(self, name)
            if v is not None:
                v = np.asarray(v, dtype=np.float64).reshape(-1)
                if len(v) != t:
                    raise ValueError(f"{name} has {len(v)} entries for {t} frames")
                setattr(self, name, v)
        if self.forces_tnc is not None:
            self.forces_tnc = np.asarray(self.forces_tnc, dtype=np.float64)
            if self.forces_tnc.shape != self.positions_tnc.shape:
                raise ValueError(
                    f"forces {self.forces_tnc.shape} do not match positions "
                    f"{self.positions_tnc.shape}"
                )

    @property
    def n_frames(self) -> int:
        return int(self.positions_tnc.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.positions_tnc.shape[1])

    def __len__(self) -> int:
        return self.n_frames

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_atoms(cls, images: Sequence[Atoms], dt_fs: float | None = None) -> Trajectory:
        """From a list of Atoms of one system (same atoms in the same order in each).

        Times are ``atoms.info["time_fs"]`` when every frame has it, else ``k · dt_fs``
        (``dt_fs`` defaults to 1, i.e. frame indices). Potential energies and forces come
        from an attached (e.g. SinglePoint) calculator, temperature and max force from
        ``info["temperature_K"]``/``info["max_force"]`` (as :mod:`ase_mlff.md.storage`
        writes them), or from the forces.
        """
        images = list(images)
        if not images:
            raise ValueError("no frames given")
        numbers = images[0].numbers
        for k, a in enumerate(images):
            if len(a) != len(numbers) or np.any(a.numbers != numbers):
                raise ValueError(f"frame {k} has different atoms than frame 0")
        pos = np.stack([a.positions for a in images])
        first = images[0]
        cell = pbc = None
        if first.pbc.any():
            cells = np.stack([np.asarray(a.cell[:]) for a in images])
            if not np.allclose(cells, cells[0], atol=1e-8):
                raise ValueError("variable-cell trajectories are not supported")
            cell, pbc = cells[0], first.pbc.copy()
        if all("time_fs" in a.info for a in images):
            time = np.array([a.info["time_fs"] for a in images], float)
        else:
            time = np.arange(len(images)) * (1.0 if dt_fs is None else float(dt_fs))

        def info(key: str) -> np.ndarray | None:
            if all(key in a.info for a in images):
                return np.array([a.info[key] for a in images], float)
            return None

        def result(key: str) -> list | None:
            vals = [None if a.calc is None else a.calc.results.get(key) for a in images]
            return None if any(v is None for v in vals) else vals

        energy = result("energy")
        forces = result("forces")
        forces_tnc = None if forces is None else np.stack(forces).astype(np.float64)
        max_force = info("max_force")
        if max_force is None and forces_tnc is not None:
            max_force = max_force_series(forces_tnc)
        return cls(
            positions_tnc=pos,
            numbers_n=numbers,
            time_fs_t=time,
            cell_33=cell,
            pbc_3=pbc,
            energy_t=None if energy is None else np.array(energy, float),
            temperature_t=info("temperature_K"),
            max_force_t=max_force,
            forces_tnc=forces_tnc,
        )

    @classmethod
    def from_store(
        cls, directory: str | Path, replica_id: int, stable_only: bool = True
    ) -> Trajectory:
        """A replica stored by :class:`~ase_mlff.md.storage.TrajectoryStore`.

        With ``stable_only`` only frames at times t < t_inst (from ``summary.json``) are
        kept: t_inst is the time of the first *failed* check (paper 003: stability is the
        time before the first unphysical frame), so the frame at t_inst is not stable.
        The MD drivers already store only frames up to the last passed check; the filter
        makes any store (e.g. one written by hand or truncated) safe to analyse.
        """
        from ase_mlff.md.storage import read_replica, read_summary

        directory = Path(directory)
        summary = read_summary(directory)
        info = summary.get("replicas", {}).get(str(int(replica_id)))
        if info is None:
            raise KeyError(f"replica {replica_id} is not in {directory / 'summary.json'}")
        traj = cls.from_atoms(read_replica(directory, int(replica_id)))
        t_inst = info.get("t_inst_fs")
        t_inst = None if t_inst is None or not np.isfinite(float(t_inst)) else float(t_inst)
        traj.replica_id, traj.t_inst_fs, traj.reason = int(replica_id), t_inst, info.get("reason")
        if stable_only and t_inst is not None:
            keep = traj.time_fs_t < t_inst
            if not keep.any():
                raise ValueError(f"replica {replica_id} has no frame before t_inst {t_inst} fs")
            traj = traj.select(keep)
        return traj

    def select(self, frames: np.ndarray | slice) -> Trajectory:
        """The frames picked by a boolean mask, index array or slice."""

        def pick(v):
            return None if v is None else v[frames]

        return replace(
            self,
            positions_tnc=self.positions_tnc[frames],
            time_fs_t=self.time_fs_t[frames],
            energy_t=pick(self.energy_t),
            temperature_t=pick(self.temperature_t),
            max_force_t=pick(self.max_force_t),
            forces_tnc=pick(self.forces_tnc),
        )

    def to_atoms(self) -> list[Atoms]:
        """The frames as Atoms (positions, numbers, cell; no calculator)."""
        cell = np.zeros((3, 3)) if self.cell_33 is None else self.cell_33
        pbc = False if self.pbc_3 is None else self.pbc_3
        return [Atoms(self.numbers_n, positions=p, cell=cell, pbc=pbc) for p in self.positions_tnc]

    # ---------------------------------------------------------------- energies
    @property
    def n_dof(self) -> int:
        """Degrees of freedom behind the stored temperature: 3N − 3, as in
        :attr:`ase_mlff.md.state.MDState.n_dof_s` and the ASE driver."""
        return max(3 * self.n_atoms - 3, 1)

    @property
    def kinetic_energy_t(self) -> np.ndarray:
        """(T,) kinetic energies recovered from the stored temperatures, eV:
        K = ½ n_dof k_B T (exact: the MD computed T = 2K / (n_dof k_B))."""
        if self.temperature_t is None:
            raise ValueError("this trajectory has no temperatures")
        return 0.5 * self.n_dof * units.kB * self.temperature_t

    @property
    def total_energy_t(self) -> np.ndarray:
        """(T,) total energies E_pot + K, eV (the stored energy is the potential energy)."""
        if self.energy_t is None:
            raise ValueError("this trajectory has no energies")
        return self.energy_t + self.kinetic_energy_t


def iter_study(
    out_dir: str | Path, models: Sequence[str] | None = None, stable_only: bool = True
) -> Iterator[tuple[str, Trajectory]]:
    """Yield ``(model directory name, Trajectory)`` for every stored replica of a study.

    Layout of :func:`ase_mlff.agents.study.run_stability_study`:
    ``<out_dir>/<model>/agent_XX/replica_XXXX.traj`` plus ``summary.json`` per agent
    directory; ``models`` restricts to those model directory names. Replicas that stored
    no frame (or, with ``stable_only``, none before t_inst) are skipped.
    """
    from ase_mlff.md.storage import read_summary

    out = Path(out_dir)
    if not out.is_dir():
        raise FileNotFoundError(f"no study directory {out}")
    for model_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        if models is not None and model_dir.name not in models:
            continue
        agents = sorted(d for d in model_dir.glob("agent_*") if (d / "summary.json").exists())
        for agent in agents:
            for key in sorted(read_summary(agent).get("replicas", {}), key=int):
                if not (agent / f"replica_{int(key):04d}.traj").exists():
                    continue
                try:
                    yield model_dir.name, Trajectory.from_store(agent, int(key), stable_only)
                except ValueError:  # nothing stable to analyse
                    continue


def load_study(
    out_dir: str | Path, models: Sequence[str] | None = None, stable_only: bool = True
) -> dict[str, list[Trajectory]]:
    """All stored replicas of a stability study: model directory name -> trajectories
    (sorted by replica id); see :func:`iter_study`."""
    out: dict[str, list[Trajectory]] = {}
    for model, traj in iter_study(out_dir, models, stable_only):
        out.setdefault(model, []).append(traj)
    for trajs in out.values():
        trajs.sort(key=lambda t: -1 if t.replica_id is None else t.replica_id)
    return out


# --------------------------------------------------------------------------- geometry
def _pair_distance_chunks(
    positions_tnc: np.ndarray,
    cell_33: np.ndarray | None,
    pbc_3: np.ndarray | None,
    pairs_2p: np.ndarray | None = None,
) -> Iterator[tuple[slice, np.ndarray]]:
    """(frame slice, (C, P) distances) over chunks of frames, pairs i < j by default."""
    pos = positions_tnc
    if pairs_2p is None:
        pairs_2p = np.stack(np.triu_indices(pos.shape[1], k=1))
    i, j = pairs_2p
    chunk = max(1, MAX_PAIR_ENTRIES // max(len(i), 1))
    for start in range(0, len(pos), chunk):
        sl = slice(start, min(start + chunk, len(pos)))
        d = minimum_image(pos[sl][:, j] - pos[sl][:, i], cell_33, pbc_3)
        yield sl, np.sqrt(np.einsum("tpc,tpc->tp", d, d))


def min_distance_series(
    positions_tnc: np.ndarray, cell_33: np.ndarray | None = None, pbc_3: np.ndarray | None = None
) -> np.ndarray:
    """(T,) smallest interatomic distance of every frame, Å (minimum image in a cell).

    Paper 004's atom-overlap criterion flags a trajectory when this falls to ½ of its
    value in the first frame (:class:`ase_mlff.md.detectors.AtomOverlap` on line). Only
    pairs of distinct atoms count (not an atom and its own periodic image).
    """
    pos = _positions(positions_tnc, min_atoms=2)
    out = np.empty(len(pos))
    for sl, d in _pair_distance_chunks(pos, cell_33, pbc_3):
        out[sl] = d.min(axis=1)
    return out


def lindemann_index(
    positions_tnc: np.ndarray, cell_33: np.ndarray | None = None, pbc_3: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Local Lindemann indices q_i (N,) and the global index over all frames (paper 004).

    Paper 004 (§ 2.4.2) describes q_i as "the normalized root-mean-squared bond length
    fluctuation" but prints

        q_i = 1/(N−1) Σ_{j≠i} (⟨r_ij²⟩ − ⟨r_ij⟩²) / ⟨r_ij⟩,   q_global = 1/N Σ_i q_i,

    i.e. the variance over ⟨r⟩, which has units of length and is not the classical
    (dimensionless) Lindemann index. We compute the classical one its text names,

        q_i = 1/(N−1) Σ_{j≠i} √(⟨r_ij²⟩ − ⟨r_ij⟩²) / ⟨r_ij⟩,

    exactly as the on-line detector :class:`ase_mlff.md.detectors.LindemannIndex` does
    (same pairs, same minimum-image distances; the detector averages over tumbling
    windows of checks, this function over all given frames), so that the paper's
    thresholds (q_i > 0.25 or q_global > 0.2) mean the same thing in both. ⟨·⟩ is the
    average over frames; distances are minimum-image in a cell, so pairs further apart
    than half the cell are ill-defined (they jump between images).

    The variance is accumulated about the first frame's distances (shifted sums), which
    keeps it exact (0 for a static structure) and free of cancellation.
    """
    pos = _positions(positions_tnc, min_atoms=2)
    n = pos.shape[1]
    i, j = np.triu_indices(n, k=1)
    s1 = np.zeros(len(i))
    s2 = np.zeros(len(i))
    d0 = None
    for _, d in _pair_distance_chunks(pos, cell_33, pbc_3):
        if d0 is None:
            d0 = d[0].copy()
        x = d - d0
        s1 += x.sum(axis=0)
        s2 += np.einsum("tp,tp->p", x, x)
    t = len(pos)
    mean_shift = s1 / t
    var = np.clip(s2 / t - mean_shift**2, 0.0, None)
    l_p = np.sqrt(var) / (d0 + mean_shift)
    q = np.bincount(i, l_p, minlength=n) + np.bincount(j, l_p, minlength=n)
    q = q / (n - 1)
    return q, float(q.mean())


# --------------------------------------------------------------------------- RMSD, RMSF
def _atom_subset(pos: np.ndarray, atoms, weights):
    if atoms is None:
        return pos, weights
    idx = np.asarray(atoms)
    w = None if weights is None else np.asarray(weights, float)[idx]
    return pos[:, idx], w


def rmsd_series(
    positions_tnc: np.ndarray,
    reference_nc: np.ndarray,
    align: bool = True,
    atoms: np.ndarray | Sequence[int] | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """(T,) RMSD of every frame to a reference structure, Å (paper 002, Figs. 4-5 h-j).

    RMSD(t) = √( Σ_i w_i |R(t) x_i(t) + c(t) − x_i^ref|² / Σ_i w_i ), with the optimal
    rotation R and translation c (Kabsch, :func:`ase_mlff.metrics.clusters.kabsch_align`)
    when ``align``, else the identity. ``atoms`` selects atoms (e.g. heavy atoms, as the
    paper's figures index them); ``weights`` (N,) e.g. masses, default uniform. Use
    unwrapped positions (:func:`ase_mlff.metrics.diffusion.unwrap`) for molecules in a
    periodic cell.
    """
    pos = _positions(positions_tnc)
    ref = np.asarray(reference_nc, dtype=np.float64)
    if ref.shape != pos.shape[1:]:
        raise ValueError(f"reference {ref.shape} does not match frames of shape {pos.shape[1:]}")
    pos, w = _atom_subset(pos, atoms, weights)
    ref = ref if atoms is None else ref[np.asarray(atoms)]
    if align:
        _, rmsd = kabsch_align(pos, ref, w)
        return np.asarray(rmsd, dtype=np.float64)
    w = np.ones(pos.shape[1]) if w is None else np.asarray(w, float)
    d2 = np.einsum("tnc,tnc->tn", pos - ref, pos - ref)
    return np.sqrt(d2 @ w / w.sum())


def rmsf(
    positions_tnc: np.ndarray,
    align: bool = True,
    reference_nc: np.ndarray | None = None,
    atoms: np.ndarray | Sequence[int] | None = None,
    weights: np.ndarray | None = None,
    n_iter: int = 3,
) -> np.ndarray:
    """(N,) root-mean-square fluctuation of every atom about its mean position, Å
    (paper 002, Figs. 4-5 k-m): RMSF_i = √⟨|x_i(t) − ⟨x_i⟩|²⟩_t.

    With ``align`` the frames are first superposed (Kabsch) on ``reference_nc`` (default
    the first frame) and then ``n_iter`` times on the mean of the aligned frames, so the
    result does not depend on the reference (as GROMACS' ``gmx rmsf`` after a fit). Rigid
    rotations and translations then do not count as fluctuations — but an unweighted fit
    also spreads one atom's motion over the others; ``weights`` (N,) restricts the fit
    (e.g. 0 on flexible groups) without changing which atoms are reported.
    """
    pos = _positions(positions_tnc)
    pos, w = _atom_subset(pos, atoms, weights)
    if align:
        ref = pos[0] if reference_nc is None else np.asarray(reference_nc, np.float64)
        if reference_nc is not None and atoms is not None:
            ref = ref[np.asarray(atoms)]
        if ref.shape != pos.shape[1:]:
            raise ValueError(f"reference {ref.shape} does not match frames {pos.shape[1:]}")
        aligned, _ = kabsch_align(pos, ref, w)
        for _ in range(max(n_iter, 0)):
            aligned, _ = kabsch_align(pos, np.asarray(aligned).mean(axis=0), w)
        pos = np.asarray(aligned, dtype=np.float64)
    dev = pos - pos.mean(axis=0)
    return np.sqrt(np.einsum("tnc,tnc->n", dev, dev) / len(pos))


# --------------------------------------------------------------------------- contact maps
def contact_map(
    positions_tnc: np.ndarray,
    cutoff: float | None = None,
    cell_33: np.ndarray | None = None,
    pbc_3: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Mean pairwise distance matrix ⟨|x_i − x_j|⟩_t (N, N), Å (paper 002, Fig. 4b-d).

    With ``cutoff`` returns ``(mean distances, contact frequency)``, the frequency being
    the fraction of frames with |x_i − x_j| < cutoff (diagonal 0).
    """
    pos = _positions(positions_tnc, min_atoms=2)
    n = pos.shape[1]
    i, j = np.triu_indices(n, k=1)
    s = np.zeros(len(i))
    c = np.zeros(len(i))
    for _, d in _pair_distance_chunks(pos, cell_33, pbc_3):
        s += d.sum(axis=0)
        if cutoff is not None:
            c += (d < cutoff).sum(axis=0)
    mean = np.zeros((n, n))
    mean[i, j] = mean[j, i] = s / len(pos)
    if cutoff is None:
        return mean
    freq = np.zeros((n, n))
    freq[i, j] = freq[j, i] = c / len(pos)
    return mean, freq


def contact_map_mae(map_a: np.ndarray, map_b: np.ndarray) -> float:
    """Mean |a_ij − b_ij| over the pairs i < j of two (N, N) contact maps."""
    a, b = np.asarray(map_a, float), np.asarray(map_b, float)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] != a.shape[1] or len(a) < 2:
        raise ValueError(f"contact maps must be equal (N, N), N >= 2; got {a.shape}, {b.shape}")
    i, j = np.triu_indices(len(a), k=1)
    return float(np.abs(a[i, j] - b[i, j]).mean())


def combine_triangles(model_map: np.ndarray, reference_map: np.ndarray) -> np.ndarray:
    """(N, N) with the model in the lower triangle (i > j), the reference in the upper."""
    a, b = np.asarray(model_map, float), np.asarray(reference_map, float)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"contact maps must be equal (N, N); got {a.shape}, {b.shape}")
    return np.tril(a, k=-1) + np.triu(b, k=1)


def contact_map_figure(
    model_map: np.ndarray,
    reference_map: np.ndarray,
    labels: Sequence[str] | None = None,
    title: str = "",
    label: str = "mean distance (Å)",
):
    """Model (lower triangle) vs reference (upper triangle), as paper 002 Fig. 4b-d."""
    from ase_mlff.metrics.plots import _plt

    plt = _plt()
    m = combine_triangles(model_map, reference_map)
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    im = ax.imshow(m, cmap="viridis", origin="upper")
    fig.colorbar(im, ax=ax, label=label)
    if labels is not None:
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.set(xlabel="atom", ylabel="atom")
    ax.set_title(title or "lower: model, upper: reference")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- series
def max_force_series(source: Trajectory | np.ndarray) -> np.ndarray:
    """(T,) largest atomic force norm per frame, eV/Å: from forces (T, N, 3) or from a
    Trajectory (its forces when it has them, else the stored ``max_force``)."""
    if isinstance(source, Trajectory):
        if source.forces_tnc is not None:
            return max_force_series(source.forces_tnc)
        if source.max_force_t is None:
            raise ValueError("this trajectory has neither forces nor stored max forces")
        return source.max_force_t
    f = _positions(source)
    return np.sqrt(np.einsum("tnc,tnc->tn", f, f)).max(axis=1)


def kinetic_energy_from_temperature(
    temperature_t: np.ndarray, n_atoms: int, n_dof: int | None = None
) -> np.ndarray:
    """K = ½ n_dof k_B T, eV, n_dof = 3N − 3 by default (the MD drivers' convention)."""
    dof = max(3 * n_atoms - 3, 1) if n_dof is None else n_dof
    return 0.5 * dof * units.kB * np.asarray(temperature_t, dtype=np.float64)


def energy_drift(
    time_fs_t: np.ndarray, total_energy_t: np.ndarray, n_atoms: int = 1
) -> dict[str, float]:
    """Energy conservation of an NVE run from its total energies (E_pot + K, eV).

    Returns the least-squares slope of E(t) in eV/ps per atom (``drift_eV_per_ps_per_atom``)
    and max_t |E(t) − E(0)| in eV (``max_abs_deviation_eV``) and per atom. For a stored
    run, E = :attr:`Trajectory.total_energy_t` (the store keeps the potential energy and
    the temperature, from which K = ½(3N − 3)k_B T is exact). Under a thermostat the
    total energy is not conserved and these numbers measure the heat exchanged instead.
    """
    t = np.asarray(time_fs_t, dtype=np.float64).reshape(-1)
    e = np.asarray(total_energy_t, dtype=np.float64).reshape(-1)
    if len(t) != len(e) or len(t) < 2:
        raise ValueError(f"need >= 2 matching times and energies, got {len(t)} and {len(e)}")
    slope = np.polyfit(t / 1000.0, e, 1)[0]
    dev = float(np.abs(e - e[0]).max())
    return {
        "drift_eV_per_ps_per_atom": float(slope / n_atoms),
        "max_abs_deviation_eV": dev,
        "max_abs_deviation_eV_per_atom": dev / n_atoms,
    }


def mean_std_over_replicas(
    series: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pool replicas' ``(time_fs, values)`` on the union of their times.

    Returns ``(times, mean, std, count)``; at each time only the replicas that have a
    frame there contribute (so late times average over the replicas still stable).
    """
    if not series:
        raise ValueError("no series given")
    times = np.unique(np.concatenate([np.asarray(t, float) for t, _ in series]))
    stack = np.full((len(series), len(times)), np.nan)
    for k, (t, y) in enumerate(series):
        t, y = np.asarray(t, float), np.asarray(y, float)
        if t.shape != y.shape:
            raise ValueError(f"series {k}: {len(t)} times but {len(y)} values")
        stack[k, np.searchsorted(times, t)] = y
    count = np.isfinite(stack).sum(axis=0)
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(stack, axis=0)
        std = np.nanstd(stack, axis=0)
    return times, mean, std, count


def series_figure(
    series_by_model: dict[str, Sequence[tuple[np.ndarray, np.ndarray]]],
    ylabel: str,
    title: str = "",
    ax=None,
):
    """Mean ± std over replicas of a time series per model (paper 002, Fig. 4e-j).

    ``series_by_model``: model -> list of ``(time_fs, values)`` per replica, e.g. RMSD,
    minimum distance, temperature or energy. Time is shown in ps.
    """
    from ase_mlff.metrics.plots import axes_or_new, finish_axes

    fig, ax = axes_or_new(ax, (6, 3.4))
    for name, series in series_by_model.items():
        t, mean, std, _ = mean_std_over_replicas(series)
        (line,) = ax.plot(t / 1000.0, mean, lw=1.2, label=f"{name} ({len(series)})")
        ax.fill_between(t / 1000.0, mean - std, mean + std, color=line.get_color(), alpha=0.25)
    ax.set_xlabel("time (ps)")
    ax.set_ylabel(ylabel)
    return finish_axes(fig, ax, title)


def observables_figure(
    trajectories_by_model: dict[str, Sequence[Trajectory]],
    reference_nc: np.ndarray | None = None,
    atoms: np.ndarray | Sequence[int] | None = None,
):
    """2 × 2 panels of mean ± std over replicas: RMSD to ``reference_nc`` (aligned;
    skipped without a reference), minimum interatomic distance, temperature and
    potential energy relative to each replica's first frame (models whose energy zero
    differs, e.g. one pre-trained on force-field labels, share one axis), for several
    models."""
    from ase_mlff.metrics.plots import _plt

    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4))
    panels = {
        "RMSD (Å)": lambda tr: rmsd_series(tr.positions_tnc, reference_nc, atoms=atoms),
        "min. distance (Å)": lambda tr: min_distance_series(tr.positions_tnc, tr.cell_33, tr.pbc_3),
        "temperature (K)": lambda tr: tr.temperature_t,
        "E_pot − E_pot(0) (eV)": lambda tr: (
            None if tr.energy_t is None else tr.energy_t - tr.energy_t[0]
        ),
    }
    for ax, (label, fn) in zip(axes.ravel(), panels.items()):
        if label.startswith("RMSD") and reference_nc is None:
            ax.set_axis_off()
            continue
        data = {}
        for model, trajs in trajectories_by_model.items():
            vals = [(tr.time_fs_t, fn(tr)) for tr in trajs]
            vals = [(t, v) for t, v in vals if v is not None]
            if vals:
                data[model] = vals
        if data:
            series_figure(data, label, ax=ax)
        else:
            ax.set_axis_off()
    fig.tight_layout()
    return fig


def rmsf_figure(
    rmsf_by_model: dict[str, np.ndarray],
    labels: Sequence[str] | None = None,
    title: str = "",
):
    """Per-atom RMSF per model: (N,) or (replicas, N) (mean ± std), paper 002 Fig. 4k-m."""
    from ase_mlff.metrics.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, values in rmsf_by_model.items():
        v = np.atleast_2d(np.asarray(values, float))
        x = np.arange(v.shape[1])
        mean, std = v.mean(axis=0), v.std(axis=0)
        (line,) = ax.plot(x, mean, marker="o", ms=3, lw=1.0, label=name)
        if len(v) > 1:
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.25)
    if labels is not None:
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set(xlabel="atom", ylabel="RMSF (Å)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
