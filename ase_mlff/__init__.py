"""ase_mlff: machine-learned force fields that stay stable in molecular dynamics."""

__version__ = "0.1.0"
