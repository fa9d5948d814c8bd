"""g_ab(r) of every system of a batch from its neighbour graph, in one scatter.

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
