"""g_ab(r) of every system of a batch: from its neighbour graph in one scatter, or from
the minimum-image distances of all atom pairs (:func:`min_image_rdf`, exact up to half the
smallest cell height, and no graph to build).

For element pair (a, b) of a periodic system of volume V (paper 003, Appendix A):

    g_ab(r) = V / (N_a N_b) · n_ab(r) / (4π r² dr),

n_ab(r) the number of ordered pairs (i ∈ a, j ∈ b, j ≠ i, all periodic images) with
distance in [r, r + dr). Pairs come from the batch's neighbour graph, so r_max must not
exceed the graph's cutoff. This is the kernel both the RDF metric
(:mod:`ase_mlff.metrics.rdf`) and the RDF stability detector
(:class:`ase_mlff.md.detectors.RDFDeviation`) use.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ase_mlff.graph.batch import Batch, edge_vectors


def rdf_histograms(
    batch: Batch, element_pairs: list[tuple[int, int]], r_max: float, n_bins: int
) -> Tensor:
    """(S, P, n_bins) ordered-pair counts per system, element pair and distance bin."""
    if r_max > batch.cutoff + 1e-9:
        raise ValueError(f"r_max {r_max} exceeds the graph cutoff {batch.cutoff}")
    i, j = batch.edge_index_2e
    d = edge_vectors(batch).norm(dim=1)
    zi, zj = batch.numbers_n[i], batch.numbers_n[j]
    pair_index = torch.full_like(i, -1)
    for p, (a, b) in enumerate(element_pairs):
        pair_index[(zi == a) & (zj == b)] = p
    b_idx = torch.floor(d / (r_max / n_bins)).long()
    ok = (pair_index >= 0) & (b_idx < n_bins)
    flat = (batch.system_n[i][ok] * len(element_pairs) + pair_index[ok]) * n_bins + b_idx[ok]
    counts = torch.zeros(
        batch.n_systems * len(element_pairs) * n_bins, dtype=d.dtype, device=d.device
    )
    counts.index_add_(0, flat, torch.ones_like(flat, dtype=d.dtype))
    return counts.view(batch.n_systems, len(element_pairs), n_bins)


def rdf_normalisation(
    batch: Batch, element_pairs: list[tuple[int, int]], r_max: float, n_bins: int
) -> Tensor:
    """(S, P, n_bins) factors V / (N_a N_b 4π r² dr) turning counts into g_ab(r)."""
    edges = torch.linspace(0.0, r_max, n_bins + 1, dtype=batch.dtype, device=batch.device)
    shell = 4.0 / 3.0 * torch.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    volume = torch.linalg.det(batch.cell_s33).abs()
    counts = []
    for a, b in element_pairs:
        na = torch.zeros(batch.n_systems, dtype=batch.dtype, device=batch.device)
        nb = torch.zeros_like(na)
        na.index_add_(0, batch.system_n, (batch.numbers_n == a).to(batch.dtype))
        nb.index_add_(0, batch.system_n, (batch.numbers_n == b).to(batch.dtype))
        counts.append(na * nb)
    nanb = torch.stack(counts, dim=1).clamp_min(1.0)
    return volume[:, None, None] / (nanb[:, :, None] * shell[None, None, :])


def rdf_per_system(
    batch: Batch, element_pairs: list[tuple[int, int]], r_max: float, n_bins: int
) -> Tensor:
    """(S, P, n_bins) g_ab(r) of each system: :func:`rdf_histograms` × :func:`rdf_normalisation`."""
    return rdf_histograms(batch, element_pairs, r_max, n_bins) * rdf_normalisation(
        batch, element_pairs, r_max, n_bins
    )


def half_cell_height(cell_s33: Tensor) -> Tensor:
    """(S,) half the smallest distance between opposite faces of each cell: the largest
    r_max for which minimum-image distances find every pair within r_max exactly once."""
    cell = cell_s33.reshape(-1, 3, 3)
    vol = torch.linalg.det(cell).abs()
    cross = torch.stack(
        [torch.linalg.cross(cell[:, (k + 1) % 3], cell[:, (k + 2) % 3]) for k in range(3)], 1
    )
    return 0.5 * (vol[:, None] / cross.norm(dim=-1)).amin(dim=1)


def min_image_rdf(
    pos_snc: Tensor,
    numbers_n: Tensor,
    cell_s33: Tensor,
    element_pairs: list[tuple[int, int]],
    r_max: float,
    n_bins: int,
) -> Tensor:
    """(S, P, n_bins) g_ab(r) of S frames (or replicas) of the same N atoms from the
    minimum-image distances of all pairs i < j, in one histogram over frames and pairs.

    Exact when r_max ≤ half of every cell height (:func:`half_cell_height`): each pair then
    has at most one periodic image within r_max and no atom sees its own image, so the
    counts equal those of the full neighbour graph (raises otherwise). Each frame is
    normalised with its own volume, as :func:`rdf_per_system`.
    """
    from ase_mlff.graph.geometry import minimum_image_torch

    s, n = pos_snc.shape[:2]
    dev, dt = pos_snc.device, pos_snc.dtype
    cell = cell_s33.to(dt).reshape(-1, 3, 3).expand(s, 3, 3)
    if bool((half_cell_height(cell) < r_max - 1e-9).any()):
        raise ValueError(
            f"r_max {r_max} Å exceeds half the smallest cell height "
            f"({float(half_cell_height(cell).min()):.3f} Å): minimum-image distances would "
            "miss pairs"
        )
    z = numbers_n.to(dev)
    i, j = torch.triu_indices(n, n, offset=1, device=dev)
    # ordered pairs (i in a, j in b) per unordered pair {i, j}: 0, 1 or 2 (a == b)
    w_pq = torch.stack(
        [
            ((z[i] == a) & (z[j] == b)).to(dt) + ((z[i] == b) & (z[j] == a)).to(dt)
            for a, b in element_pairs
        ]
    )
    keep = w_pq.sum(dim=0) > 0
    i, j, w_pq = i[keep], j[keep], w_pq[:, keep]
    counts = torch.zeros(s, len(element_pairs), n_bins, dtype=dt, device=dev)
    if len(i):
        vec = (pos_snc[:, j] - pos_snc[:, i]).reshape(-1, 3)
        system = torch.arange(s, device=dev).repeat_interleave(len(i))
        pbc = torch.ones(s, 3, dtype=torch.bool, device=dev)
        d = minimum_image_torch(vec, cell, pbc, system).norm(dim=1).view(s, len(i))
        b = torch.floor(d / (r_max / n_bins)).long()
        ok = b < n_bins
        for p in range(len(element_pairs)):
            sel = ok & (w_pq[p] > 0)[None]
            flat = torch.nonzero(sel, as_tuple=True)[0] * n_bins + b[sel]
            c = torch.zeros(s * n_bins, dtype=dt, device=dev)
            c.index_add_(0, flat, w_pq[p].expand(s, -1)[sel])
            counts[:, p] = c.view(s, n_bins)
    edges = torch.linspace(0.0, r_max, n_bins + 1, dtype=dt, device=dev)
    shell = 4.0 / 3.0 * torch.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    nanb = torch.tensor(
        [max(float(((z == a).sum() * (z == b).sum()).item()), 1.0) for a, b in element_pairs],
        dtype=dt,
        device=dev,
    )
    vol = torch.linalg.det(cell).abs()
    return counts * vol[:, None, None] / (nanb[None, :, None] * shell[None, None, :])
