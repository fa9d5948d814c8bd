"""ASE calculators built from small picklable specs, for workers that must build their own.

make_calculator({"name": "tblite", "method": "GFN2-xTB"})
make_calculator({"name": "mlff", "model": "aspirin-painn", "dtype": "float64"})
make_calculator({"name": "gaff", "parameters": "aspirin"})            # torch GAFF-2.11
make_calculator({"name": "gaff", "parameters": "aspirin", "engine": "openmm"})
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
    if name == "gaff":
        from ase_mlff.forcefields.gaff import gaff_potential, gaff_system

        params = spec.pop("parameters", "aspirin")
        if spec.pop("engine", "torch") == "openmm":
            from ase_mlff.calculators.openmm import OpenMMCalculator
            from ase_mlff.forcefields.gaff import load_parameters

            return OpenMMCalculator(gaff_system(params), load_parameters(params).numbers, **spec)
        from ase_mlff.calculators.mlff import MLFFCalculator

        return MLFFCalculator(gaff_potential(params), **spec)
    raise ValueError(f"unknown calculator {name!r}; known: 'tblite', 'mlff', 'gaff'")
