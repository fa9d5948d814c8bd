"""Paper 003's simulation benchmark end to end: how long MD with each model stays
physical, with the energy-conservation gate beside it, logged to MLflow (the
``stability`` recipe is its command line).

    from ase_mlff.agents.benchmark import stability_benchmark
    res = stability_benchmark(["aspirin-painn"], "aspirin", replicas=32, md={"steps": 2000},
                              out=Path("runs/stab"))

Replicas start from frames spread over the data's held-out trajectory
(:func:`~ase_mlff.data.splits.start_structures`); the bonds and their reference lengths
come from the whole data set (:func:`~ase_mlff.graph.geometry.bond_graphs_from_dataset`);
the study runs over Ray trajectory agents (:func:`~ase_mlff.agents.study.
run_stability_study`) and, with ``nve_steps``, the NVE drift of every model
(:func:`~ase_mlff.md.conservation.energy_drift_report`). One MLflow parent run holds the
protocol and the study's files, a child run per model its survival statistics and curve,
drift and trajectories.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ase_mlff.agents.study import StudyResult, run_stability_study
from ase_mlff.data import load_dataset
from ase_mlff.data.splits import start_structures
from ase_mlff.graph.geometry import bond_graphs_from_dataset


def stability_benchmark(
    models: list[str],
    data: str,
    *,
    replicas: int,
    md: dict[str, Any],
    out: Path,
    agents: int | None = None,
    bond_delta: float = 0.5,
    nve_steps: int | None = None,
    dtype: str = "float64",
    device: str = "cpu",
    experiment: str = "stability",
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark (module doc); returns ``study`` (the
    :class:`~ase_mlff.agents.study.StudyResult`), ``summaries``, ``energy_drift`` (model ->
    drift report, empty without ``nve_steps``), ``out``, ``run_id`` and ``tracking_uri``."""
    import time

    from ase_mlff.md.conservation import energy_drift_report
    from ase_mlff.tracking import Tracker

    starts = start_structures(data, replicas)
    tracker = Tracker(experiment, uri=tracking_uri)
    protocol = {
        "md": md,
        "replicas": replicas,
        "data": data,
        "bond_delta": bond_delta,
        "models": models,
        "dtype": dtype,
        "device": device,
    }
    with tracker.run(
        f"stability-{time.strftime('%Y%m%d-%H%M%S')}", params=protocol, tags={"recipe": "stability"}
    ) as parent:
        res = run_stability_study(
            models,
            starts,
            n_replicas=replicas,
            out_dir=out,
            md=md,
            n_agents=agents,
            bond_delta=bond_delta,
            bond_reference=bond_graphs_from_dataset(load_dataset(data)),
            dtype=dtype,
            device=device,
        )
        drift = (
            energy_drift_report(models, starts, md, nve_steps, dtype, device, out=out)
            if nve_steps
            else {}
        )
        log_study(tracker, parent, models, res, drift, Path(out))
    return {
        "study": res,
        "summaries": res.summaries,
        "energy_drift": drift,
        "out": str(out),
        "run_id": parent.run_id,
        "tracking_uri": tracker.uri,
    }


def log_study(tracker, parent, models: list[str], res: StudyResult, drift: dict, out: Path) -> None:
    """A child run per model (survival statistics and curve, drift, trajectories) and the
    study's files on the parent run."""
    from ase_mlff.md.conservation import drift_metrics
    from ase_mlff.metrics.plots import survival_figure
    from ase_mlff.metrics.stability import survival_metrics

    for model in models:
        with tracker.run(
            Path(str(model)).name,
            params={"model": model},
            tags={"recipe": "stability"},
            parent=parent,
        ) as child:
            child.log_metrics(survival_metrics(res.summaries[str(model)]))
            if str(model) in drift:
                child.log_metrics(drift_metrics(drift[str(model)]))
            times, frac = res.curves[str(model)]
            for t, f in zip(times[::10], frac[::10]):
                child.log_metrics({"fraction_stable": float(f)}, step=int(t))
            child.log_figure(survival_figure({str(model): res.km[str(model)]}), "survival.png")
            model_dir = next(
                Path(r["traj_dir"]).parent for r in res.rows if r["model"] == str(model)
            )
            child.log_artifact(model_dir, "trajectories")
    for f in ("t_inst.csv", "survival.csv", "summary.json", "survival.png", "logrank.csv"):
        parent.log_artifact(out / f)
    if drift:
        parent.log_artifact(out / "energy_drift.json")
