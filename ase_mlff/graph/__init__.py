"""Batches of many systems, their neighbour graphs, and the shared geometry (the one exact
minimum image and the one molecular graph)."""

from ase_mlff.graph.batch import Batch, edge_vectors
from ase_mlff.graph.geometry import (
    BOND_TOLERANCE,
    BondGraph,
    bond_graph,
    bond_graphs_from_dataset,
    bond_graphs_from_frames,
    minimum_image,
    minimum_image_torch,
    pair_distances,
    perceive_bonds,
)
from ase_mlff.graph.neighbours import half_edge_mask, neighbour_list

__all__ = [
    "BOND_TOLERANCE",
    "Batch",
    "BondGraph",
    "bond_graph",
    "bond_graphs_from_dataset",
    "bond_graphs_from_frames",
    "edge_vectors",
    "half_edge_mask",
    "minimum_image",
    "minimum_image_torch",
    "neighbour_list",
    "pair_distances",
    "perceive_bonds",
]
