"""Small shared helpers: dtype names, unit factors, when to show progress bars."""

from __future__ import annotations

import os
import sys

import torch
from ase import units

#: the dtype names accepted everywhere (configs, CLI flags, calculator and agent specs)
DTYPES = {"float32": torch.float32, "float64": torch.float64}


#: eV per kJ/mol (OpenMM's and the force-field tables' energy unit)
KJ_PER_MOL = float(units.kJ / units.mol)


def show_progress() -> bool:
    """Progress bars on an interactive terminal, quiet under CI."""
    return not os.environ.get("CI") and sys.stderr.isatty()
