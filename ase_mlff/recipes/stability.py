"""How long does MD with a model stay physical? (paper 003's simulation benchmark)

    python -m ase_mlff.recipes.stability --model aspirin-painn --replicas 32 --profile quick
    python -m ase_mlff.recipes.stability --model aspirin-painn --model runs/x/best --profile paper
    RAY_ADDRESS=auto python -m ase_mlff.recipes.stability ...     # on an existing Ray cluster

Replicas start from frames spread evenly over the shipped data's held-out test trajectory
(or any dataset given by ``--data``) and run Nosé-Hoover NVT at 500 K with 0.5 fs steps
(paper 003 §4.1, MD17 protocol), spread over Ray trajectory agents. A replica stops the
moment a detector fires (bond deviation > ``--delta`` Å, atom overlap, non-finite or
exploding forces, temperature bounds). The bonds and their reference lengths come from the
whole ``--data`` set (:func:`ase_mlff.graph.geometry.bond_graphs_from_dataset`: median
topology, mean lengths). Logged to MLflow: a parent run with the protocol, a child run per
model with the survival statistics (Kaplan–Meier, median and RMST with CIs, Wilson
interval; a replica stable at the end is right-censored), survival curve (data and
figure), the t_inst table, the log-rank table and the stable trajectories.

Profiles: ``quick`` 2,000 steps (1 ps) per replica; ``paper`` 600,000 steps (300 ps).

The energy-conservation gate runs beside t_inst: ``--nve-steps N`` (profile default:
400 quick, 4,000 paper; 0 turns it off) NVE steps on the first min(4, replicas) starts
per model, the drift of E_tot/atom in eV/atom/ps with a 95 % interval
(:func:`ase_mlff.md.nve_energy_drift`), in ``energy_drift.json`` and on the child runs.
Bad flag values stop the recipe before any work, with one line naming the flag.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PROFILES = {
    "quick": {"steps": 2000, "nve_steps": 400},
    "paper": {"steps": 600_000, "nve_steps": 4000},
}


#: run_md parameter -> the flag that sets it
FLAGS = {
    "steps": "--steps",
    "dt": "--dt",
    "temperature_K": "--temperature",
    "friction": "--friction",
    "tdamp": "--tdamp",
    "check_every": "--check-every",
    "record_every": "--record-every",
}


def check_args(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Bad values end the program here, with usage and one line naming the flag (exit 2)."""
    from ase_mlff.md.validation import MDParameterError, validate_md_parameters

    for flag, value in (("--replicas", a.replicas), ("--agents", a.agents)):
        if value is not None and value < 1:
            p.error(f"{flag} must be >= 1, got {value}")
    if not 0 < a.delta < float("inf"):
        p.error(f"--delta must be > 0 Å, got {a.delta}")
    if a.nve_steps is None:
        a.nve_steps = PROFILES[a.profile]["nve_steps"]
    if a.nve_steps < 0 or a.nve_steps == 1:
        p.error(f"--nve-steps must be 0 (off) or >= 2, got {a.nve_steps}")
    try:
        validate_md_parameters(
            steps=a.steps if a.steps is not None else PROFILES[a.profile]["steps"],
            dt=a.dt,
            integrator=a.integrator,
            temperature_K=a.temperature,
            friction=a.friction,
            tdamp=a.tdamp,
            check_every=a.check_every,
            record_every=a.record_every,
        )
    except MDParameterError as e:
        p.error(f"{FLAGS[e.param]}: {e}")


#: the default protocol (paper 003 §4.1, MD17): the flags' defaults are its fields
BASE_PROTOCOL = "md17_nose_hoover"


