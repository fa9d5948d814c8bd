"""A batch of many systems (molecules or periodic cells) in one flat set of tensors.

Shapes: ``N`` atoms of all systems, ``S`` systems, ``E`` edges. Atoms of a system are
contiguous and ``system_n`` gives each atom's system. Units: Å, eV.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from ase import Atoms
from torch import Tensor

from ase_mlff.graph.neighbours import neighbour_list


def _graph(pos, cell, pbc, system, n_atoms, cutoff: float) -> tuple[Tensor, Tensor]:
    """The neighbour graph, or an empty one for ``cutoff == 0`` (fixed-topology potentials)."""
    if cutoff == 0:
        empty = torch.zeros((2, 0), dtype=torch.long, device=pos.device)
        return empty, torch.zeros((0, 3), dtype=torch.long, device=pos.device)
    return neighbour_list(pos, cell, pbc, system, n_atoms, cutoff)


@dataclass
class Batch:
    """Flat tensors of a batch of systems plus their neighbour graph and optional labels.

    Attributes:
        numbers_n: (N,) atomic numbers, long.
        pos_nc: (N, 3) positions, Å.
        cell_s33: (S, 3, 3) cell rows, Å.
        pbc_s3: (S, 3) bool.
        system_n: (N,) system index of every atom, long.
        n_atoms_s: (S,) atoms per system, long.
        edge_index_2e: (2, E) centre i, neighbour j.
        shift_e3: (E, 3) integer cell shifts, ``D = x_j - x_i + shift · cell``.
        cutoff: the potential's cutoff, Å (0: no graph, for fixed-topology potentials
            such as the classical force fields).
        energy_s, forces_nc, stress_s33, weight_s: optional labels (eV, eV/Å, eV/Å³).
        skin: Verlet skin, Å. With ``skin > 0`` the graph holds every pair within
            ``cutoff + skin`` of the positions ``ref_pos_nc`` it was built at, and
            :meth:`with_positions` keeps it while no atom has moved ``skin / 2`` or more
            from there (and the cells are unchanged): no pair can then have come within
            ``cutoff`` that the graph lacks. The potentials weigh every edge with a
            cutoff function that is exactly 0 beyond ``cutoff``, so the extra edges
            change no energy or force (tested against rebuilding every step).
    """

    numbers_n: Tensor
    pos_nc: Tensor
    cell_s33: Tensor
    pbc_s3: Tensor
    system_n: Tensor
    n_atoms_s: Tensor
    edge_index_2e: Tensor
    shift_e3: Tensor
    cutoff: float
    energy_s: Tensor | None = None
    forces_nc: Tensor | None = None
    stress_s33: Tensor | None = None
    weight_s: Tensor | None = None
    skin: float = 0.0
    ref_pos_nc: Tensor | None = None

    @property
    def graph_radius(self) -> float:
        """The distance up to which the graph holds every pair: cutoff + skin (0: none)."""
        return self.cutoff + self.skin if self.cutoff > 0 else 0.0

    @property
    def n_systems(self) -> int:
        return int(self.n_atoms_s.shape[0])

    @property
    def periodic(self) -> bool:
        return bool(self.pbc_s3.any())

    @property
    def device(self) -> torch.device:
        return self.pos_nc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pos_nc.dtype

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Batch:
        """Move to a device; floating tensors are cast to ``dtype`` when given."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                cast = dtype and v.is_floating_point() and f.name != "energy_s"
                v = v.to(device=device, dtype=dtype if cast else None)
            out[f.name] = v
        return Batch(**out)

    def with_positions(self, pos_nc: Tensor, cell_s33: Tensor | None = None) -> Batch:
        """A batch with new positions (and cell) and a neighbour graph for them: the same
        graph when the Verlet skin allows (see ``skin``), else a freshly built one."""
        cell = self.cell_s33 if cell_s33 is None else cell_s33
        if self.skin > 0 and self.ref_pos_nc is not None and torch.equal(cell, self.cell_s33):
            moved = (pos_nc.detach() - self.ref_pos_nc).norm(dim=1)
            if float(moved.max()) < 0.5 * self.skin:
                return replace(self, pos_nc=pos_nc)
        return self.rebuilt(pos_nc, cell)

    def rebuilt(self, pos_nc: Tensor, cell_s33: Tensor | None = None) -> Batch:
        """A batch at ``pos_nc`` (and cell) with its graph built there (and, with a skin,
        the reference positions set there)."""
        cell = self.cell_s33 if cell_s33 is None else cell_s33
        edge_index, shift = _graph(
            pos_nc.detach(),
            cell.detach(),
            self.pbc_s3,
            self.system_n,
            self.n_atoms_s,
            self.graph_radius,
        )
        ref = pos_nc.detach().clone() if self.skin > 0 else None
        return replace(
            self,
            pos_nc=pos_nc,
            cell_s33=cell,
            edge_index_2e=edge_index,
            shift_e3=shift,
            ref_pos_nc=ref,
        )

    def with_skin(self, skin: float) -> Batch:
        """The batch with a Verlet skin of ``skin`` Å (0: none), its graph rebuilt."""
        if skin < 0:
            raise ValueError(f"the Verlet skin must be ≥ 0 Å, got {skin}")
        return replace(self, skin=float(skin)).rebuilt(self.pos_nc, self.cell_s33)

    # ------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        numbers_n: np.ndarray | Tensor,
        pos_nc: np.ndarray | Tensor,
        n_atoms_s: np.ndarray | Tensor,
        cell_s33: np.ndarray | Tensor | None = None,
        pbc_s3: np.ndarray | Tensor | None = None,
        *,
        cutoff: float,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        energy_s: np.ndarray | Tensor | None = None,
        forces_nc: np.ndarray | Tensor | None = None,
        stress_s33: np.ndarray | Tensor | None = None,
        weight_s: np.ndarray | Tensor | None = None,
        skin: float = 0.0,
    ) -> Batch:
        if skin < 0:
            raise ValueError(f"the Verlet skin must be ≥ 0 Å, got {skin}")

        def f(x: np.ndarray | Tensor | None) -> Tensor | None:
            return None if x is None else torch.as_tensor(x, dtype=dtype, device=device)

        numbers = torch.as_tensor(numbers_n, dtype=torch.long, device=device).reshape(-1)
        pos = torch.as_tensor(pos_nc, dtype=dtype, device=device).reshape(-1, 3)
        n_atoms = torch.as_tensor(n_atoms_s, dtype=torch.long, device=device).reshape(-1)
        n_sys = len(n_atoms)
        if len(numbers) == 0 or n_sys == 0:
            raise ValueError("a batch needs at least one system with at least one atom")
        if int(n_atoms.sum()) != len(numbers) or len(pos) != len(numbers):
            raise ValueError("numbers, positions and n_atoms do not agree in size")
        if not bool(torch.isfinite(pos).all()):
            raise ValueError("positions contain NaN or inf")
        cell = (
            torch.zeros(n_sys, 3, 3, dtype=dtype, device=device)
            if cell_s33 is None
            else torch.as_tensor(cell_s33, dtype=dtype, device=device).reshape(n_sys, 3, 3)
        )
        pbc = (
            torch.zeros(n_sys, 3, dtype=torch.bool, device=device)
            if pbc_s3 is None
            else torch.as_tensor(pbc_s3, dtype=torch.bool, device=device).reshape(n_sys, 3)
        )
        system = torch.repeat_interleave(torch.arange(n_sys, device=device), n_atoms)
        radius = cutoff + skin if cutoff > 0 else cutoff  # 0: no graph; < 0: refused
        edge_index, shift = _graph(pos, cell, pbc, system, n_atoms, radius)
        return cls(
            numbers_n=numbers,
            pos_nc=pos,
            cell_s33=cell,
            pbc_s3=pbc,
            system_n=system,
            n_atoms_s=n_atoms,
            edge_index_2e=edge_index,
            shift_e3=shift,
            cutoff=float(cutoff),
            # total energies (~1e3 eV) keep float64 whatever the model dtype
            energy_s=None
            if energy_s is None
            else torch.as_tensor(energy_s, dtype=torch.float64, device=device),
            forces_nc=f(forces_nc),
            stress_s33=f(stress_s33),
            weight_s=f(weight_s),
            skin=float(skin),
            ref_pos_nc=pos.detach().clone() if skin > 0 else None,
        )

    @classmethod
    def from_atoms(
        cls,
        images: Atoms | Sequence[Atoms],
        *,
        cutoff: float,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        skin: float = 0.0,
    ) -> Batch:
        """Build from ASE Atoms (one or many; different molecules may be mixed); ``skin``:
        a Verlet skin (see the class doc)."""
        if isinstance(images, Atoms):
            images = [images]
        if len(images) == 0:
            raise ValueError("no structures given")
        for k, a in enumerate(images):
            if len(a) == 0:
                raise ValueError(f"structure {k} is an empty Atoms")
        return cls.from_arrays(
            np.concatenate([a.numbers for a in images]),
            np.concatenate([a.positions for a in images]),
            np.array([len(a) for a in images]),
            np.stack([np.asarray(a.cell[:]) for a in images]),
            np.stack([a.pbc for a in images]),
            cutoff=cutoff,
            dtype=dtype,
            device=device,
            skin=skin,
        )

    @classmethod
    def from_dataset(
        cls,
        dataset,  # ase_mlff.data.Dataset (not imported: graph knows no data layer types)
        frames: Sequence[int] | np.ndarray | None = None,
        *,
        cutoff: float,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        labels: bool = True,
    ) -> Batch:
        frames = np.arange(len(dataset)) if frames is None else np.asarray(frames, dtype=np.int64)
        atoms = dataset.atom_index(frames)
        return cls.from_arrays(
            dataset.numbers_n[atoms],
            dataset.positions_nc[atoms],
            dataset.n_atoms_s[frames],
            dataset.cell_s33[frames],
            dataset.pbc_s3[frames],
            cutoff=cutoff,
            dtype=dtype,
            device=device,
            energy_s=dataset.energy_s[frames] if labels else None,
            forces_nc=dataset.forces_nc[atoms] if labels else None,
            stress_s33=(
                dataset.stress_s33[frames] if labels and dataset.stress_s33 is not None else None
            ),
            weight_s=dataset.weight_s[frames] if labels else None,
        )


