"""How long does MD with a model stay physical? (paper 003's simulation benchmark)

    python -m ase_mlff.recipes.stability --model aspirin-painn --replicas 32 --profile quick
    python -m ase_mlff.recipes.stability --model aspirin-painn --model runs/x/best --profile paper
    RAY_ADDRESS=auto python -m ase_mlff.recipes.stability ...     # on an existing Ray cluster

Replicas start from frames spread evenly over the shipped data's held-out test trajectory
(or any dataset given by ``--data``) and run Nosé-Hoover NVT at 500 K with 0.5 fs steps
(paper 003 §4.1, MD17 protocol), spread over Ray trajectory agents. A replica stops the
moment a detector fires (bond deviation > ``--delta`` Å, atom overlap, non-finite or
exploding forces, temperature bounds). Logged to MLflow: a parent run with the protocol,
a child run per model with t_inst statistics, survival curve (data and figure), the t_inst
table and the stable trajectories.

Profiles: ``quick`` 2,000 steps (1 ps) per replica; ``paper`` 600,000 steps (300 ps).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ase_mlff.data import load_dataset
from ase_mlff.data.io import SHIPPED_SPLITS

log = logging.getLogger(__name__)

PROFILES = {"quick": {"steps": 2000}, "paper": {"steps": 600_000}}


def start_structures(data: str, n: int) -> list:
    """``n`` frames spread evenly over the test trajectory of a shipped set, else the set."""
    ds = load_dataset(data)
    frames = np.arange(len(ds))
    split = SHIPPED_SPLITS.get(data, {})
    if split.get("split") == "trajectory" and "traj_id" in ds.extra_s:
        frames = np.flatnonzero(np.isin(ds.extra_s["traj_id"], split["test_groups"]))
    pick = frames[np.linspace(0, len(frames) - 1, min(n, len(frames))).astype(int)]
    return [ds.to_atoms(int(i), with_labels=False) for i in pick]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", action="append", help="shipped name or checkpoint (repeatable)")
    p.add_argument("--data", default="aspirin", help="where start structures come from")
    p.add_argument("--replicas", type=int, default=32)
    p.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    p.add_argument("--steps", type=int, default=None, help="overrides the profile")
    p.add_argument("--dt", type=float, default=0.5, help="fs")
    p.add_argument(
        "--integrator", default="nose_hoover", choices=["nose_hoover", "langevin", "nve"]
    )
    p.add_argument("--temperature", type=float, default=500.0, help="K")
    p.add_argument("--friction", type=float, default=0.01, help="1/fs (Langevin)")
    p.add_argument("--tdamp", type=float, default=50.0, help="fs (Nose-Hoover)")
    p.add_argument("--delta", type=float, default=0.5, help="bond deviation threshold, Å")
    p.add_argument("--check-every", type=int, default=10)
    p.add_argument("--record-every", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--agents", type=int, default=None, help="default: one per CPU")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--experiment", default="stability")
    p.add_argument("--tracking-uri", default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from ase_mlff.agents import run_stability_study
    from ase_mlff.metrics.stability import survival_figure
    from ase_mlff.tracking import Tracker

    models = a.model or ["aspirin-painn"]
    md = {
        "steps": a.steps or PROFILES[a.profile]["steps"],
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
    starts = start_structures(a.data, a.replicas)
    tracker = Tracker(a.experiment, uri=a.tracking_uri)
    protocol = {
        "md": md,
        "replicas": a.replicas,
        "data": a.data,
        "bond_delta": a.delta,
        "models": models,
        "dtype": a.dtype,
        "device": a.device,
    }
    with tracker.run(
        f"stability-{time.strftime('%Y%m%d-%H%M%S')}", params=protocol, tags={"recipe": "stability"}
    ) as parent:
        res = run_stability_study(
            models,
            starts,
            n_replicas=a.replicas,
            out_dir=out,
            md=md,
            n_agents=a.agents,
            bond_delta=a.delta,
            dtype=a.dtype,
            device=a.device,
        )
        for model in models:
            with tracker.run(
                Path(str(model)).name,
                params={"model": model},
                tags={"recipe": "stability"},
                parent=parent,
            ) as child:
                child.log_metrics(res.summaries[str(model)])
                times, frac = res.curves[str(model)]
                for t, f in zip(times[::10], frac[::10]):
                    child.log_metrics({"fraction_stable": float(f)}, step=int(t))
                child.log_figure(
                    survival_figure({str(model): res.curves[str(model)]}), "survival.png"
                )
                model_dir = next(
                    Path(r["traj_dir"]).parent for r in res.rows if r["model"] == str(model)
                )
                child.log_artifact(model_dir, "trajectories")
        for f in ("t_inst.csv", "survival.csv", "summary.json", "survival.png"):
            parent.log_artifact(out / f)
    for model, s in res.summaries.items():
        print(
            f"{model}: {s['n_replicas']} replicas x {res.total_fs / 1000:.1f} ps, "
            f"stable {100 * s['fraction_stable']:.0f} %, t_inst mean {s['t_inst_mean_fs']:.0f} fs, "
            f"median {s['t_inst_median_fs']:.0f} fs"
        )
    print(f"results in {out}; MLflow store: {tracker.uri}")
    return {"out": str(out), "summaries": res.summaries, "run_id": parent.run_id}


if __name__ == "__main__":
    main()
