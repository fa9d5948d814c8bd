"""ASE calculators built from small picklable specs, for workers that must build their own.

make_calculator({"name": "tblite", "method": "GFN2-xTB"})
make_calculator({"name": "mlff", "model": "aspirin-painn", "dtype": "float64"})
"""

from __future__ import annotations

from typing import Any

from ase.calculators.calculator import Calculator


def make_calculator(spec: dict[str, Any]) -> Calculator:
    """Build the calculator a spec names; raises ValueError for an unknown name."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if name == "tblite":
        from tblite.ase import TBLite

        return TBLite(method=spec.pop("method", "GFN2-xTB"), verbosity=0, **spec)
    if name == "mlff":
        from ase_mlff.calculators.mlff import MLFFCalculator

        return MLFFCalculator(**spec)
    raise ValueError(f"unknown calculator {name!r}; known: 'tblite', 'mlff'")
