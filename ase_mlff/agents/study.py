"""Stability studies: models × replicas of MD distributed over Ray trajectory agents.

    from ase_mlff.agents import run_stability_study
    res = run_stability_study(["aspirin-painn"], starts, n_replicas=32, out_dir="study",
                              md={"steps": 20_000, "dt": 0.5, "integrator": "nose_hoover",
                                  "temperature_K": 500})

``ray.init()`` starts a local cluster by default; with ``RAY_ADDRESS`` set (e.g.
``RAY_ADDRESS=auto``) the agents run on that existing cluster. Each agent is a
:class:`~ase_mlff.agents.trajectory.TrajectoryAgent` actor declared with ``max_restarts`` and
``max_task_retries``: a killed agent is restarted by Ray and resumes from its last MD
checkpoint. Replica ``k`` starts from ``starts[k % len(starts)]`` with its own random
stream ``(seed, k)``, so starts × seeds are all covered.
"""

from __future__ import annotations

import csv
import json
import logging
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from tqdm import tqdm

from ase_mlff.agents.trajectory import TrajectoryAgent, TrajectorySpec
from ase_mlff.graph.geometry import BondGraph, bond_graphs_from_frames
from ase_mlff.metrics.plots import survival_figure
from ase_mlff.metrics.stability import (
    KaplanMeier,
    kaplan_meier,
    pairwise_logrank,
    survival_curve,
    t_inst_summary,
    write_logrank_csv,
    write_survival_csv,
)
from ase_mlff.utils import ensure_ray, jsonable, write_json

log = logging.getLogger(__name__)


@dataclass
class StudyResult:
    rows: list[dict[str, Any]]
    total_fs: float
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    summaries: dict[str, dict[str, float]] = field(default_factory=dict)
    out_dir: Path | None = None
    #: per model its Kaplan–Meier estimate (with the pointwise band)
    km: dict[str, KaplanMeier] = field(default_factory=dict)
    #: pairwise log-rank tests between the models, Holm-corrected (see pairwise_logrank)
    logrank: list[dict[str, Any]] = field(default_factory=list)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(name)).strip("_")


@dataclass
class StudyOutcome:
    """What a paper's study returns (the FFPT and EAM pre-training studies): ``results``
    (also ``out/results.json``), the Markdown ``table`` (also ``out/comparison.md``), the
    output folder and the MLflow store."""

    results: dict[str, Any]
    table: str
    out: Path
    tracking_uri: str


def model_dirs(models: Sequence[str]) -> dict[str, str]:
    """A distinct directory name per model: the checkpoint's name, with as many parent
    folders as it takes to tell models apart (``scratch/best`` vs ``finetune/best``)."""
    if len(set(map(str, models))) != len(models):
        raise ValueError("the same model is listed twice")
    parts = {str(m): Path(str(m)).parts for m in models}
    for depth in range(1, max(len(p) for p in parts.values()) + 1):
        names = {m: _slug("-".join(p[-depth:])) for m, p in parts.items()}
        if len(set(names.values())) == len(names):
            return names
    return {str(m): f"model{k}" for k, m in enumerate(models)}


#: what run_stability_study sets itself; the rest of run_md's keywords may come in ``md``
_SET_BY_AGENT = {"model", "images", "replica_ids", "traj_dir", "checkpoint_every", "detectors"}
_SET_BY_AGENT |= {"detector_factory", "dtype", "device"}


def _check_md(md: dict[str, Any], starts: Sequence[Atoms], checkpoint_every: int | None) -> None:
    """The ``md`` keywords as run_md would check them, here, before Ray starts: the
    protocol's fields (:class:`~ase_mlff.md.protocol.MDProtocol`, checked when it is made)
    and the run keywords an agent does not set itself."""
    import inspect
    from dataclasses import fields

    from ase_mlff.md.protocol import MDProtocol, make_protocol
    from ase_mlff.md.runner import run_md
    from ase_mlff.md.validation import validate_images, validate_md_parameters

    run_kw = set(inspect.signature(run_md).parameters) - _SET_BY_AGENT - {"protocol_fields"}
    protocol_fields = {f.name for f in fields(MDProtocol)}
    unknown = sorted(set(md) - run_kw - protocol_fields)
    if unknown:
        raise ValueError(f"md holds keywords that run_md does not take here: {unknown}")
    if "steps" not in md and not isinstance(md.get("protocol"), (MDProtocol, str)):
        raise ValueError("md needs 'steps' (MD steps per replica)")
    validate_images(starts, "starts")
    p = make_protocol(md.get("protocol"), **{k: v for k, v in md.items() if k in protocol_fields})
    validate_md_parameters(
        steps=p.steps, check_every=p.check_every, checkpoint_every=checkpoint_every
    )