def edge_vectors(
    batch: Batch,
    pos_nc: Tensor | None = None,
    cell_s33: Tensor | None = None,
    edges: Tensor | None = None,
) -> Tensor:
    """(E, 3) edge vectors ``x_j - x_i + shift · cell``, differentiable in pos and cell.

    ``edges`` (bool mask or index) restricts the result to a subset of the graph's edges.
    """
    pos = batch.pos_nc if pos_nc is None else pos_nc
    cell = batch.cell_s33 if cell_s33 is None else cell_s33
    edge_index, shift = batch.edge_index_2e, batch.shift_e3
    if edges is not None:
        edge_index, shift = edge_index[:, edges], shift[edges]
    i, j = edge_index
    vec = pos.index_select(0, j) - pos.index_select(0, i)
    # eagerly, molecules skip the shift term; a compiled model always adds it (zero shifts
    # for molecules), so that no data-dependent branch breaks its graph
    if torch.compiler.is_compiling() or (batch.periodic and shift.numel()):
        cell_e = cell.index_select(0, batch.system_n.index_select(0, i))
        vec = vec + torch.einsum("ec,ecd->ed", shift.to(pos.dtype), cell_e)
    return vec


def restrict_graph(batch: Batch, cutoff: float) -> Batch:
    """``batch`` with only the edges shorter than ``cutoff`` (the same batch when its graph
    holds nothing beyond ``cutoff``, or has none). Positions stay differentiable. Used by
    the hybrid (each part sees its own cutoff) and by
    :func:`~ase_mlff.models.compute_properties` (a Verlet-skin graph's extra shell is not
    evaluated).

    Inside a compiled model (:mod:`ase_mlff.models.compiled`) the edges are all kept and
    only ``cutoff`` is set: selecting them is a data-dependent shape that would break the
    graph, and every potential of this package (PaiNN, SchNet, the EAM) weighs an edge
    beyond its cutoff by a cutoff function that is exactly 0 there, value and slope
    (tests/test_compiled.py compares the two). A part of a hybrid that sums over edges
    without such a function would see the extra edges when compiled: compile it with
    ``compile=False`` or give it one."""
    if batch.graph_radius <= cutoff or batch.cutoff == 0 or batch.edge_index_2e.shape[1] == 0:
        return batch
    if torch.compiler.is_compiling():
        return replace(batch, cutoff=float(cutoff), skin=batch.graph_radius - float(cutoff))
    return restrict_graph_and_lengths(batch, cutoff)[0]