def build_parser() -> argparse.ArgumentParser:
    from ase_mlff.md.protocol import PROTOCOLS

    base = PROTOCOLS[BASE_PROTOCOL]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", action="append", help="shipped name or checkpoint (repeatable)")
    p.add_argument("--data", default="aspirin", help="where start structures come from")
    p.add_argument("--replicas", type=int, default=32)
    p.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    p.add_argument("--steps", type=int, default=None, help="overrides the profile")
    p.add_argument("--dt", type=float, default=base.dt, help="fs")
    p.add_argument(
        "--integrator", default=base.integrator, choices=["nose_hoover", "langevin", "nve"]
    )
    p.add_argument("--temperature", type=float, default=base.temperature_K, help="K")
    p.add_argument("--friction", type=float, default=base.friction, help="1/fs (Langevin)")
    p.add_argument("--tdamp", type=float, default=base.tdamp, help="fs (Nose-Hoover)")
    p.add_argument("--delta", type=float, default=0.5, help="bond deviation threshold, Å")
    p.add_argument("--check-every", type=int, default=base.check_every)
    p.add_argument("--record-every", type=int, default=base.record_every)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--agents", type=int, default=None, help="default: one per CPU")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--experiment", default="stability")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument(
        "--nve-steps",
        type=int,
        default=None,
        help="energy-conservation gate: NVE steps on the first min(4, replicas) starts per\n"
        "model, drift in eV/atom/ps -> energy_drift.json (0: off; default: the profile's)",
    )
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = build_parser()
    a = p.parse_args(argv)
    check_args(p, a)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from ase_mlff.agents.benchmark import stability_benchmark

    md = {
        "steps": a.steps if a.steps is not None else PROFILES[a.profile]["steps"],
        "dt": a.dt,
        "integrator": a.integrator,
        "temperature_K": a.temperature,
        "friction": a.friction,
        "tdamp": a.tdamp,
        "seed": a.seed,
        "check_every": a.check_every,
        "record_every": a.record_every,
    }
    out = a.out or Path("runs") / f"stability-{time.strftime('%Y%m%d-%H%M%S')}"
    result = stability_benchmark(
        a.model or ["aspirin-painn"],
        a.data,
        replicas=a.replicas,
        md=md,
        out=out,
        agents=a.agents,
        bond_delta=a.delta,
        nve_steps=a.nve_steps,
        dtype=a.dtype,
        device=a.device,
        experiment=a.experiment,
        tracking_uri=a.tracking_uri,
    )
    print_results(result["study"], result["energy_drift"])
    print(f"results in {out}; MLflow store: {result['tracking_uri']}")
    return {k: result[k] for k in ("out", "summaries", "run_id", "energy_drift")}


def print_results(res, drift: dict) -> None:
    """Survival statistics with their intervals, the log-rank tests and the NVE drift."""
    from ase_mlff.metrics.stability import format_ci

    for model, s in res.summaries.items():
        frac = [100 * s[f"fraction_stable{x}"] for x in ("", "_lo", "_hi")]
        med = [s[f"t_inst_median_fs{x}"] for x in ("", "_lo", "_hi")]
        print(
            f"{model}: {s['n_replicas']} replicas x {res.total_fs / 1000:.1f} ps, "
            f"{s['n_unstable']} unstable; stable {format_ci(*frac)} % (Wilson 95 % CI); "
            f"median t_inst {format_ci(*med)} fs; "
            f"RMST {format_ci(s['rmst_fs'], s['rmst_fs_lo'], s['rmst_fs_hi'])} fs "
            "(95 % CI; '> run': not reached within the run)"
        )
    for r in res.logrank:
        print(
            f"log-rank {r['a']} vs {r['b']}: z = {r['statistic']:.2f}, p = {r['p_value']:.3g}, "
            f"Holm p = {r['p_holm']:.3g}"
        )
    for model, d in drift.items():
        lo, hi = d["drift_ci95"]
        print(
            f"{model}: NVE energy drift {d['drift_eV_per_atom_ps']:+.2e} eV/atom/ps "
            f"(95 % CI {lo:+.2e} .. {hi:+.2e}; {d['n_replicas']} replicas x {d['steps']} steps "
            f"of {d['dt_fs']} fs), RMS {d['rms_eV_per_atom']:.1e} eV/atom"
        )


if __name__ == "__main__":
    from ase_mlff.recipes.cli import run_recipe

    run_recipe(main)
