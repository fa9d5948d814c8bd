"""ase_mlff: machine-learned force fields that stay stable in molecular dynamics."""

from ase_mlff._malloc import keep_freed_memory

__version__ = "0.1.0"

keep_freed_memory()  # see ase_mlff._malloc: large per-step tensors are reused, not re-faulted