def restrict_graph_and_lengths(batch: Batch, cutoff: float) -> tuple[Batch, Tensor]:
    """:func:`restrict_graph` and the squared lengths (E',) of the edges it keeps, from
    one evaluation of the edge vectors (detached): what the calculator's close-atoms
    check needs too."""
    with torch.no_grad():
        vec = edge_vectors(batch)
        r2 = (vec * vec).sum(dim=1)
    if batch.graph_radius <= cutoff or batch.cutoff == 0 or batch.edge_index_2e.shape[1] == 0:
        return batch, r2
    keep = r2 < cutoff * cutoff
    restricted = replace(
        batch,
        edge_index_2e=batch.edge_index_2e[:, keep],
        shift_e3=batch.shift_e3[keep],
        cutoff=float(cutoff),
        skin=0.0,
        ref_pos_nc=None,
    )
    return restricted, r2[keep]


def replica_vectors(batch: Batch, a, b) -> Tensor:
    """``x_b − x_a`` for atoms ``a`` and ``b`` (indices within a system) of every system of
    the batch, the exact minimum image in periodic systems
    (:func:`ase_mlff.graph.geometry.minimum_image_torch`); differentiable. Integers give
    (S, 3); equal-length index sequences give (S, P, 3), all pairs at once."""
    from ase_mlff.graph.geometry import minimum_image_torch

    single = isinstance(a, (int, np.integer)) and isinstance(b, (int, np.integer))
    dev = batch.pos_nc.device
    a_p = torch.as_tensor(np.atleast_1d(a), dtype=torch.long, device=dev)
    b_p = torch.as_tensor(np.atleast_1d(b), dtype=torch.long, device=dev)
    ptr = (torch.cumsum(batch.n_atoms_s, 0) - batch.n_atoms_s)[:, None]
    d = batch.pos_nc[ptr + b_p[None]] - batch.pos_nc[ptr + a_p[None]]  # (S, P, 3)
    if batch.periodic:
        s, p = d.shape[:2]
        systems = torch.arange(s, device=dev).repeat_interleave(p)
        d = minimum_image_torch(d.reshape(-1, 3), batch.cell_s33, batch.pbc_s3, systems)
        d = d.reshape(s, p, 3)
    return d[:, 0] if single else d
