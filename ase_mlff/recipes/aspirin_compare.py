"""Every training variant of the papers on the shipped aspirin data (GFN2-xTB labels),
judged by force metrics *and* MD stability: the ``compare`` recipe's aspirin preset.

    python -m ase_mlff.recipes.aspirin_compare --profile quick     # < 45 min on 2 CPU cores
    python -m ase_mlff.recipes.aspirin_compare --active --alpha 0.05  # + the active verdict
    python -m ase_mlff.recipes.aspirin_compare --profile showcase  # issue 15's run, ~3 h
    python -m ase_mlff.recipes.aspirin_compare --profile paper     # the papers' sizes (GPUs)
    RAY_ADDRESS=auto python -m ase_mlff.recipes.aspirin_compare    # on a running Ray cluster

It is ``python -m ase_mlff.recipes.compare --data aspirin --name aspirin_compare``: the
variants, the fair budgets, the stress protocols and the verdict are described in
:mod:`ase_mlff.recipes.compare`. Here ``ffpt`` pre-trains on the shipped GAFF-2.11/AM1-BCC
parameters of aspirin (no AmberTools needed); the MD is paper 001's aspirin protocol
(Langevin, 2 ps⁻¹, 0.5 fs, 500 K). MLflow experiment ``aspirin_compare``; the best model
is registered as ``aspirin_compare-best``; results in ``runs/aspirin_compare``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ase_mlff.recipes import compare

#: what the preset sets; every other option is compare's
PRESET = {
    "data": "aspirin",
    "name": "aspirin_compare",
    "out": Path("runs/aspirin_compare"),
    "experiment": "aspirin_compare",
}
PROFILES = compare.PROFILES


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return compare.main(argv, defaults=PRESET)


if __name__ == "__main__":
    from ase_mlff.recipes.cli import run_recipe

    run_recipe(main)
