"""The one interface of every potential: a batch in, per-system energy out.

Forces and stress are never predicted directly: they come from autograd of the energy,

    F = -∂E/∂x,          σ = (1/V) ∂E/∂ε   (ε: symmetric strain applied to x and cell),

so every potential conserves energy and its stress is the strain derivative (ASE's sign
convention: the numerical stress of ``ase.calculators.calculator`` is the same quantity).
"""

from __future__ import annotations

import numbers
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ase_mlff.graph.batch import Batch, edge_vectors, restrict_graph
from ase_mlff.graph.neighbours import half_edge_mask

MAX_Z = 118


class Potential(nn.Module):
    """Base class: ``forward(batch) -> energy_s`` (S,), eV.

    Subclasses set ``cutoff`` (Å), keep a JSON-serialisable ``config`` from which
    :func:`ase_mlff.models.build_model` rebuilds them, and list the atomic numbers they
    can handle in ``species`` (None: any element).
    """

    cutoff: float
    config: dict[str, Any]
    species: list[int] | None = None

    def forward(self, batch: Batch) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def scatter_sum(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Sum rows of ``src`` into ``dim_size`` bins given by ``index`` (vectorised)."""
    if dim_size == 1 and torch.compiler.is_compiling():
        # Inductor (torch 2.13, CPU, > 1 thread) fails to generate an index_add into a
        # buffer of one row; with one bin every index is 0 and the sum is the same
        return src.sum(dim=0, keepdim=True)
    out = torch.zeros((dim_size, *src.shape[1:]), dtype=src.dtype, device=src.device)
    return out.index_add_(0, index, src)


class AtomicReference(nn.Module):
    """Per-element reference energies and the scale of the learned part.

    ``E = Σ_i (scale · ε_i + e_ref[Z_i])`` where ``ε_i`` is a network's dimensionless
    per-atom output. ``e_ref`` is fitted by least squares of the training energies on the
    element counts, ``scale`` is the RMS of the training force components (the usual
    choice in SchNetPack/NequIP: it makes the network's output O(1) in force units).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("e_ref", torch.zeros(MAX_Z + 1, dtype=torch.float64))
        self.register_buffer("scale", torch.ones((), dtype=torch.float64))

    @torch.no_grad()
    def fit(
        self, dataset, *, energy_offset_s: np.ndarray | None = None, scale: bool = True
    ) -> dict[str, float]:
        """Fit ``e_ref`` (and ``scale``) on a :class:`~ase_mlff.data.Dataset`; returns stats.

        ``energy_offset_s``: energies (S,) the rest of the model already predicts; ``e_ref``
        is then fitted to the residual ``E - offset`` (re-referencing a pre-trained model to
        a new level of theory). ``scale=False`` keeps the current scale.
        """
        species = dataset.species
        frame = np.repeat(np.arange(len(dataset)), dataset.n_atoms_s)
        col = np.searchsorted(species, dataset.numbers_n)
        counts = np.zeros((len(dataset), len(species)))
        np.add.at(counts, (frame, col), 1.0)
        target = dataset.energy_s - (0.0 if energy_offset_s is None else energy_offset_s)
        ok = np.isfinite(target)
        e_ref = np.zeros(MAX_Z + 1)
        if ok.any():
            coef, *_ = np.linalg.lstsq(counts[ok], target[ok], rcond=None)
            e_ref[species] = coef
        self.e_ref.copy_(torch.as_tensor(e_ref))
        if scale:
            f = dataset.forces_nc[np.all(np.isfinite(dataset.forces_nc), axis=1)]
            rms = float(np.sqrt(np.mean(f**2))) if len(f) else 1.0
            self.scale.fill_(rms if rms > 0 else 1.0)
        resid = target[ok] - counts[ok] @ e_ref[species] if ok.any() else np.zeros(1)
        return {
            "force_rms": float(self.scale),
            "energy_residual_std_per_atom": float(np.std(resid / dataset.n_atoms_s[ok]))
            if ok.any()
            else 0.0,
        }

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        # device moves apply, dtype casts do not: total energies of ~1e3 eV need float64.
        # Keep the float64 values and move them, instead of casting and casting back
        # (a round trip through float32 rounds e_ref by ~1e-6 eV).
        e_ref, scale = self.e_ref.data, self.scale.data
        super()._apply(fn, recurse)
        device = self.e_ref.device
        self.e_ref.data = e_ref.to(device=device, dtype=torch.float64)
        self.scale.data = scale.to(device=device, dtype=torch.float64)
        return self

    def forward(self, eps_n: Tensor, numbers_n: Tensor, system_n: Tensor, n_systems: int) -> Tensor:
        """Per-system energy (S,) in float64, whatever the dtype of the network."""
        e_n = eps_n.double() * self.scale + self.e_ref[numbers_n]
        return scatter_sum(e_n, system_n, n_systems)


def strained_energy(model: nn.Module, batch: Batch, pos: Tensor, strain: Tensor | None) -> Tensor:
    """(S,) energies of ``batch`` at positions ``pos``, with every cell and position
    deformed by the symmetric part of ``strain`` (S, 3, 3) when given: the function whose
    derivatives are the forces and the stress, by autograd (:func:`compute_properties`) or
    by ``torch.func`` (:mod:`ase_mlff.models.compiled`)."""
    cell = batch.cell_s33.detach()  # the stress comes from the strain, not the cell
    if strain is not None:
        sym = 0.5 * (strain + strain.transpose(1, 2))
        pos = pos + torch.einsum("nc,ncd->nd", pos, sym[batch.system_n])
        cell = cell + torch.bmm(cell, sym)
    # a Verlet-skin graph's shell beyond the cutoff would add exact zeros at full cost
    return model(restrict_graph(replace(batch, pos_nc=pos, cell_s33=cell), batch.cutoff))


def compute_properties(
    model: nn.Module,
    batch: Batch,
    *,
    forces: bool = True,
    stress: bool = False,
    training: bool = False,
) -> dict[str, Tensor]:
    """Energy (S,), forces (N, 3) = -∂E/∂x and stress (S, 3, 3) = (1/V) ∂E/∂ε by autograd.

    ``training=True`` keeps the graph of the derivatives (for force losses). Otherwise the
    results are detached, so nothing retains the autograd graph. A model with an
    ``evaluate_properties`` method (a :class:`~ase_mlff.models.compiled.CompiledPotential`)
    evaluates them its own way, except in training.
    """
    if stress and not bool(batch.pbc_s3.all()):
        raise ValueError("stress needs every system of the batch to be periodic in 3-D")
    own = getattr(model, "evaluate_properties", None)
    if own is not None and not training:
        return own(batch, forces=forces, stress=stress)
    # everything that leads to the energy is built with gradients on, so that callers
    # under torch.no_grad() (e.g. models.prediction.predict) still get forces and stress
    with torch.enable_grad():
        pos = batch.pos_nc.detach().requires_grad_(forces or stress)
        inputs = [pos]
        strain = None
        if stress:
            strain = torch.zeros_like(batch.cell_s33, requires_grad=True)
            inputs.append(strain)
        energy = strained_energy(model, batch, pos, strain)
        out: dict[str, Tensor] = {"energy": energy}
        if forces or stress:
            grads = torch.autograd.grad(
                energy.sum(), inputs, create_graph=training, retain_graph=training
            )
            if forces:
                out["forces"] = -grads[0]
            if stress:
                volume = torch.linalg.det(batch.cell_s33).abs()
                out["stress"] = grads[1] / volume[:, None, None]
    if not training:
        out = {k: v.detach() for k, v in out.items()}
    return out


class CosineCutoff(nn.Module):
    """f(r) = ½(cos(πr/r_c) + 1) for r < r_c, else 0 (Behler 2011), smooth in value."""

    def __init__(self, cutoff: float) -> None:
        super().__init__()
        self.cutoff = cutoff

    def forward(self, r: Tensor) -> Tensor:
        return 0.5 * (torch.cos(r * (torch.pi / self.cutoff)) + 1.0) * (r < self.cutoff).to(r.dtype)


class GNNPotential(Potential):
    """Shared plumbing of the message-passing potentials: edges, distances, readout."""

    #: atoms per batched prediction call (:func:`ase_mlff.models.prediction.chunk_for`):
    #: about 1.5 GB for PaiNN of width 64 with forces, against 15.6 GB at the classical
    #: force fields' 42,000
    prediction_chunk_atoms = 4096

    def __init__(self, cutoff: float, species: list[int] | None, **sizes: int) -> None:
        super().__init__()
        if not (isinstance(cutoff, numbers.Real) and cutoff > 0):
            raise ValueError(
                f"{type(self).__name__}: cutoff must be a number > 0 Å, got {cutoff!r}"
            )
        for name, value in sizes.items():  # hidden, n_interactions, ...: a 0 builds an empty net
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"{type(self).__name__}: {name} must be an integer >= 1, got {value!r}"
                )
        self.cutoff = float(cutoff)
        self.species = sorted(int(z) for z in species) if species else None
        self.atomref = AtomicReference()

    def edges(self, batch: Batch, half: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(i, j, vec_e3, r_e) of the graph, with differentiable vectors.

        ``half=True`` returns one edge per pair (:func:`ase_mlff.graph.half_edge_mask`).
        """
        if half:
            mask = half_edge_mask(batch.edge_index_2e, batch.shift_e3)
            vec = edge_vectors(batch, edges=mask)
            i, j = batch.edge_index_2e[:, mask]
        else:
            vec = edge_vectors(batch)
            i, j = batch.edge_index_2e
        r = torch.sqrt((vec * vec).sum(dim=1).clamp_min(1e-20))
        return i, j, vec, r

    def atom_features(self, batch: Batch) -> Tensor:  # pragma: no cover - interface
        """(N, F) per-atom representation fed to the readout (latent-space analyses)."""
        raise NotImplementedError

    def energy_from_atoms(self, eps_n: Tensor, batch: Batch) -> Tensor:
        return self.atomref(eps_n, batch.numbers_n, batch.system_n, batch.n_systems)
