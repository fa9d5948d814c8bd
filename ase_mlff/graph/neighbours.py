"""Neighbour lists in torch for a batch of molecules and periodic cells.

Convention (as ``matscipy.neighbours.neighbour_list``): an edge ``e`` from centre ``i`` to
neighbour ``j`` with integer cell shift ``S_e`` has the vector

    D_e = x_j - x_i + S_e · cell,          |D_e| < cutoff,

both directions of every pair are listed, and the self pair with zero shift is excluded.

Two implementations, each used where it measured faster (benchmarks/neighbour_lists.py,
docs/benchmarks.md):

- **Periodic systems, on every device: vesin** (``vesin.NeighborList``, a cell list in
  C++ on the host, one system per call). On a 192-atom water box it takes 1 ms where the
  all-pairs search below takes 155 ms on the CPU, and 5.6 ms against 7 s on 1,331 copper
  atoms; its pair set is checked equal to ours (and to matscipy's and ASE's in
  tests/test_neighbours.py). On an H200 GPU the torch search took 2.4 ms (192 water
  atoms) to 300 ms (5,324 Cu atoms) against vesin's 0.6-4.8 ms on the host, so periodic
  systems on a GPU go to the host and back (the positions are copied out, the integer
  pairs and shifts in; distances are recomputed on the device, so forces still flow).
- **Molecules, on every device: this module's torch search**,
  vectorised over all systems of a batch at once (one call for 64 aspirin molecules
  instead of 64), on any torch device, handling triclinic cells smaller than twice the
  cutoff by enumerating every periodic image that can fall within the cutoff. The
  candidate search is all pairs within each (system, image) block, O(Σ_s K_s n_s²),
  chunked to bound memory. PyG's ``radius_graph`` needs ``torch-cluster``/``pyg-lib``,
  which do not install here, and knows no periodic shifts.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from vesin import NeighborList as VesinNeighborList

from ase_mlff.graph.geometry import completed_cells

#: periodic systems go to vesin (False: the torch search for every system; the tests
#: check both)
USE_VESIN = True
#: maximum number of candidate pairs materialised at once
MAX_CANDIDATES = 4_000_000


def _segment_arange(counts: Tensor) -> tuple[Tensor, Tensor]:
    """For segment sizes ``counts`` (K,), the segment of each element and its rank within it."""
    seg = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(int(counts.sum()), device=counts.device) - starts[seg]
    return seg, rank


def image_shifts(cell_s33: Tensor, pbc_s3: Tensor, cutoff: float) -> tuple[Tensor, Tensor]:
    """Integer shifts of all periodic images within ``cutoff`` of the home cell.

    Returns ``(shift_sys_k, shift_k3)``: for every kept image ``k`` the system it belongs to
    and its integer shift. Along a periodic direction ``d`` the number of images needed is
    ``ceil(cutoff / h_d)`` where ``h_d`` is the distance between lattice planes, which is
    ``1 / |b_d|`` for the reciprocal vector ``b_d`` (rows of ``inv(cell).T``).
    """
    device = cell_s33.device
    n_sys = cell_s33.shape[0]
    n_rep = torch.zeros(n_sys, 3, dtype=torch.long, device=device)
    periodic_sys = pbc_s3.any(dim=1)
    if bool(periodic_sys.any()):
        cell_p = cell_s33[periodic_sys].double()
        inv_height = torch.linalg.inv(cell_p).transpose(1, 2).norm(dim=2)  # |b_d| = 1/h_d
        reps = torch.ceil(cutoff * inv_height - 1e-9).long()
        reps = torch.where(pbc_s3[periodic_sys], reps, torch.zeros_like(reps))
        n_rep[periodic_sys] = reps
    m = int(n_rep.max()) if n_sys else 0
    rng = torch.arange(-m, m + 1, device=device)
    grid_g3 = torch.cartesian_prod(rng, rng, rng).reshape(-1, 3)
    keep_sg = (grid_g3.abs()[None] <= n_rep[:, None]).all(dim=2)
    shift_sys_k, g = keep_sg.nonzero(as_tuple=True)
    return shift_sys_k, grid_g3[g]


def wrap_positions(
    pos_nc: Tensor, cell_s33: Tensor, pbc_s3: Tensor, system_n: Tensor
) -> tuple[Tensor, Tensor]:
    """Wrap atoms of periodic systems into their cell along periodic directions.

    Returns ``(wrapped_nc, offset_n3)`` with ``wrapped = pos - offset · cell`` and integer
    ``offset``; molecules (no periodic direction) are left as they are.
    """
    offset = torch.zeros(pos_nc.shape[0], 3, dtype=torch.long, device=pos_nc.device)
    periodic_atom = pbc_s3.any(dim=1)[system_n]
    if not bool(periodic_atom.any()):
        return pos_nc, offset
    cell_n = cell_s33[system_n[periodic_atom]].double()
    frac = torch.linalg.solve(cell_n.transpose(1, 2), pos_nc[periodic_atom].double()[..., None])[
        ..., 0
    ]
    off = torch.floor(frac).long()
    off = torch.where(pbc_s3[system_n[periodic_atom]], off, torch.zeros_like(off))
    offset[periodic_atom] = off
    shift = torch.einsum("nc,ncd->nd", off.to(cell_n.dtype), cell_n).to(pos_nc.dtype)
    wrapped = pos_nc.clone()
    wrapped[periodic_atom] = pos_nc[periodic_atom] - shift
    return wrapped, offset


@torch.no_grad()
def neighbour_list(
    pos_nc: Tensor,
    cell_s33: Tensor,
    pbc_s3: Tensor,
    system_n: Tensor,
    n_atoms_s: Tensor,
    cutoff: float,
) -> tuple[Tensor, Tensor]:
    """All pairs closer than ``cutoff`` in every system of a batch.

    Args:
        pos_nc: (N, 3) positions of all atoms, Å; atoms of one system are contiguous.
        cell_s33: (S, 3, 3) cells as rows (ignored along non-periodic directions).
        pbc_s3: (S, 3) periodic flags.
        system_n: (N,) system index of each atom.
        n_atoms_s: (S,) atoms per system.
        cutoff: radius, Å.

    Returns:
        edge_index_2e: (2, E) centre ``i`` and neighbour ``j`` (global atom indices).
        shift_e3: (E, 3) integer cell shifts ``S_e`` (long).
    """
    if cutoff <= 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    cell_s33 = completed_cells(cell_s33, pbc_s3)  # a slab with c = 0 is legal in ASE
    periodic_sys = pbc_s3.any(dim=1)
    if bool(periodic_sys.any()):
        det = torch.linalg.det(cell_s33[periodic_sys].double())
        if bool((det.abs() < 1e-12).any()):
            raise ValueError(
                "a periodic system has a singular (zero-volume) cell: give every periodic "
                "system a full 3x3 cell (vacuum along non-periodic directions is fine)"
            )
    if USE_VESIN and bool(periodic_sys.any()):
        return _split_by_method(pos_nc, cell_s33, pbc_s3, system_n, n_atoms_s, cutoff)
    return _all_pairs(pos_nc, cell_s33, pbc_s3, system_n, n_atoms_s, cutoff)


def _split_by_method(
    pos_nc: Tensor,
    cell_s33: Tensor,
    pbc_s3: Tensor,
    system_n: Tensor,
    n_atoms_s: Tensor,
    cutoff: float,
) -> tuple[Tensor, Tensor]:
    """Periodic systems by vesin (one call each), the molecules of the batch by one call
    of :func:`_all_pairs`: the molecules' edges first, then each periodic system's."""
    device = pos_nc.device
    periodic = pbc_s3.any(dim=1)
    edges_parts: list[Tensor] = []
    shift_parts: list[Tensor] = []
    if not bool(periodic.all()):
        mol = (~periodic).nonzero()[:, 0]
        keep_n = ~periodic[system_n]
        edges, shift = _all_pairs(
            pos_nc[keep_n],
            cell_s33[mol],
            pbc_s3[mol],
            torch.repeat_interleave(torch.arange(len(mol), device=device), n_atoms_s[mol]),
            n_atoms_s[mol],
            cutoff,
        )
        edges_parts.append(keep_n.nonzero()[:, 0][edges])  # molecule atom -> batch atom
        shift_parts.append(shift)
    ptr = (torch.cumsum(n_atoms_s, 0) - n_atoms_s).tolist()
    sizes = n_atoms_s.tolist()  # one host copy, not a sync per system
    pos64 = pos_nc.detach().double().cpu().numpy()
    cells = cell_s33.detach().double().cpu().numpy()
    pbc = pbc_s3.cpu().numpy()
    nl = VesinNeighborList(cutoff=float(cutoff), full_list=True)
    host_edges, host_shifts = [], []
    for s in periodic.nonzero()[:, 0].tolist():
        lo, n = ptr[s], sizes[s]
        i, j, shift = nl.compute(pos64[lo : lo + n], cells[s], pbc[s], quantities="ijS")
        host_edges.append(np.stack([i, j]).astype(np.int64) + lo)
        host_shifts.append(shift.astype(np.int64))
    # one copy to the device for all periodic systems
    edges_parts.append(torch.from_numpy(np.concatenate(host_edges, axis=1)).to(device))
    shift_parts.append(torch.from_numpy(np.concatenate(host_shifts)).to(device))
    return torch.cat(edges_parts, dim=1), torch.cat(shift_parts)


def _all_pairs(
    pos_nc: Tensor,
    cell_s33: Tensor,
    pbc_s3: Tensor,
    system_n: Tensor,
    n_atoms_s: Tensor,
    cutoff: float,
) -> tuple[Tensor, Tensor]:
    """This module's torch search (see the module docstring); cells already completed."""
    device = pos_nc.device
    wrapped, offset = wrap_positions(pos_nc, cell_s33, pbc_s3, system_n)
    shift_sys_k, shift_k3 = image_shifts(cell_s33, pbc_s3, cutoff)
    ptr = torch.cumsum(n_atoms_s, 0) - n_atoms_s
    n_k = n_atoms_s[shift_sys_k]
    pairs_k = n_k * n_k
    cell_k = cell_s33[shift_sys_k]
    shift_cart_k = torch.einsum("kc,kcd->kd", shift_k3.to(cell_k.dtype), cell_k)
    cutoff2 = cutoff * cutoff
    edges_i, edges_j, edges_s = [], [], []
    # chunk over images so that at most MAX_CANDIDATES pairs exist at once
    cum = torch.cumsum(pairs_k, 0)
    start = 0
    n_images = len(pairs_k)
    while start < n_images:
        base = int(cum[start - 1]) if start > 0 else 0
        stop = int(torch.searchsorted(cum, base + MAX_CANDIDATES, right=True))
        stop = max(stop, start + 1)
        sl = slice(start, min(stop, n_images))
        k_local, q = _segment_arange(pairs_k[sl])
        k = k_local + start
        n = n_k[k]
        i = ptr[shift_sys_k[k]] + torch.div(q, n, rounding_mode="floor")
        j = ptr[shift_sys_k[k]] + q % n
        d = wrapped[j] - wrapped[i] + shift_cart_k[k].to(wrapped.dtype)
        r2 = (d * d).sum(dim=1)
        is_self = (i == j) & (shift_k3[k] == 0).all(dim=1)
        keep = (r2 < cutoff2) & ~is_self
        edges_i.append(i[keep])
        edges_j.append(j[keep])
        edges_s.append(shift_k3[k[keep]])
        start = sl.stop
    if edges_i:
        i, j, s = torch.cat(edges_i), torch.cat(edges_j), torch.cat(edges_s)
    else:
        i = j = torch.zeros(0, dtype=torch.long, device=device)
        s = torch.zeros(0, 3, dtype=torch.long, device=device)
    # translate the shift found for wrapped positions back to the original positions
    s = s + offset[i] - offset[j]
    return torch.stack([i, j]), s


def half_edge_mask(edge_index_2e: Tensor, shift_e3: Tensor) -> Tensor:
    """(E,) bool selecting one edge of every pair of a symmetric (full) neighbour list.

    The full list holds both ``(i, j, S)`` and ``(j, i, -S)``; this keeps the one with
    ``i < j``, or for a periodic self-image (``i == j``) the one whose shift ``S`` is
    lexicographically positive. Potentials whose edge terms are symmetric (SchNet's
    filters depend only on r_ij) compute them once per pair and send messages both ways.
    """
    i, j = edge_index_2e
    big = 2 * int(shift_e3.abs().max()) + 1 if shift_e3.numel() else 1
    key = (shift_e3[:, 0] * big + shift_e3[:, 1]) * big + shift_e3[:, 2]
    return (i < j) | ((i == j) & (key > 0))
