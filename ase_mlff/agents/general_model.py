"""How a general (pre-trained) model does on molecules it never saw: force and energy
errors per molecule, and MD stability at several temperatures (recipe
``general_model_report``; the figures of ``organic-painn`` in docs/models.md).

    from ase_mlff.agents.general_model import held_out_report
    rep = held_out_report("organic-painn", "md17", temperatures_K=(300, 500))

**Errors** per molecule of a set labelled by molecule (the shipped ``md17``: the eight
MD17 molecules, GFN2-xTB at 500 K, none of them in ``organic-painn``'s training set):
force MAE and RMSE over every atom and Cartesian component, and the energy MAE per atom.
The energies are compared as they are (the same level of theory, so the same zero).

**Stability**: for each temperature, ``replicas`` frames of every molecule (evenly spread
over its trajectory) start batched Langevin MD (0.5 fs, friction 0.01 fs⁻¹, as the
reference MD) with the project's default detectors (bonds, overlap, forces, temperature);
per molecule the fraction that stayed stable over ``steps``, with its Wilson 95 % interval,
and the mean t_inst of those that failed.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson score 95 % interval of k successes in n (scipy.stats.binomtest's method)."""
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def held_out_report(
    model_name: str,
    data: str = "md17",
    *,
    temperatures_K: tuple[float, ...] = (300.0, 500.0),
    replicas: int = 4,
    steps: int = 4000,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Errors and stability of ``model_name`` on each molecule of ``data`` (module doc)."""
    import torch

    from ase_mlff.calculators.mlff import resolve_model_path
    from ase_mlff.data import load_dataset
    from ase_mlff.md.runner import run_md
    from ase_mlff.metrics.errors import error_metrics
    from ase_mlff.models.io import load_model
    from ase_mlff.models.prediction import predict
    from ase_mlff.training.probe import select_starts

    model, _ = load_model(resolve_model_path(model_name), device=device, dtype=torch.float64)
    ds = load_dataset(data)
    names = ds.provenance.get("molecules")
    if "molecule" not in ds.extra_s or not isinstance(names, dict):
        raise ValueError(f"{data} does not label its frames by molecule")
    pred = predict(model, ds, device=device, dtype=torch.float64)
    report: dict[str, Any] = {"model": str(model_name), "data": data, "molecules": {}}
    starts, owner = [], []
    for mol, idx in sorted(names.items(), key=lambda kv: kv[1]):
        frames = np.flatnonzero(ds.extra_s["molecule"] == idx)
        sub = ds[frames]
        err = error_metrics(pred["energy"][frames], pred["forces"][ds.atom_index(frames)], sub)
        report["molecules"][mol] = {
            "n_frames": len(frames),
            "forces_mae_meV_A": err["forces_mae"] * 1e3,
            "forces_rmse_meV_A": err["forces_rmse"] * 1e3,
            "energy_mae_meV_atom": err["energy_mae_per_atom"] * 1e3,
            "stability": {},
        }
        for a in select_starts(sub, replicas):
            starts.append(a)
            owner.append(mol)
    owner_arr = np.array(owner)
    for t in temperatures_K:
        run = run_md(
            model,
            starts,
            steps=steps,
            integrator="langevin",
            temperature_K=float(t),
            dt=0.5,
            friction=0.01,
            seed=seed,
            device=device,
        )
        t_inst = run.t_inst()  # a stable replica's is the run length
        ok = np.array([r.stable for r in run.replicas])
        for mol in report["molecules"]:
            mine = owner_arr == mol
            stable = int(ok[mine].sum())
            n = int(mine.sum())
            failed = t_inst[mine & ~ok]
            report["molecules"][mol]["stability"][f"{t:.0f}K"] = {
                "stable": stable,
                "replicas": n,
                "fraction_stable_ci": _wilson(stable, n),
                "t_inst_failed_mean_ps": float(failed.mean() / 1000) if len(failed) else None,
                "run_ps": steps * 0.5 / 1000,
            }
    mae = [m["forces_mae_meV_A"] for m in report["molecules"].values()]
    report["forces_mae_meV_A_mean_over_molecules"] = float(np.mean(mae))
    return report


def report_markdown(report: dict[str, Any]) -> str:
    """The report as a markdown table (one row per molecule)."""
    temps = list(next(iter(report["molecules"].values()))["stability"])
    head = "| molecule | F-MAE (meV/Å) | F-RMSE (meV/Å) | E-MAE (meV/atom) | " + " | ".join(
        f"stable at {t}" for t in temps
    )
    lines = [head + " |", "|---" + "|---:" * (3 + len(temps)) + "|"]
    for mol, m in report["molecules"].items():
        cells = []
        for t in temps:
            s = m["stability"][t]
            lo, hi = s["fraction_stable_ci"]
            cells.append(f"{s['stable']}/{s['replicas']} [{lo:.2f}, {hi:.2f}]")
        lines.append(
            f"| {mol} | {m['forces_mae_meV_A']:.1f} | {m['forces_rmse_meV_A']:.1f} | "
            f"{m['energy_mae_meV_atom']:.1f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)
