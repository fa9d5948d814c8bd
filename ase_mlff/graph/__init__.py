"""Batches of many systems and their neighbour graphs, in torch."""

from ase_mlff.graph.batch import Batch, edge_vectors
from ase_mlff.graph.neighbours import neighbour_list

__all__ = ["Batch", "edge_vectors", "neighbour_list"]
