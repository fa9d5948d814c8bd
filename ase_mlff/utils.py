"""Small shared helpers: dtype names and when to show progress bars."""

from __future__ import annotations

import os
import sys

import torch

#: the dtype names accepted everywhere (configs, CLI flags, calculator and agent specs)
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def show_progress() -> bool:
    """Progress bars on an interactive terminal, quiet under CI."""
    return not os.environ.get("CI") and sys.stderr.isatty()
