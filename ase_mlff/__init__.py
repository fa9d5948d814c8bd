"""ase_mlff: machine-learned force fields that stay stable in molecular dynamics."""

from ase_mlff._malloc import keep_freed_memory

__version__ = "0.1.0"

# Importing ase_mlff changes nothing in the process. The allocator tuning of
# ase_mlff._malloc (large per-step tensors reused, not re-faulted) is applied by the entry
# points: the recipes, the benchmarks and the Ray worker actors (trajectory agents, Ray
# Train workers). Library users call ase_mlff.keep_freed_memory() to opt in.
__all__ = ["__version__", "keep_freed_memory"]
