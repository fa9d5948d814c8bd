"""A learnable embedded-atom (EAM) potential, paper 004 §2.2.2.

Energy of a system (paper 004, Eq. 1, with the sums written per atom)::

    E = Σ_i F_{a_i}(ρ_i) + ½ Σ_{i≠j} V_{a_i a_j}(r_ij) f_c(r_ij) + Σ_i E_atom(a_i)

    ρ_i        = Σ_{j≠i} ρ_{a_i a_j}(r_ij) f_c(r_ij)
    ρ_ab(r)    = Σ_k A_abk exp(-β_abk r)                     (Eq. 2, K = n_density_terms)
    F_a(ρ)     = B_a (ρ - ρ0_a)²                              (Eq. 2, quadratic embedding)
    V_ab(r)    = D_ab [(1 - exp(-a_ab (r - re_ab)))² - 1]     (Eq. 3, binding Morse)

``a_i`` is the element of atom i.

**The pair term binds.** Eq. 3 as printed, D(1 − e^{−a(r−r_e)})², is never negative and
is D, not 0, at large r; the paper's Fig. 2 shows a well of depth D relative to the
cutoff, and the authors' code (Fung-Lab/MatDeepLearn_dev, ``eam_interaction.py``) uses
D(1 − e^{−a(r−r_m)})² − D. We use that form: V(r_e) = −D is the minimum and V → 0 at
large r.

**Cutoff** (as the authors' code): f_c is 1 below r_o = r_c − ``cutoff_width`` and the
quintic C² polynomial 6s⁵ − 15s⁴ + 10s³, s = (r_c − r)/width, between r_o and r_c
(JuLIP's cutoff; zero value, slope and curvature at r_c). The default width is
0.34 r_c (the authors' r_o = 0.66 r_c), so the Morse well and the repulsive wall below
r_o are not scaled at all, and energy and forces are continuous when a neighbour crosses
r_c. It multiplies both the pair and the density terms.

**Parameters per element pair.** Morse parameters belong to the unordered element pair
(V_ab = V_ba). Densities belong by default to the unordered pair too (``densities=
"unordered"``: A, β ∈ R^{n_a × n_b} with n_a the number of *diatomic interaction types*,
paper 004 §2.2.2, and the authors' code); ``densities="ordered"`` gives each ordered
pair (centre a, neighbour b) its own density, the Finnis-Sinclair freedom of LAMMPS
``eam/fs``. ``E_atom`` is a learnable per-element reference energy (end of §2.2.2).

Initialisation (paper 004, §2.3 "We optimize all EAM potential parameters ..."): r_e is
the sum of the covalent radii of the pair (``ase.data.covalent_radii``), all other
parameters are 1 -- except the decay rates β_k, initialised to 1, 2, ..., K: K identical
exponentials would receive identical gradients and never become different functions.
D, a, r_e, A, β, B are kept positive by a softplus of an unconstrained parameter; ρ0 and
E_atom are unconstrained.

Forces and stress come from autograd through :func:`ase_mlff.models.compute_properties`.
The model can be written as a LAMMPS ``eam/fs`` table: :mod:`ase_mlff.models.eam_export`.
"""

from __future__ import annotations

import numpy as np
import torch
from ase.data import chemical_symbols, covalent_radii
from torch import Tensor, nn
from torch.nn import functional as F

from ase_mlff.graph.batch import Batch, edge_vectors
from ase_mlff.models.base import MAX_Z, Potential, scatter_sum


def _inv_softplus(y: Tensor) -> Tensor:
    return y + torch.log(-torch.expm1(-y))


#: the pair term's form, recorded in every EAM config; checkpoints without it were written
#: with the old non-binding V = D(1 − e^{−a(r−r_e)})² and a switch over the whole range
PAIR_TERM = "binding_morse"
#: the authors' inner cutoff r_o = 0.66 r_c, i.e. a default switch width of 0.34 r_c
DEFAULT_WIDTH_FRACTION = 0.34
DENSITY_CHOICES = ("unordered", "ordered")


