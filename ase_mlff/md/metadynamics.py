"""Batched (well-tempered) metadynamics on the project's MD engine.

    from ase_mlff.md.colvars import Dihedral
    from ase_mlff.md.metadynamics import Metadynamics
    metad = Metadynamics([Dihedral(4, 6, 8, 14)], sigma=[0.35], height=0.012, pace=500,
                         bias_factor=6.0, temperature_K=300.0)
    run = run_md(model, images, steps=200_000, integrator="langevin", metadynamics=metad)
    s, f = metad.free_energy(grid)          # F(s), eV, from the sum of hills

**Bias.** ``V(s) = Σ_k w_k exp(−Σ_d Δ_d(s, c_k)² / (2 σ_d²))`` over the hills deposited so
far (Laio & Parrinello 2002), ``Δ_d`` wrapped into (−period/2, period/2] for periodic CVs
(dihedrals). **Well-tempered** (Barducci, Bussi & Parrinello 2008): a hill deposited at
``s`` has height ``w = w0 exp(−V(s) / (k_B ΔT))``, ``ΔT = T (γ − 1)``, ``γ`` the bias
factor; the free energy is then ``F(s) = −γ/(γ − 1) V(s)`` (+ const.), and ``−V(s)`` for
plain metadynamics (``bias_factor=None``). These are PLUMED's METAD conventions (HEIGHT,
SIGMA, PACE, BIASFACTOR, TEMP).

**Walls.** ``upper_walls`` / ``lower_walls``: (CV index, position, κ) restraints
κ (s − at)² beyond the position (PLUMED's UPPER_WALLS / LOWER_WALLS with EXP=2), e.g. to
keep a dissociating atom within reach; they add to the bias force but not to the hills.

**Walkers.** ``shared=False`` (default): every replica is an independent walker with its
own hills. ``shared=True``: multiple walkers (Raiteri et al. 2006) — one set of hills,
every replica deposits into it and feels all of it.

**In the MD step.** :func:`~ase_mlff.md.runner.run_md` wraps the model in
:class:`BiasedPotential`, so the bias force −∂V/∂x comes from the same autograd pass as
the model's forces, for every integrator, with the detectors on. Hills are deposited at
the runner's checks every ``pace`` steps (``pace`` a multiple of ``check_every``), and
the object rides on the detectors' per-replica bookkeeping: it is dropped with the
replicas that stop and saved in the MD checkpoint, so a killed run resumes with its
hills. :meth:`Metadynamics.write_hills` writes PLUMED's HILLS format.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ase import units
from scipy.special import logsumexp
from torch import Tensor

from ase_mlff.graph.batch import Batch
from ase_mlff.md.colvars import CollectiveVariable
from ase_mlff.md.detectors import Detector
from ase_mlff.md.state import MDState


class Metadynamics(Detector):
    """The hills and the bias of a metadynamics run (module doc). A :class:`Detector`
    that never flags: its per-replica hills follow the replicas and the MD checkpoint."""

    name = "metadynamics"
    accumulators = ("centers", "heights", "times", "n_deposits")

    def __init__(
        self,
        cvs: Sequence[CollectiveVariable],
        sigma: Sequence[float],
        height: float,
        pace: int,
        temperature_K: float,
        bias_factor: float | None = None,
        shared: bool = False,
        upper_walls: Sequence[tuple[int, float, float]] = (),
        lower_walls: Sequence[tuple[int, float, float]] = (),
    ) -> None:
        self.cvs = list(cvs)
        for cv, at, kappa in (*upper_walls, *lower_walls):
            if not (0 <= int(cv) < len(self.cvs)) or not kappa > 0 or not np.isfinite(at):
                raise ValueError(
                    f"a wall is (CV index < {len(self.cvs)}, position, kappa > 0), got "
                    f"{(cv, at, kappa)}"
                )
        #: PLUMED's UPPER_WALLS / LOWER_WALLS (EXP=2, EPS=1, OFFSET=0): κ (s − at)² beyond
        #: ``at``, eV; a restraint, not part of the hills or of the free energy they give
        self.upper_walls = [(int(c), float(a), float(k)) for c, a, k in upper_walls]
        self.lower_walls = [(int(c), float(a), float(k)) for c, a, k in lower_walls]
        if not self.cvs or len(sigma) != len(self.cvs):
            raise ValueError("Metadynamics needs CVs and one sigma per CV")
        if min(sigma) <= 0 or not height > 0 or int(pace) < 1 or not temperature_K > 0:
            raise ValueError("Metadynamics needs sigma > 0, height > 0, pace >= 1, T > 0")
        if bias_factor is not None and not bias_factor > 1:
            raise ValueError(f"the bias factor must be > 1 (None: plain), got {bias_factor}")
        self.sigma = torch.as_tensor(sigma, dtype=torch.float64)
        self.height, self.pace, self.temperature_K = float(height), int(pace), temperature_K
        self.bias_factor, self.shared = bias_factor, bool(shared)
        self.period = torch.tensor(
            [cv.period if cv.periodic else 0.0 for cv in self.cvs], dtype=torch.float64
        )
        self.per_system = () if self.shared else ("centers", "heights", "times")
        self.centers: Tensor | None = None  # (W, K, D), W walkers (1 when shared)
        self.heights: Tensor | None = None  # (W, K) eV
        self.times: Tensor | None = None  # (W, K) fs
        self.n_deposits = 0
        self.dt_fs: float | None = None

    def describe(self) -> dict:
        """The bias's definition (CVs, hills, walls), plain values: part of an MD run's
        settings, so that a run resumes only with the metadynamics it was made with."""
        return {
            "cvs": [cv.describe() for cv in self.cvs],
            "sigma": [float(x) for x in self.sigma],
            "height": self.height,
            "pace": self.pace,
            "temperature_K": float(self.temperature_K),
            "bias_factor": None if self.bias_factor is None else float(self.bias_factor),
            "shared": self.shared,
            "upper_walls": [list(w) for w in self.upper_walls],
            "lower_walls": [list(w) for w in self.lower_walls],
        }

    # ------------------------------------------------------------ the bias
    def values(self, batch: Batch) -> Tensor:
        """(S, D) CV values of every replica."""
        return torch.stack([cv(batch) for cv in self.cvs], dim=1)

    def _delta(self, s: Tensor, c: Tensor) -> Tensor:
        d = s - c
        per = self.period.to(d)
        wrapped = d - per * torch.round(d / torch.where(per > 0, per, torch.ones_like(per)))
        return torch.where(per > 0, wrapped, d)

    def bias(self, s_sd: Tensor) -> Tensor:
        """(S,) V(s) of every replica (its own hills, or the shared ones), eV."""
        if self.centers is None or self.centers.shape[1] == 0:
            return torch.zeros(s_sd.shape[0], dtype=s_sd.dtype, device=s_sd.device)
        if self.shared:
            return self._bias_at(s_sd, self.centers[0], self.heights[0])
        c, w = self.centers.to(s_sd), self.heights.to(s_sd)
        d = self._delta(s_sd[:, None, :], c) / self.sigma.to(s_sd)
        return (w * torch.exp(-0.5 * (d * d).sum(dim=2))).sum(dim=1)

    def wall(self, s_sd: Tensor) -> Tensor:
        """(S,) energy of the walls at the CV values ``s_sd``, eV (0 without walls)."""
        e = torch.zeros(s_sd.shape[0], dtype=s_sd.dtype, device=s_sd.device)
        for cv, at, kappa in self.upper_walls:
            e = e + kappa * torch.clamp(s_sd[:, cv] - at, min=0.0) ** 2
        for cv, at, kappa in self.lower_walls:
            e = e + kappa * torch.clamp(at - s_sd[:, cv], min=0.0) ** 2
        return e

    def _start(self, n_walkers: int, d: int, dtype: torch.dtype, device) -> None:
        w = 1 if self.shared else n_walkers
        self.centers = torch.zeros(w, 0, d, dtype=dtype, device=device)
        self.heights = torch.zeros(w, 0, dtype=dtype, device=device)
        self.times = torch.zeros(w, 0, dtype=dtype, device=device)

    def deposit(self, state: MDState) -> None:
        """Add a hill at every replica's current CV values (well-tempered heights)."""
        with torch.no_grad():
            s = self.values(state.batch).double()
            if self.centers is None:
                self._start(len(s), s.shape[1], s.dtype, s.device)
            w = torch.full((len(s),), self.height, dtype=s.dtype, device=s.device)
            if self.bias_factor is not None:
                kdt = units.kB * self.temperature_K * (self.bias_factor - 1.0)
                w = w * torch.exp(-self.bias(s) / kdt)
            t = torch.full_like(w, state.step * (self.dt_fs or 0.0))
            if self.shared:  # one hill per walker, all into the common set
                s, w, t = s[None], w[None], t[None]
            else:
                s, w, t = s[:, None], w[:, None], t[:, None]
            self.centers = torch.cat([self.centers.to(s), s], dim=1)
            self.heights = torch.cat([self.heights.to(w), w], dim=1)
            self.times = torch.cat([self.times.to(t), t], dim=1)
            self.n_deposits += 1

    def __call__(self, state: MDState) -> Tensor:
        """At a check: deposit when ``pace`` steps have passed; never flags a replica."""
        if state.step > 0 and state.step % self.pace == 0:
            self.deposit(state)
        return torch.zeros(state.batch.n_systems, dtype=torch.bool, device=state.batch.device)

    def load_state_dict(self, data: dict) -> None:
        """Restore the hills saved in a checkpoint (their number grows, so no shape check)."""
        for f in self.accumulators:
            setattr(self, f, data[f])

    # ------------------------------------------------------------ analysis
    def free_energy(self, grid_gd: np.ndarray, walker: int = 0) -> np.ndarray:
        """F on the CV points ``grid_gd`` (G, D) from the hills of ``walker`` (or the
        shared set), eV, minimum 0: −γ/(γ−1) V well-tempered, −V plain."""
        s = torch.as_tensor(np.asarray(grid_gd, dtype=np.float64).reshape(len(grid_gd), -1))
        centers, heights, _ = self._hills(walker)
        v = self._bias_at(s, centers, heights).numpy()
        g = self.bias_factor
        f = -v * (g / (g - 1.0) if g is not None else 1.0)
        return f - f.min()

    def _hills(self, walker: int) -> tuple[Tensor, Tensor, Tensor]:
        k = 0 if self.shared else walker
        return self.centers[k].cpu(), self.heights[k].cpu(), self.times[k].cpu()

    def _bias_at(self, s_gd: Tensor, centers: Tensor, heights: Tensor) -> Tensor:
        d = self._delta(s_gd[:, None, :], centers[None].to(s_gd)) / self.sigma.to(s_gd)
        return torch.exp(-0.5 * (d * d).sum(dim=2)) @ heights.to(s_gd)

    def c_of_t(self, grid_gd: np.ndarray, cell_volume: float, walker: int = 0) -> np.ndarray:
        """Tiwary–Parrinello c(t) after each deposition (well-tempered), eV:
        ``c = k_B T ln[∫ e^{γ V/((γ−1) k_B T)} ds / ∫ e^{V/((γ−1) k_B T)} ds]`` on the
        CV points ``grid_gd`` (equal cells of volume ``cell_volume``, which cancels), V
        with the hills up to then; log-sum-exp, so large biases do not overflow."""
        if self.bias_factor is None:
            raise ValueError("c(t) reweighting is defined for well-tempered metadynamics")
        g, kt = self.bias_factor, units.kB * self.temperature_K
        c_k, w_k, _ = self._hills(walker)
        s = torch.as_tensor(np.asarray(grid_gd, np.float64).reshape(len(grid_gd), -1))
        d = self._delta(s[:, None, :], c_k[None]) / self.sigma
        kernel = torch.exp(-0.5 * (d * d).sum(dim=2))  # (G, K)
        v_gk = torch.cumsum(kernel * w_k[None], dim=1).numpy()  # V after hill k, per point
        a = logsumexp(g * v_gk / ((g - 1) * kt), axis=0)  # the cell volume cancels
        b = logsumexp(v_gk / ((g - 1) * kt), axis=0)
        return kt * (a - b)

    def reweighted_free_energy(
        self,
        s_fd: np.ndarray,
        t_f: np.ndarray,
        edges: Sequence[np.ndarray],
        walker: int = 0,
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """F(s) from the visited CV values ``s_fd`` (frames × D) at times ``t_f`` (fs),
        each weighted by ``exp((V(s, t) − c(t)) / k_B T)`` (Tiwary & Parrinello 2015), V and
        c from the hills deposited up to that time; histogram on ``edges`` (one array of
        bin edges per CV). Returns the bin centres and F (eV, minimum 0; +inf where no
        frame fell)."""
        kt = units.kB * self.temperature_K
        c_k, w_k, t_k = self._hills(walker)
        s = torch.as_tensor(np.asarray(s_fd, np.float64).reshape(len(s_fd), -1))
        t = torch.as_tensor(np.asarray(t_f, np.float64))
        d = self._delta(s[:, None, :], c_k[None]) / self.sigma
        before = t_k[None, :] <= t[:, None] + 1e-9  # hills already there at t
        v_f = (torch.exp(-0.5 * (d * d).sum(dim=2)) * w_k[None] * before).sum(1).numpy()
        centres = [0.5 * (e[1:] + e[:-1]) for e in edges]
        mesh = np.stack(np.meshgrid(*centres, indexing="ij"), -1).reshape(-1, len(edges))
        volume = float(np.prod([np.diff(e).mean() for e in edges]))
        c_t = self.c_of_t(mesh, volume, walker)
        n_before = before.sum(1).numpy()  # hills deposited up to each frame
        c_f = np.where(n_before > 0, c_t[np.maximum(n_before - 1, 0)], 0.0)
        logw = (v_f - c_f) / kt
        hist, _ = np.histogramdd(s.numpy(), bins=list(edges), weights=np.exp(logw - logw.max()))
        with np.errstate(divide="ignore"):
            f = -kt * np.log(hist)
        return centres, f - f[np.isfinite(f)].min()

    def write_hills(self, path: str | Path, walker: int = 0) -> Path:
        """PLUMED's HILLS file of ``walker`` (or the shared set): time, centres, sigmas,
        height (eV) and the bias factor, one hill per line."""
        path = Path(path)
        names = [f"{cv.name}{k}" for k, cv in enumerate(self.cvs)]
        k = 0 if self.shared else walker
        lines = [
            "#! FIELDS time "
            + " ".join(names)
            + " "
            + " ".join(f"sigma_{n}" for n in names)
            + " height biasf",
            "#! SET multivariate false",
            "#! SET kerneltype stretched-gaussian",
        ]
        for n, cv in zip(names, self.cvs):
            if cv.periodic:
                lines += [f"#! SET min_{n} -pi", f"#! SET max_{n} pi"]
        biasf = self.bias_factor if self.bias_factor is not None else 1.0
        if self.centers is not None:
            c, w, t = (x[k].cpu().numpy() for x in (self.centers, self.heights, self.times))
            for tk, ck, wk in zip(t, c, w):
                cells = [f"{tk:.6f}", *(f"{x:.8f}" for x in ck)]
                cells += [f"{x:.8f}" for x in self.sigma.numpy()]
                cells += [f"{wk:.10g}", f"{biasf:g}"]
                lines.append(" ".join(cells))
        path.write_text("\n".join(lines) + "\n")
        return path


class BiasedPotential(torch.nn.Module):
    """``model`` plus the metadynamics bias V(s(x)): its forces include −∂V/∂x by
    autograd, in whatever integrator runs it."""

    def __init__(self, model: torch.nn.Module, metad: Metadynamics) -> None:
        super().__init__()
        self.model, self.metad = model, metad
        self.cutoff = model.cutoff
        self.config = getattr(model, "config", {})

    def forward(self, batch: Batch) -> Tensor:
        e = self.model(batch)
        s = self.metad.values(batch)
        return e + (self.metad.bias(s) + self.metad.wall(s)).to(e.dtype)


def check_metadynamics(metad: Metadynamics, check_every: int) -> None:
    """The deposition stride must fall on the runner's checks."""
    if metad.pace % check_every:
        raise ValueError(
            f"metadynamics pace {metad.pace} must be a multiple of check_every {check_every}"
        )


__all__ = ["BiasedPotential", "Metadynamics", "check_metadynamics"]
