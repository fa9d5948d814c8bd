"""Batches of many systems and their neighbour graphs, in torch."""

from ase_mlff.graph.batch import Batch, edge_vectors
from ase_mlff.graph.neighbours import half_edge_mask, neighbour_list

__all__ = ["Batch", "edge_vectors", "half_edge_mask", "neighbour_list"]