class EAM(Potential):
    """Learnable EAM potential over the elements ``species`` (atomic numbers).

    Args:
        species: atomic numbers the model handles (required: parameters are per element).
        cutoff: r_c, Å.
        n_density_terms: K, exponentials in each density function (paper: n_b).
        cutoff_width: width of the smooth cutoff before r_c, Å (None: 0.34 r_c, the
            authors' r_o = 0.66 r_c).
        densities: ``"unordered"`` (paper and authors: one density per element pair) or
            ``"ordered"`` (one per centre/neighbour pair, Finnis-Sinclair).
        pair_term: must be ``"binding_morse"``; the key marks checkpoints of this form.
    """

    def __init__(
        self,
        species: list[int],
        cutoff: float = 6.0,
        n_density_terms: int = 2,
        cutoff_width: float | None = None,
        densities: str = "unordered",
        pair_term: str = PAIR_TERM,
    ) -> None:
        super().__init__()
        if not species:
            raise ValueError("EAM needs the list of its elements (species)")
        if densities not in DENSITY_CHOICES:
            raise ValueError(f"densities must be one of {DENSITY_CHOICES}, not {densities!r}")
        if pair_term != PAIR_TERM:
            raise ValueError(f"pair_term must be {PAIR_TERM!r}, not {pair_term!r}")
        self.species = sorted({int(z) for z in species})
        self.cutoff = float(cutoff)
        self.cutoff_width = (
            DEFAULT_WIDTH_FRACTION * self.cutoff if cutoff_width is None else float(cutoff_width)
        )
        if not 0 < self.cutoff_width <= self.cutoff:
            raise ValueError("cutoff_width must be in (0, cutoff]")
        self.densities = densities
        self.config = {
            "name": "eam",
            "species": self.species,
            "cutoff": self.cutoff,
            "n_density_terms": int(n_density_terms),
            "cutoff_width": None if cutoff_width is None else self.cutoff_width,
            "densities": densities,
            "pair_term": PAIR_TERM,
        }
        n, k = len(self.species), int(n_density_terms)
        z_to_idx = torch.full((MAX_Z + 1,), -1, dtype=torch.long)
        z_to_idx[self.species] = torch.arange(n)
        self.register_buffer("z_to_idx", z_to_idx)
        # unordered pair (a, b) -> row of the Morse parameters
        rows, cols = np.tril_indices(n)
        pair_idx = torch.zeros(n, n, dtype=torch.long)
        pair_idx[rows, cols] = torch.arange(len(rows))
        pair_idx[cols, rows] = torch.arange(len(rows))
        self.register_buffer("pair_idx", pair_idx)
        # (centre a, neighbour b) -> row of the density parameters
        ordered = densities == "ordered"
        density_idx = torch.arange(n * n).view(n, n) if ordered else pair_idx.clone()
        self.register_buffer("density_idx", density_idx)
        n_density_rows = n * n if ordered else len(rows)

        one = _inv_softplus(torch.ones((), dtype=torch.float64))
        radii = torch.as_tensor(covalent_radii[self.species], dtype=torch.float64)
        r_e = radii[rows] + radii[cols]
        self.raw_depth = nn.Parameter(one.repeat(len(rows)))
        self.raw_width = nn.Parameter(one.repeat(len(rows)))
        self.raw_r_e = nn.Parameter(_inv_softplus(r_e))
        self.raw_A = nn.Parameter(one.repeat(n_density_rows, k))
        beta = torch.arange(1, k + 1, dtype=torch.float64).expand(n_density_rows, k)
        self.raw_beta = nn.Parameter(_inv_softplus(beta).clone())
        self.raw_B = nn.Parameter(one.repeat(n))
        self.rho0 = nn.Parameter(torch.ones(n, dtype=torch.float64))
        self.e_atom = nn.Parameter(torch.ones(n, dtype=torch.float64))

    # ------------------------------------------------------------ parameters
    @property
    def symbols(self) -> list[str]:
        return [chemical_symbols[z] for z in self.species]

    def params(self) -> dict[str, Tensor]:
        """Physical parameters, indexed by element index (order of ``species``).

        ``D, a, r_e``: (n, n), symmetric; ``A, beta``: (n, n, K), [centre, neighbour, k]
        (symmetric in the first two for ``densities="unordered"``); ``B, rho0, e_atom``: (n,).
        """
        pi, di = self.pair_idx, self.density_idx
        return {
            "D": F.softplus(self.raw_depth)[pi],
            "a": F.softplus(self.raw_width)[pi],
            "r_e": F.softplus(self.raw_r_e)[pi],
            "A": F.softplus(self.raw_A)[di],
            "beta": F.softplus(self.raw_beta)[di],
            "B": F.softplus(self.raw_B),
            "rho0": self.rho0,
            "e_atom": self.e_atom,
        }

    def element_index(self, numbers: Tensor) -> Tensor:
        idx = self.z_to_idx[numbers]
        # (a compiled model skips the check, a data-dependent branch: its callers check
        # the species before, as MLFFCalculator does)
        if not torch.compiler.is_compiling() and bool((idx < 0).any()):
            unknown = sorted(set(numbers[idx < 0].tolist()))
            raise ValueError(f"EAM has no parameters for atomic numbers {unknown}")
        return idx

    @torch.no_grad()
    def fit_atomic_energies(self, dataset, batch_size: int = 32) -> dict[str, float]:
        """Set E_atom to the least-squares fit of E_ref − E_EAM(E_atom = 0) over the frames
        of ``dataset`` (element counts as regressors) and return the fitted values.

        The paper starts every parameter but r_e at 1; reference energies are total
        energies (GFN1-xTB silica: about −104 eV/atom), which AdamW at the EAM's learning
        rate would take thousands of steps to reach, so the recipe fits E_atom once first,
        as the MLIPs' per-element reference energies are fitted before training.
        """
        from ase_mlff.models.prediction import predict

        el = self.element_index(torch.as_tensor(dataset.numbers_n)).cpu().numpy()
        saved = self.e_atom.detach().clone()
        self.e_atom.zero_()
        try:
            e_rest = predict(self, dataset, batch_size=batch_size, dtype=self.rho0.dtype)["energy"]
        except Exception:
            self.e_atom.copy_(saved)
            raise
        frame = np.repeat(np.arange(len(dataset)), dataset.n_atoms_s)
        counts = np.zeros((len(dataset), len(self.species)))
        np.add.at(counts, (frame, el), 1.0)
        ok = np.isfinite(dataset.energy_s)
        sol, *_ = np.linalg.lstsq(counts[ok], dataset.energy_s[ok] - e_rest[ok], rcond=None)
        self.e_atom.copy_(torch.as_tensor(sol, dtype=self.e_atom.dtype))
        return {s: float(v) for s, v in zip(self.symbols, sol)}

    # ------------------------------------------------------------ the functions
    def switch(self, r: Tensor) -> Tensor:
        """f_c(r): 1 below r_c − width, 6s⁵ − 15s⁴ + 10s³ with s = (r_c − r)/width up to r_c
        (C²: value, slope and curvature vanish at r_c), 0 beyond."""
        s = ((self.cutoff - r) / self.cutoff_width).clamp(0.0, 1.0)
        return s**3 * (s * (6.0 * s - 15.0) + 10.0)

    def pair(self, r: Tensor, a: Tensor, b: Tensor) -> Tensor:
        """V_ab(r) f_c(r) = D[(1 − e^{−a(r − r_e)})² − 1] f_c (Eq. 3 as a binding Morse, the
        authors' code); ``a, b`` element indices per r."""
        p = self.params()
        d, w, re = (p[k][a, b].to(r.dtype) for k in ("D", "a", "r_e"))
        return d * ((1.0 - torch.exp(-w * (r - re))) ** 2 - 1.0) * self.switch(r)

    def density(self, r: Tensor, a: Tensor, b: Tensor) -> Tensor:
        """ρ_ab(r) f_c(r): density at a centre of element a from a neighbour of element b."""
        p = self.params()
        amp, beta = p["A"][a, b].to(r.dtype), p["beta"][a, b].to(r.dtype)
        return (amp * torch.exp(-beta * r[:, None])).sum(dim=1) * self.switch(r)

    def embedding(self, rho: Tensor, a: Tensor) -> Tensor:
        """F_a(ρ) = B_a (ρ - ρ0_a)² (quadratic embedding of paper 004)."""
        p = self.params()
        return p["B"][a].to(rho.dtype) * (rho - p["rho0"][a].to(rho.dtype)) ** 2

    def atom_energies(self, batch: Batch) -> Tensor:
        """(N,) per-atom energies F(ρ_i) + ½ Σ_j V(r_ij) + E_atom(a_i), batch dtype."""
        el = self.element_index(batch.numbers_n)
        i, j = batch.edge_index_2e  # full directed list: every pair appears as i->j and j->i
        vec = edge_vectors(batch)
        r = torch.sqrt((vec * vec).sum(dim=1).clamp_min(1e-20))
        ei, ej = el[i], el[j]
        n = batch.numbers_n.shape[0]
        rho = scatter_sum(self.density(r, ei, ej), i, n)
        e_pair = scatter_sum(0.5 * self.pair(r, ei, ej), i, n)
        return self.embedding(rho, el) + e_pair + self.e_atom[el].to(r.dtype)

    def forward(self, batch: Batch) -> Tensor:
        e_n = self.atom_energies(batch)
        return scatter_sum(e_n.double(), batch.system_n, batch.n_systems)


