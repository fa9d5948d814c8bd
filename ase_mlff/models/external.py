"""An ASE calculator as a potential of the batched engine: a reference method (GFN2-xTB
through tblite, an OpenMM force field, ...) driven by :func:`ase_mlff.md.run_md` with the
same integrators, detectors and metadynamics as a trained model.

    from ase_mlff.models.external import CalculatorPotential
    from ase_mlff.reference.combustion import spgfn2
    xtb = CalculatorPotential(spgfn2, name="spGFN2-xTB")
    run = run_md(xtb, [ho2] * 4, steps=1000, dt=0.2, metadynamics=metad)

Each system of a batch is one call of its own calculator (a calculator per batch slot,
made by ``make_calculator``, so an SCF keeps its previous solution as the next guess; new
calculators when replicas leave or join the batch, so no system inherits another's). A
failed calculation is retried once with a fresh calculator, then gives NaN, which stops
that replica through the non-finite detector.
The energy enters autograd through a custom :class:`torch.autograd.Function` whose
backward returns −F of the calculator: forces are the calculator's own analytic
gradient, exactly as its ASE interface gives them, not a finite difference. Molecules only
(no stress: a periodic system is refused). Written here because neither ASE nor torch-sim
wraps an ASE calculator for a batched torch engine (torch-sim's ``ModelInterface`` needs
torch models).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ase_mlff.graph.batch import Batch
from ase_mlff.models.base import Potential


class _CalculatorEnergy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pos_nc: Tensor, owner: CalculatorPotential, batch: Batch) -> Tensor:
        energy, forces = owner.evaluate(batch, pos_nc.detach())
        ctx.save_for_backward(forces.to(pos_nc), batch.system_n)
        return energy.to(pos_nc.device)

    @staticmethod
    @once_differentiable  # the calculator gives forces, not their derivatives
    def backward(ctx, grad_s: Tensor) -> tuple[Tensor | None, None, None]:
        forces, system_n = ctx.saved_tensors
        return -grad_s.to(forces)[system_n, None] * forces, None, None


class CalculatorPotential(Potential):
    """``make_calculator()`` → a fresh ASE calculator; ``name`` for logs and provenance."""

    def __init__(self, make_calculator: Callable[[], Any], name: str = "calculator") -> None:
        super().__init__()
        self.make_calculator = make_calculator
        self.cutoff = 0.0  # no neighbour graph: the calculator sees every atom
        self.species = None
        self.config = {"name": "calculator", "calculator": name}
        self._calcs: list[Any] = []
        self.calls = 0
        #: the calculator errors met (each retried once, then NaN: the replica stops)
        self.failures: list[str] = []

    def evaluate(self, batch: Batch, pos_nc: Tensor) -> tuple[Tensor, Tensor]:
        """(S,) energies and (N, 3) forces of every system, float64 on the CPU."""
        from ase import Atoms

        if bool(batch.pbc_s3.any()):
            raise ValueError(f"{self.config['calculator']}: molecules only (no stress here)")
        counts = batch.n_atoms_s.tolist()
        if len(counts) != len(self._calcs):  # replicas left or joined the batch: the slots
            self._calcs = [self.make_calculator() for _ in counts]  # hold other systems now
        pos = pos_nc.cpu().double().numpy()
        z = batch.numbers_n.cpu().numpy()
        energies, forces, start = [], [], 0
        for s, n in enumerate(counts):
            atoms = Atoms(numbers=z[start : start + n], positions=pos[start : start + n])
            e, f = self._single(s, atoms)
            energies.append(e)
            forces.append(f)
            start += n
        self.calls += len(counts)
        return torch.tensor(energies, dtype=torch.float64), torch.as_tensor(
            np.concatenate(forces), dtype=torch.float64
        )

    def _single(self, slot: int, atoms) -> tuple[float, np.ndarray]:
        """One system; a failed calculation is tried once more with a fresh calculator (no
        previous solution as the guess), then reported as NaN, which the engine's
        non-finite detector turns into that replica's stop."""
        for _attempt in range(2):
            atoms.calc = self._calcs[slot]
            try:
                return float(atoms.get_potential_energy()), atoms.get_forces().copy()
            except Exception as err:  # noqa: BLE001 - any calculator's failure
                self.failures.append(f"{type(err).__name__}: {err}")
                self._calcs[slot] = self.make_calculator()
        return float("nan"), np.full((len(atoms), 3), np.nan)

    def forward(self, batch: Batch) -> Tensor:
        return _CalculatorEnergy.apply(batch.pos_nc, self, batch)