def run_stability_study(
    models: Sequence[str],
    starts: Sequence[Atoms],
    *,
    n_replicas: int,
    out_dir: str | Path,
    md: dict[str, Any] | None = None,
    n_agents: int | None = None,
    checkpoint_every: int | None = 200,
    detectors: bool = True,
    bond_delta: float = 0.5,
    dtype: str = "float64",
    device: str = "cpu",
    threads_per_agent: int = 1,
    detector_factory=None,
    bond_reference: Sequence[BondGraph] | None = None,
) -> StudyResult:
    """Run ``n_replicas`` trajectories per model over Ray agents; write table and curves.

    ``detector_factory``: the stability detectors of every replica (see
    :class:`~ase_mlff.agents.trajectory.TrajectorySpec`); default the molecular set with
    bond-length deviation ``bond_delta``; ``detectors=False`` runs without any. The bond
    graphs and reference lengths b_ij are ``bond_reference`` (e.g.
    :func:`~ase_mlff.graph.geometry.bond_graphs_from_dataset` of the reference data) or,
    by default, the ensemble of all ``starts`` of each molecule (median topology, mean
    lengths), the same for every agent.

    Writes ``out_dir/t_inst.csv`` (one row per model and replica), ``survival.csv``
    (Kaplan–Meier steps with their 95 % band), ``survival.png``, ``summary.json`` (per
    model :func:`~ase_mlff.metrics.stability.survival_summary`, a replica stable at the end
    being right-censored at the run length; the pairwise log-rank table), ``logrank.csv``
    and, per model and agent, the trajectories
    (``out_dir/<model>/agent_XX/replica_XXXX.traj``).
    """
    import ray

    _check_study_args(starts, n_replicas, n_agents, threads_per_agent)
    md = dict(md or {})
    _check_md(md, starts, checkpoint_every)
    if bond_reference is None and detectors and detector_factory is None:
        bond_reference = bond_graphs_from_frames(starts)
    bond_reference = None if bond_reference is None else tuple(bond_reference)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ensure_ray()
    if n_agents is None:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n_agents = max(1, min(n_replicas, cpus // threads_per_agent))
    chunks = [c.tolist() for c in np.array_split(np.arange(n_replicas), min(n_agents, n_replicas))]
    chunks = _study_layout(out, {"models": [str(m) for m in models], "agents": chunks, "md": md})
    spec_kw = dict(
        md=md,
        checkpoint_every=checkpoint_every,
        detectors=detectors,
        bond_delta=bond_delta,
        bond_reference=bond_reference,
        detector_factory=detector_factory,
        dtype=dtype,
        device=device,
        threads=threads_per_agent,
    )
    jobs = _start_agents(models, starts, chunks, out, spec_kw)
    rows: list[dict[str, Any]] = []
    total_fs = 0.0
    for (model, _agent, _ref), res in zip(jobs, _follow(jobs, n_replicas * len(models))):
        total_fs = res["total_fs"]
        for r in res["replicas"]:
            rows.append(
                {
                    "model": str(model),
                    **r,
                    "start_index": r["replica_id"] % len(starts),
                    "traj_dir": res["traj_dir"],
                }
            )
    rows.sort(key=lambda r: (r["model"], r["replica_id"]))
    result = summarize_study(StudyResult(rows=rows, total_fs=total_fs, out_dir=out), models)
    write_study_files(result, md)
    return result


def _start_agents(
    models: Sequence[str], starts: Sequence[Atoms], chunks: list, out: Path, spec_kw: dict
) -> list[tuple]:
    """One Ray trajectory agent per model and chunk of replica ids (replica k starts from
    ``starts[k % len(starts)]``); returns ``(model, agent, run reference)`` per agent."""
    import ray

    device, threads = spec_kw["device"], spec_kw["threads"]
    use_gpu = device.startswith("cuda")
    if use_gpu and ray.cluster_resources().get("GPU", 0) < 1:
        raise ValueError(
            f"device={device!r} but the Ray cluster has no GPU: the agents would wait for "
            "one forever; use device='cpu' or a cluster with GPUs (RAY_ADDRESS)"
        )
    remote_agent = ray.remote(
        num_cpus=threads,
        num_gpus=1 if use_gpu else 0,
        max_restarts=3,
        max_task_retries=3,
        max_concurrency=2,  # progress() answers while run() works
    )(TrajectoryAgent)
    dirs = model_dirs(models)
    jobs = []
    for model in models:
        for a, chunk in enumerate(chunks):
            spec = TrajectorySpec(
                model=str(model),
                images=tuple(starts[int(k) % len(starts)] for k in chunk),
                replica_ids=tuple(int(k) for k in chunk),
                traj_dir=str(out / dirs[str(model)] / f"agent_{a:02d}"),
                **spec_kw,
            )
            agent = remote_agent.remote(spec)
            jobs.append((model, agent, agent.run.remote()))
    return jobs


def _check_study_args(starts, n_replicas, n_agents, threads_per_agent) -> None:
    if not starts:
        raise ValueError("no start structures given")
    if n_replicas < 1:
        raise ValueError("n_replicas must be at least 1")
    if n_agents is not None and (not isinstance(n_agents, numbers.Integral) or n_agents < 1):
        raise ValueError(f"n_agents must be an integer >= 1 (None: one per CPU), got {n_agents!r}")
    if not isinstance(threads_per_agent, numbers.Integral) or threads_per_agent < 1:
        raise ValueError(f"threads_per_agent must be an integer >= 1, got {threads_per_agent!r}")


#: the study folder's record of how its replicas were laid out over models and agents
LAYOUT_FILE = "study_layout.json"


def _study_layout(out: Path, layout: dict[str, Any]) -> list[list[int]]:
    """The agents' replica chunks of the study in ``out``: on its first run ``layout``'s
    (recorded in :data:`LAYOUT_FILE`), on a rerun the recorded ones, whatever the agent
    count asked for now (the default, one agent per CPU, differs between machines), so a
    resumed study continues every agent's checkpoint and no replica is reported that never
    ran. Models may be added or dropped (each has its own folder); a rerun with another
    number of replicas or other MD settings is refused."""
    path = out / LAYOUT_FILE
    layout = jsonable(layout, nan_as_null=False)
    old = json.loads(path.read_text()) if path.exists() else None
    if old is not None:
        n_old = sum(len(c) for c in old.get("agents", []))
        n_new = sum(len(c) for c in layout["agents"])
        what = (["md"] if old.get("md") != layout.get("md") else []) + (
            ["number of replicas"] if n_old != n_new else []
        )
        if what:
            raise ValueError(
                f"{out} holds a stability study with other {' and '.join(what)} "
                f"({n_old} replicas, md {old.get('md')}); resume it with the same --replicas "
                "and MD settings, or choose another --out"
            )
        if old["agents"] != layout["agents"]:
            log.info(
                "resuming %s with its own split over %d agent(s), not the %d asked for now",
                out,
                len(old["agents"]),
                len(layout["agents"]),
            )
        layout["agents"] = old["agents"]
    models = list(dict.fromkeys([*(old or {}).get("models", []), *layout["models"]]))
    write_json(path, {**layout, "models": models}, nan_as_null=False)
    return layout["agents"]


def _follow(jobs: list, n_total: int, poll_s: float = 2.0) -> list[dict]:
    """Collect the agents' results while they work, with a progress bar of replicas that
    stopped and the running count of unstable ones (quiet under CI).

    A finished agent is killed at once so that its CPUs go to agents still waiting to be
    scheduled (more agents than CPUs, e.g. several models); the progress of an agent not
    yet started is not waited for.
    """
    import ray
    from ray.exceptions import GetTimeoutError

    from ase_mlff.utils import show_progress

    results: dict[int, dict] = {}
    last: dict[int, dict] = {}
    index = {ref: k for k, (_, _, ref) in enumerate(jobs)}
    pending = list(index)
    bar = tqdm(total=n_total, desc="replicas done", disable=not show_progress())
    while pending:
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=poll_s)
        for ref in ready:
            k = index[ref]
            results[k] = ray.get(ref)
            ray.kill(jobs[k][1])
        done = unstable = 0
        for k, (_, agent, _ref) in enumerate(jobs):
            if k in results:
                reps = results[k]["replicas"]
                done += len(reps)
                unstable += sum(not r["stable"] for r in reps)
                continue
            try:
                last[k] = ray.get(agent.progress.remote(), timeout=0.5)["replicas"]
            except GetTimeoutError:  # not scheduled yet
                pass
            stopped = sum(r["reason"] is not None for r in last.get(k, {}).values())
            done += stopped
            unstable += stopped
        bar.n = done
        bar.set_postfix(unstable=unstable)
        bar.refresh()
    bar.close()
    return [results[k] for k in range(len(jobs))]


def read_t_inst(out_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a study's ``t_inst.csv`` (written by :func:`run_stability_study`) with
    ``t_inst_fs`` as float (NaN for a replica that stayed stable), ``stable`` as bool and
    ``fired_fs`` as {criterion: onset fs} (empty in studies written before it existed)."""
    path = Path(out_dir) / "t_inst.csv"
    if not path.exists():
        raise FileNotFoundError(
            f"{out_dir} is not a stability study directory (no t_inst.csv); run "
            "python -m ase_mlff.recipes.stability --out DIR first"
        )
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        t = r["t_inst_fs"]
        r["t_inst_fs"] = float(t) if t not in ("", "None") else float("nan")
        r["stable"] = r["stable"] in ("True", "true", "1")
        r["fired_fs"] = json.loads(r.get("fired_fs") or "{}")
    return rows


def load_study_result(out_dir: str | Path, models: Sequence[str] | None = None) -> StudyResult:
    """A finished study read back from ``out_dir`` (``t_inst.csv`` and the run length in
    ``summary.json``) with its survival statistics (:func:`summarize_study`): the one way
    the comparison agent and the evaluation report read a study."""
    out = Path(out_dir)
    rows = read_t_inst(out)
    total_fs = float(json.loads((out / "summary.json").read_text())["total_fs"])
    return summarize_study(StudyResult(rows=rows, total_fs=total_fs, out_dir=out), models)


def summarize_study(result: StudyResult, models: Sequence[str] | None = None) -> StudyResult:
    """Fill ``result``'s per-model ``km``, ``curves``, ``summaries`` and the pairwise
    ``logrank`` table from its rows (``model``, ``t_inst_fs``, ``stable``); ``models`` gives
    the order (default: as they first appear in the rows). Returns ``result``."""
    if models is None:
        models = list(dict.fromkeys(r["model"] for r in result.rows))
    groups = {}
    for model in map(str, models):
        mine = [r for r in result.rows if r["model"] == model]
        t = np.array([np.nan if r["t_inst_fs"] is None else r["t_inst_fs"] for r in mine], float)
        stable = np.array([r["stable"] for r in mine], bool)
        groups[model] = (t, stable)
        result.km[model] = kaplan_meier(t, stable, result.total_fs)
        result.curves[model] = survival_curve(t, stable, result.total_fs)
        result.summaries[model] = t_inst_summary(t, stable, result.total_fs)
    result.logrank = pairwise_logrank(groups, result.total_fs)
    return result


def write_study_files(result: StudyResult, md: dict) -> None:
    """Write a finished study's ``t_inst.csv``, survival curves and summary into its
    ``out_dir`` (``md``: the MD protocol, recorded in the summary)."""
    out = result.out_dir
    with open(out / "t_inst.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(result.rows[0]))
        w.writeheader()  # dicts (fired_fs) as JSON, read back by read_t_inst
        w.writerows(
            {k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()}
            for row in result.rows
        )
    write_survival_csv(out / "survival.csv", result.km)
    write_logrank_csv(out / "logrank.csv", result.logrank)
    summary = {
        "md": md,
        "total_fs": result.total_fs,
        "censoring": "a replica stable at the end is right-censored at total_fs; "
        "null = not reached within the run",
        "models": result.summaries,
        "logrank": result.logrank,
    }
    write_json(out / "summary.json", summary, indent=2)
    fig = survival_figure(result.km or result.curves)
    fig.savefig(out / "survival.png", dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
