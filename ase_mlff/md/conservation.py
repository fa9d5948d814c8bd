"""Energy-conservation gate: how fast does a potential heat up (or cool down) in NVE?

A potential whose forces are not the exact gradient of a smooth energy — direct-force
models, or rough energy surfaces that the time step cannot resolve — drifts in total
energy under velocity Verlet, even while its trajectories still look "stable" to the
t_inst detectors (Bigi et al. 2025, "The dark side of the forces"; Fu et al. 2025, eSEN).
:func:`nve_energy_drift` measures that drift with the batched engine, beside t_inst.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms, units
from scipy import stats

from ase_mlff.md.detectors import NonFinite
from ase_mlff.md.runner import run_md
from ase_mlff.md.validation import MDParameterError, validate_md_parameters


def nve_energy_drift(
    model: torch.nn.Module,
    images: Sequence[Atoms],
    *,
    steps: int,
    dt: float = 0.5,
    temperature_K: float = 500.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    record_every: int = 10,
) -> dict[str, Any]:
    """NVE energy drift of ``model``, one replica per image, in eV/atom/ps.

    Each image is integrated with velocity Verlet (``run_md(integrator="nve")``) for
    ``steps`` steps of ``dt`` fs from Maxwell–Boltzmann velocities at ``temperature_K``
    (stream ``(seed, r)``, centre-of-mass motion removed, rescaled to exactly
    ``temperature_K`` over 3N−3 degrees of freedom: :func:`~ase_mlff.md.init_state`).
    Every ``record_every`` steps the total energy per atom of replica r is

        e_r(t) = [E_pot(t) + E_kin(t)] / N,   E_kin(t) = ½ n_dof k_B T(t),

    with n_dof = max(3N − 3, 1), the convention of ``MDState.temperature()``, so E_kin is
    exactly ``MDState.kinetic_energy()``. A least-squares line e_r(t) ≈ a_r + b_r t (t in
    ps) gives

    * ``drift`` b_r, eV/atom/ps (positive: the system heats up);
    * ``rms`` √(mean over frames of (e_r − a_r − b_r t)²), eV/atom, the fluctuation about
      the line (velocity Verlet's shadow-energy oscillation, ∝ dt² for a smooth potential).

    Over replicas: ``drift_eV_per_atom_ps`` is the mean of b_r and ``drift_ci95`` the 95 %
    Student-t interval mean ± t₀.₉₇₅(R−1)·s/√R (NaN for one replica); ``rms_eV_per_atom``
    is the pooled √(mean over replicas of rms_r²). The per-replica ``drift_stderr`` is
    linregress's and assumes independent residuals, which MD frames are not; the
    across-replica interval is the one to quote.

    A replica whose energy, forces or positions become non-finite stops there
    (``stopped_fs``); its drift is fitted on the finite frames before it.

    Returns a dict with ``replicas`` (one dict each), the aggregates above, the protocol
    (``steps``, ``dt_fs``, ``temperature_K``, ``seed``, ``record_every``) and the series
    ``times_fs`` (T,; a replica that stopped has the first frames only) and
    ``e_tot_per_atom`` (one array per replica), as numpy arrays
    (:func:`drift_summary` drops them for JSON).
    """
    validate_md_parameters(
        steps=steps,
        dt=dt,
        temperature_K=temperature_K,
        record_every=record_every,
        images=images,
    )
    if steps // record_every < 2:
        raise MDParameterError(
            "steps",
            f"steps must be >= 2 * record_every for a drift fit (>= 3 frames), got "
            f"steps={steps}, record_every={record_every}",
        )
    run = run_md(
        model,
        images,
        steps=steps,
        dt=dt,
        integrator="nve",
        temperature_K=temperature_K,
        seed=seed,
        detectors=[NonFinite()],
        check_every=record_every,
        record_every=record_every,
        dtype=dtype,
        device=device,
    )
    replicas, series = [], []
    for rep, atoms in zip(run.replicas, images):
        row, e = _replica_drift(rep, len(atoms))
        replicas.append(row)
        series.append(e)
    b = np.array([r["drift_eV_per_atom_ps"] for r in replicas])
    rms = np.array([r["rms_eV_per_atom"] for r in replicas])
    mean = float(np.mean(b))
    lo, hi = _t_interval(b)
    return {
        "steps": int(steps),
        "dt_fs": float(dt),
        "temperature_K": float(temperature_K),
        "seed": int(seed),
        "record_every": int(record_every),
        "n_replicas": len(replicas),
        "drift_eV_per_atom_ps": mean,
        "drift_ci95": [float(lo), float(hi)],
        "abs_drift_max_eV_per_atom_ps": float(np.max(np.abs(b))),
        "rms_eV_per_atom": float(np.sqrt(np.mean(rms**2))),
        "replicas": replicas,
        "times_fs": max((r.times_fs for r in run.replicas), key=len),
        "e_tot_per_atom": series,
    }


def _replica_drift(rep, n: int) -> tuple[dict[str, Any], np.ndarray]:
    """One replica's row (drift, its standard error, the rms about the line, e(0)) and its
    series e(t) = (E_pot + ½ n_dof k_B T) / N, eV/atom (see :func:`nve_energy_drift`)."""
    n_dof = max(3 * n - 3, 1)
    e_kin = 0.5 * n_dof * units.kB * rep.temperature_t
    e = (rep.energy_t + e_kin) / n
    t_ps = rep.times_fs / 1000.0
    row: dict[str, Any] = {
        "replica_id": rep.replica_id,
        "n_atoms": n,
        "frames": len(e),
        "stopped_fs": None if rep.stable else float(rep.t_inst_fs),
    }
    if len(e) >= 3 and np.all(np.isfinite(e)):
        fit = stats.linregress(t_ps, e)
        resid = e - (fit.intercept + fit.slope * t_ps)
        row.update(
            drift_eV_per_atom_ps=float(fit.slope),
            drift_stderr=float(fit.stderr),
            rms_eV_per_atom=float(np.sqrt(np.mean(resid**2))),
            e0_eV_per_atom=float(e[0]),
        )
    else:
        row.update(
            drift_eV_per_atom_ps=float("nan"),
            drift_stderr=float("nan"),
            rms_eV_per_atom=float("nan"),
            e0_eV_per_atom=float(e[0]) if len(e) else float("nan"),
        )
    return row, e


def _t_interval(b: np.ndarray) -> tuple[float, float]:
    """95 % Student-t interval of the mean of ``b`` (NaN for fewer than two values or a
    non-finite one; the mean itself when they are all equal)."""
    if len(b) > 1 and np.all(np.isfinite(b)):
        mean, sem = float(np.mean(b)), float(stats.sem(b))
        return stats.t.interval(0.95, len(b) - 1, loc=mean, scale=sem) if sem > 0 else (mean, mean)
    return float("nan"), float("nan")


def drift_summary(result: dict[str, Any]) -> dict[str, Any]:
    """:func:`nve_energy_drift`'s result without the series (JSON-ready)."""
    return {k: v for k, v in result.items() if k not in ("times_fs", "e_tot_per_atom")}


def drift_metrics(result: dict[str, Any]) -> dict[str, float]:
    """Flat numbers for a tracker: mean drift, its 95 % interval, the RMS fluctuation."""
    lo, hi = result["drift_ci95"]
    return {
        "nve_drift_eV_per_atom_ps": result["drift_eV_per_atom_ps"],
        "nve_drift_ci95_lo": lo,
        "nve_drift_ci95_hi": hi,
        "nve_abs_drift_max_eV_per_atom_ps": result["abs_drift_max_eV_per_atom_ps"],
        "nve_rms_eV_per_atom": result["rms_eV_per_atom"],
    }


def energy_drift_report(
    models: Sequence[str],
    starts: Sequence[Atoms],
    md: dict[str, Any],
    nve_steps: int,
    dtype: str = "float64",
    device: str = "cpu",
    *,
    n_starts: int = 4,
    out: str | Path | None = None,
) -> dict[str, dict[str, Any]]:
    """The NVE gate for each model (shipped name or checkpoint) on the first ``n_starts``
    start structures, with ``md``'s ``dt``, ``temperature_K`` and ``seed`` (defaults
    0.5 fs, 500 K, 0); ``{model: drift_summary}``, also written to ``out/energy_drift.json``
    when ``out`` is given."""
    from ase_mlff.calculators.mlff import resolve_model_path
    from ase_mlff.models.io import load_model
    from ase_mlff.utils import DTYPES

    images = list(starts)[: max(1, min(n_starts, len(starts)))]
    record_every = max(1, min(10, nve_steps // 20))
    report = {}
    for name in models:
        model, _ = load_model(resolve_model_path(name), device=device, dtype=DTYPES[dtype])
        res = nve_energy_drift(
            model,
            images,
            steps=nve_steps,
            dt=md.get("dt", 0.5),
            temperature_K=md.get("temperature_K", 500.0),
            seed=md.get("seed", 0),
            dtype=DTYPES[dtype],
            device=device,
            record_every=record_every,
        )
        report[str(name)] = drift_summary(res)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "energy_drift.json").write_text(json.dumps(report, indent=2))
    return report