def decomposition_figure(
    model: EAM, pair: tuple[str, str] = ("Si", "O"), r_min: float = 0.5, n_points: int = 400
):
    """Dimer energy of ``pair`` split into its terms vs r (cf. paper 004, Figs. 2-3).

    Curves: the Morse pair term V_ab f_c, the embedding ("electron density") contribution
    F_a(ρ_ab) + F_b(ρ_ba) - F_a(0) - F_b(0), and their sum, the dimer energy relative to
    the two isolated atoms (which is the energy relative to the dimer at r ≥ r_c).
    The atomic-energy term is constant in r and given in the legend.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    idx = {s: k for k, s in enumerate(model.symbols)}
    if pair[0] not in idx or pair[1] not in idx:
        raise ValueError(f"pair {pair} not among the model's elements {model.symbols}")
    dtype = model.rho0.dtype
    r = torch.linspace(r_min, model.cutoff, n_points, dtype=dtype)
    a = torch.full_like(r, idx[pair[0]], dtype=torch.long)
    b = torch.full_like(r, idx[pair[1]], dtype=torch.long)
    with torch.no_grad():
        v = model.pair(r, a, b)
        zero = torch.zeros_like(r)
        emb = (
            model.embedding(model.density(r, a, b), a)
            + model.embedding(model.density(r, b, a), b)
            - model.embedding(zero, a)
            - model.embedding(zero, b)
        )
        e_atoms = float(model.e_atom[idx[pair[0]]] + model.e_atom[idx[pair[1]]])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    rr = r.numpy()
    ax.plot(rr, v.numpy(), label="Morse pair term")
    ax.plot(rr, emb.numpy(), label="embedding (electron density)")
    ax.plot(rr, (v + emb).numpy(), "k--", label="total (rel. to isolated atoms)")
    ax.axhline(0.0, color="0.7", lw=0.8)
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("energy (eV)")
    ax.set_title(f"{pair[0]}-{pair[1]} dimer; E_atom sum = {e_atoms:.3f} eV")
    lo = float(min(v.min(), emb.min(), (v + emb).min()))
    ax.set_ylim(lo - 0.5, max(5.0, -lo))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


__all__ = ["EAM", "decomposition_figure"]
