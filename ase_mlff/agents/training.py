"""Training on Ray: one model data-parallel over Ray Train workers, and independent variants
(scratch / SAM / reweighted, ...) side by side as Ray tasks.

    from ase_mlff.agents.training import train_distributed, train_variants_parallel
    res = train_distributed(cfg, "runs/painn-ddp", num_workers=4)        # one model, 4 ranks
    rows = train_variants_parallel(
        [{"name": "scratch", "config": cfg, "out_dir": "runs/scratch"},
         {"name": "sam", "fn": my_train_fn, "kwargs": {...}}],
        cpus_per_job=2,
    )

**Data parallel** (:func:`train_distributed`): a Ray Train ``TorchTrainer`` starts
``num_workers`` workers joined in a ``torch.distributed`` group (gloo on CPU, nccl on GPU).
Every worker builds the data and model exactly as single-process training does
(:func:`build_run`: same split, the model's initial weights seeded with ``train.seed``) and
runs the same :meth:`~ase_mlff.training.trainer.Trainer.fit`, which is data parallel under
``torch.distributed``: every rank draws the same global batch, evaluates its share of the
frames and the gradients are summed, so the run follows single-process training on the same
global batch up to float summation order (checked to 1e-8 relative in float64 by
``tests/test_ray_train.py``). ``batch_size`` stays the *global* batch.

Storage: rank 0 writes the checkpoints (``out_dir/best``, ``out_dir/last``,
``out_dir/trainer_state.pt``) and every rank reads ``out_dir/best`` back at the end of
``fit`` (and the trainer state on resume), so ``out_dir`` must be visible to all workers: on
one machine any local path; **on a multi-node cluster put ``out_dir`` on shared storage**
(NFS, ...). In addition rank 0 reports the final metrics and the best checkpoint with
``ray.train.report``, so Ray persists a copy under ``storage_path`` (default
``out_dir/ray_train``; use shared or cloud storage, e.g. ``s3://...``, on a cluster): that
copy (``result["ray_checkpoint"]``) is the one to fetch when ``out_dir`` is node-local.

**Variants** (:func:`train_variants_parallel`): each job is a Ray task with its own CPUs
(and GPUs); results are collected as jobs finish and a failing job comes back with its
error while the others run on.

``ray.init()`` starts a local cluster unless Ray is already initialised; with
``RAY_ADDRESS`` set the work goes to that cluster (see :func:`ase_mlff.agents.ensure_ray`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ase_mlff.training.config import ExperimentConfig
from ase_mlff.training.trainer import TrainResult
from ase_mlff.utils import DTYPES

log = logging.getLogger(__name__)


def as_config(cfg: ExperimentConfig | dict[str, Any]) -> ExperimentConfig:
    return cfg if isinstance(cfg, ExperimentConfig) else ExperimentConfig.from_dict(cfg)


def _for_workers(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with a relative data file made absolute: Ray workers run in another cwd."""
    name = Path(str(cfg.data.name)).expanduser()
    if not name.is_absolute() and name.exists():
        cfg = cfg.override(data={"name": str(name.resolve())})
    return cfg


# --------------------------------------------------------------------- single run
def build_run(
    cfg: ExperimentConfig,
    *,
    train=None,
    val=None,
) -> tuple[torch.nn.Module, Any, Any, dict[str, Any]]:
    """The data and the fresh model of one training run: ``(model, train, val, info)``.

    Without ``train``/``val`` the data come from ``cfg.data`` and are split as in
    :func:`train_and_test`. The model is built from ``cfg.model`` (species from
    the data unless given) with ``torch.manual_seed(cfg.train.seed)`` first, so every process
    builds the same initial weights. A checkpoint to start from is loaded by
    :func:`~ase_mlff.training.stage.run_stage`.
    """
    from ase_mlff.models import build_model

    if (train is None) != (val is None):
        raise ValueError("give both train and val, or neither (then cfg.data is used)")
    info: dict[str, Any] = {}
    if train is None:
        from ase_mlff.data import load_dataset
        from ase_mlff.data.splits import split_dataset

        ds = load_dataset(cfg.data.name)
        split = split_dataset(ds, cfg.data)
        train, val = ds[split.train], ds[split.val]
        species = ds.species
        info["data"] = {
            "name": cfg.data.name,
            "provenance": ds.provenance,
            "n_train": len(train),
            "n_val": len(val),
        }
    else:
        species = sorted(set(train.species) | set(val.species))
        info["data"] = {"name": "given", "n_train": len(train), "n_val": len(val)}
    torch.manual_seed(cfg.train.seed)
    model = build_model({"species": species, **cfg.model})
    return model, train, val, info


def checkpoint_model(name_or_path: str | Path, train) -> tuple[Path, torch.nn.Module]:
    """A pre-trained checkpoint (shipped name or folder) and a fresh model of its
    architecture to fine-tune; refuses data with elements the checkpoint never saw."""
    from ase.data import chemical_symbols

    from ase_mlff.calculators.mlff import resolve_model_path
    from ase_mlff.models import build_model
    from ase_mlff.models.io import read_metadata

    path = resolve_model_path(name_or_path)
    config = dict(read_metadata(path)["model"])
    known = config.get("species")
    if known is not None:
        unknown = sorted(set(train.species) - set(known))
        if unknown:
            raise ValueError(
                f"{name_or_path} was trained on {', '.join(chemical_symbols[z] for z in known)}"
                f"; the data hold {', '.join(chemical_symbols[z] for z in unknown)}, which it "
                "has no embedding for"
            )
    return path, build_model(config)


#: in a ``train`` run's folder: the checkpoint it was fine-tuned from, or "scratch"
STARTED_FROM = "started_from.txt"


def check_run_start(out: Path, init_from: str | Path | None) -> None:
    """Refuse to resume a run in ``out`` that started from other weights (a scratch run
    is not continued as a fine-tuning, nor the reverse); record the start otherwise."""
    start = "scratch" if init_from is None else str(Path(init_from).resolve())
    marker = Path(out) / STARTED_FROM
    if marker.exists() and marker.read_text().strip() != start:
        from ase_mlff.models.io import CheckpointError

        raise CheckpointError(
            f"{out} holds a run that started from {marker.read_text().strip()}, not from "
            f"{start}; choose another --out, or delete it to start over"
        )
    Path(out).mkdir(parents=True, exist_ok=True)
    marker.write_text(start + "\n")


def train_and_test(
    cfg: ExperimentConfig,
    out: Path,
    experiment: str = "train",
    tracking_uri: str | None = None,
    command: str | None = None,
    init_from: str | Path | None = None,
) -> dict[str, Any]:
    """Train one configuration on its data's split (:func:`~ase_mlff.training.stage.
    run_stage`), evaluate the selected model on the test split and log everything to one
    MLflow run: the config as params, per-epoch metrics, the test metrics (also written
    into the checkpoint's ``model.json``), the learning curve and parity figures, the
    checkpoint and ``results.json``. The ``train`` recipe's whole job; returns the results
    dict (also in ``out/results.json``).

    ``init_from``: fine-tune this pre-trained checkpoint (shipped name or folder, e.g.
    ``organic-painn``) instead of training ``cfg.model`` from scratch: its architecture,
    its weights, its reference energies refitted on the training frames (paper 000)."""
    from ase_mlff.data import load_dataset
    from ase_mlff.data.splits import split_dataset
    from ase_mlff.models import build_model
    from ase_mlff.models.io import CheckpointError
    from ase_mlff.training.stage import exclusive_run_dir
    from ase_mlff.training.trainer import check_labels, identity_conflicts, run_identity

    ds = load_dataset(cfg.data.name)
    split = split_dataset(ds, cfg.data)
    train, val, test = ds[split.train], ds[split.val], ds[split.test]
    for part, what in ((train, "training"), (val, "validation"), (test, "test")):
        check_labels(part, what)
    if init_from is not None:
        init_from, model = checkpoint_model(init_from, train)
    else:
        model = build_model({**cfg.model, "species": ds.species})
    with exclusive_run_dir(out):  # before anything is written into it
        check_run_start(out, init_from)
        conflicts = identity_conflicts(out, run_identity(model, train, val, cfg.train))
        if conflicts:
            raise CheckpointError(
                f"{out} holds a run that differs from this one: {'; '.join(conflicts)}; "
                "choose another --out, or delete it to start over"
            )
        return _train_and_test(
            cfg, out, experiment, tracking_uri, command, ds, model, split, init_from
        )


def _train_and_test(
    cfg, out, experiment, tracking_uri, command, ds, model, split, init_from=None
) -> dict:
    from ase_mlff.tracking import Tracker
    from ase_mlff.training.stage import run_stage

    train, val, test = ds[split.train], ds[split.val], ds[split.test]
    tracker = Tracker(experiment, uri=tracking_uri)
    run_name = f"{cfg.model.get('name')}-{cfg.data.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    params = {
        **cfg.to_dict(),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "data_method": ds.provenance.get("method", "unknown"),
    }
    if init_from is not None:  # the checkpoint's architecture, not cfg.model
        params.update(init_from=str(init_from), model_used=dict(model.config))
    with tracker.run(run_name, params=params, tags={"recipe": "train"}) as run_h:
        out.mkdir(parents=True, exist_ok=True)
        cfg.to_yaml(out / "config.yaml")
        run_h.log_artifact(out / "config.yaml")
        run_h.log_dict(ds.provenance, "data_provenance.json")
        metadata = {
            "data": {
                "name": cfg.data.name,
                "provenance": ds.provenance,
                "n_train": len(train),
                "n_val": len(val),
                "n_test": len(test),
            },
            "mlflow_run_id": run_h.run_id,
            "command": command,
        }
        trained, result = run_stage(
            "train",
            model,
            train,
            val,
            cfg.train,
            out,
            metadata=metadata,
            log_fn=run_h.log_metrics,
            init_from=init_from,
        )
        atomref = {k.removeprefix("atomref_"): v for k, v in result.extra.items()}
        run_h.log_params({f"atomref.{k}": v for k, v in atomref.items()})
        t0 = time.perf_counter()
        test_m = _test_report(trained, test, cfg, result, out, run_h)
        results = {
            "run_id": run_h.run_id,
            "tracking_uri": tracker.uri,
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "stopped_because": result.stopped_because,
            "val": result.best_val,
            "test": test_m,
            "checkpoint": str(result.best_dir),
            "n_train": len(train),
            "n_val": len(val),
            "n_test": len(test),
            "test_eval_seconds": time.perf_counter() - t0,
        }
        (out / "results.json").write_text(json.dumps(results, indent=2))
        run_h.log_artifact(out / "results.json")
        run_h.set_tags({"stopped_because": result.stopped_because})
    return results


def _test_report(model, test, cfg: ExperimentConfig, result, out: Path, run_h) -> dict:
    """Test-set error metrics of the selected model (logged, and written into its
    checkpoint's metadata), the learning-curve and parity figures, the checkpoint."""
    from ase_mlff.metrics.errors import error_metrics
    from ase_mlff.metrics.plots import learning_curve_figure, parity_figure
    from ase_mlff.models.io import META
    from ase_mlff.models.prediction import predict

    pred = predict(
        model,
        test,
        batch_size=cfg.train.eval_batch_size,
        device=cfg.train.device,
        dtype=DTYPES[cfg.train.dtype],
    )
    test_m = error_metrics(pred["energy"], pred["forces"], test)
    run_h.log_metrics({f"test_{k}": v for k, v in test_m.items()}, step=result.epochs_run)
    meta_file = result.best_dir / META
    meta = json.loads(meta_file.read_text())
    meta["test_metrics"] = test_m
    meta_file.write_text(json.dumps(meta, indent=2, default=str))
    fig = learning_curve_figure(result.history)
    fig.savefig(out / "learning_curve.png", dpi=120)
    run_h.log_figure(fig, "learning_curve.png")
    fig = parity_figure(
        pred["forces"],
        test.forces_nc,
        pred["energy"],
        test.energy_s,
        test.n_atoms_s,
        title=f"{cfg.model.get('name')} on {cfg.data.name}, test",
    )
    fig.savefig(out / "parity.png", dpi=120)
    run_h.log_figure(fig, "parity.png")
    run_h.log_artifact(result.best_dir, "checkpoint")
    return test_m


def result_dict(res: TrainResult, **extra: Any) -> dict[str, Any]:
    """A :class:`TrainResult` as a plain dict (paths as strings)."""
    d = dataclasses.asdict(res)
    d["best_dir"], d["last_dir"] = str(res.best_dir), str(res.last_dir)
    return {**d, **extra}


def _fit(
    cfg: ExperimentConfig,
    out_dir: Path,
    *,
    train=None,
    val=None,
    init_from=None,
    tracking: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Build and fit one run in this process (one rank of a group, or alone), through
    :func:`~ase_mlff.training.stage.run_stage`."""
    from ase_mlff.training.stage import run_stage

    t0 = time.perf_counter()
    model, train, val, info = build_run(cfg, train=train, val=val)
    meta = {**info, **(metadata or {})}
    if write:
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg.to_yaml(out_dir / "config.yaml")

    def fit(log_fn=None) -> TrainResult:
        _, res = run_stage(
            out_dir.name,
            model,
            train,
            val,
            cfg.train,
            out_dir,
            init_from=init_from,
            log_fn=log_fn,
            metadata=meta,
        )
        return res

    if tracking is None or not write:
        res, run_id = fit(), None
    else:
        from ase_mlff.tracking import Tracker

        tracker = Tracker(tracking.get("experiment") or "train", uri=tracking.get("uri"))
        name = tracking.get("run_name") or f"{cfg.model.get('name')}-{out_dir.name}"
        params = {**cfg.to_dict(), **(metadata or {})}
        with tracker.run(name, params=params, tags={"recipe": "agents.training"}) as run_h:
            meta["mlflow_run_id"] = run_id = run_h.run_id
            res = fit(run_h.log_metrics)
            run_h.log_artifact(res.best_dir, "checkpoint")
            run_h.set_tags({"stopped_because": res.stopped_because})
    return result_dict(res, seconds=time.perf_counter() - t0, mlflow_run_id=run_id)


def train_local(
    cfg: ExperimentConfig | dict[str, Any],
    out_dir: str | Path,
    *,
    init_from: str | Path | None = None,
    train=None,
    val=None,
    experiment: str | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Single-process training, built exactly as each rank of :func:`train_distributed`
    builds it; returns the :func:`result_dict`. ``experiment``: log the run to MLflow."""
    tracking = None if experiment is None else {"experiment": experiment, "uri": tracking_uri}
    return _fit(
        as_config(cfg),
        Path(out_dir),
        train=train,
        val=val,
        init_from=init_from,
        tracking=tracking,
    )


# -------------------------------------------------------------- data parallel
def _scalars(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    return {
        f"{prefix}{k}": float(v)
        for k, v in d.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def _train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """One Ray Train worker: the same :class:`Trainer.fit` as single-process training,
    joined to the other workers through ``torch.distributed`` (set up by Ray)."""
    import ray.train
    import ray.train.torch

    from ase_mlff._malloc import keep_freed_memory

    keep_freed_memory()  # this worker process runs training steps: reuse freed blocks
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg: ExperimentConfig = config["cfg"]
    if config["use_gpu"]:
        device = ray.train.torch.get_device()
        if device.type == "cuda":
            torch.cuda.set_device(device)
        cfg = cfg.override(train={"device": str(device)})
    else:
        threads = max(1, int(config["threads"]))
        torch.set_num_threads(threads)
        cfg = cfg.override(train={"device": "cpu", "threads": threads})
    out_dir = Path(config["out_dir"])
    res = _fit(
        cfg,
        out_dir,
        train=config["train"],
        val=config["val"],
        init_from=config["init_from"],
        tracking=config["tracking"],
        metadata={"distributed": {"world_size": world, "backend": config["backend"]}},
        write=rank == 0,
    )
    res["world_size"] = world
    metrics = {
        **_scalars(res["best_val"], "best_val_"),
        **_scalars(res["history"][-1] if res["history"] else {}, "last_"),
        "best_epoch": res["best_epoch"],
        "epochs_run": res["epochs_run"],
        "seconds": res["seconds"],
    }
    checkpoint = None
    if rank == 0 and config["report_checkpoint"]:
        checkpoint = ray.train.Checkpoint.from_directory(res["best_dir"])
    # every rank must call report (it is a barrier); Ray keeps rank 0's metrics
    ray.train.report(metrics, checkpoint=checkpoint)
    return res


def train_distributed(
    cfg: ExperimentConfig | dict[str, Any],
    out_dir: str | Path,
    *,
    num_workers: int = 2,
    use_gpu: bool = False,
    init_from: str | Path | None = None,
    train=None,
    val=None,
    storage_path: str | None = None,
    cpus_per_worker: float = 1,
    report_checkpoint: bool = True,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    timeout_s: int = 1800,
) -> dict[str, Any]:
    """Train one model data parallel over ``num_workers`` Ray Train workers.

    ``cfg``'s ``train.batch_size`` is the global batch (split over the workers);
    ``train.device`` is replaced by the worker's device (CPU, or its GPU with
    ``use_gpu``); on CPU each worker uses ``cpus_per_worker`` torch threads. ``train``/``val``
    (Datasets) replace ``cfg.data`` and are shipped to every worker; for large sets prefer
    ``cfg.data``, which every worker loads itself. ``init_from``: a checkpoint to start
    from (:func:`~ase_mlff.training.stage.run_stage`).
    ``experiment``: rank 0 logs the run to MLflow (``tracking_uri``, default: the driver's
    :func:`~ase_mlff.tracking.default_tracking_uri`). ``timeout_s``: of the process group's
    collectives.

    Returns the :func:`result_dict` of rank 0 (``best_dir``, ``last_dir``, ``best_epoch``,
    ``best_val``, ``epochs_run``, ``stopped_because``, ``history``, ``seconds``) plus
    ``world_size``, ``ray_checkpoint`` (Ray's copy of the best checkpoint under
    ``storage_path``, when ``report_checkpoint``), ``ray_path``, ``metrics`` (reported to
    Ray) and ``wall_seconds`` (including the workers' start-up). See the module doc for
    where the files go on a multi-node cluster.
    """
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.train.v2._internal.constants import is_v2_enabled

    from ase_mlff.utils import ensure_ray

    if num_workers < 1:
        raise ValueError("num_workers must be at least 1")
    cfg = _for_workers(as_config(cfg))
    out = Path(out_dir).expanduser().resolve()  # the workers' cwd is not the driver's
    ensure_ray()
    backend = "nccl" if use_gpu else "gloo"
    tracking = None
    if experiment is not None:
        from ase_mlff.tracking import default_tracking_uri

        tracking = {"experiment": experiment, "uri": tracking_uri or default_tracking_uri()}
    storage = storage_path or str(out / "ray_train")
    resources = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    trainer = TorchTrainer(
        _train_loop_per_worker,
        train_loop_config={
            "cfg": cfg,
            "out_dir": str(out),
            "train": train,
            "val": val,
            "init_from": None if init_from is None else str(Path(init_from).resolve()),
            "use_gpu": use_gpu,
            "threads": cpus_per_worker,
            "backend": backend,
            "tracking": tracking,
            "report_checkpoint": report_checkpoint,
        },
        torch_config=TorchConfig(backend=backend, timeout_s=timeout_s),
        scaling_config=ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker=resources,
            # V1's trainer actor takes a CPU by default: 2 workers would never start on 2 CPUs
            **({} if is_v2_enabled() else {"trainer_resources": {"CPU": 0}}),
        ),
        run_config=RunConfig(
            name=f"{out.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
            storage_path=storage,
        ),
    )
    t0 = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - t0
    if getattr(result, "error", None) is not None:
        raise result.error
    res = getattr(result, "return_value", None)
    if res is None:  # Ray Train V1 (RAY_TRAIN_V2_ENABLED=0) returns no value
        res = _result_from_disk(out, result.metrics)
    ckpt = getattr(result, "checkpoint", None)
    return {
        **res,
        "ray_checkpoint": None if ckpt is None else ckpt.path,
        "ray_path": getattr(result, "path", None),
        "metrics": dict(result.metrics or {}),
        "wall_seconds": wall,
    }


def _result_from_disk(out: Path, metrics: dict[str, Any] | None) -> dict[str, Any]:
    """Rank 0's result rebuilt from its files in ``out`` (Ray Train V1 only)."""
    state = torch.load(out / "trainer_state.pt", weights_only=True, map_location="cpu")
    m = dict(metrics or {})
    last = state["history"][-1] if state["history"] else {}
    return {
        "best_dir": str(out / "best"),
        "last_dir": str(out / "last"),
        "best_epoch": int(state["best_epoch"]),
        "best_val": dict(state["best_val"]),
        "epochs_run": int(state["epoch"]),
        "stopped_because": "epochs" if last.get("epoch") == state["epoch"] else "unknown",
        "history": list(state["history"]),
        "seconds": m.get("seconds"),
    }


# ----------------------------------------------------------- parallel variants
def _run_job(job: dict[str, Any], cpus: float, gpus: float) -> dict[str, Any]:
    """Body of one variant's Ray task: errors come back as data, never lost."""
    t0 = time.perf_counter()
    try:
        threads = max(1, int(cpus))
        torch.set_num_threads(threads)
        if "fn" in job:
            value = job["fn"](**dict(job.get("kwargs") or {}))
        else:
            cfg = as_config(job["config"])
            over: dict[str, Any] = {}
            if cfg.train.threads is None:
                over["threads"] = threads
            if gpus and cfg.train.device == "cpu":
                over["device"] = "cuda"
            cfg = cfg.override(train=over)
            value = train_local(
                cfg,
                job["out_dir"],
                init_from=job.get("init_from"),
                train=job.get("train"),
                val=job.get("val"),
                experiment=job.get("experiment"),
                tracking_uri=job.get("tracking_uri"),
            )
        if isinstance(value, TrainResult):
            value = result_dict(value)
        return {
            "ok": True,
            "result": value,
            "error": None,
            "traceback": None,
            "seconds": time.perf_counter() - t0,
        }
    except Exception as err:  # noqa: BLE001 -- reported, the other jobs run on
        return {
            "ok": False,
            "result": None,
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(),
            "seconds": time.perf_counter() - t0,
        }


def _job_name(job: dict[str, Any], k: int) -> str:
    if "name" in job:
        return str(job["name"])
    if "out_dir" in job:
        return Path(str(job["out_dir"])).name
    if "fn" in job:
        return f"{getattr(job['fn'], '__name__', 'job')}-{k}"
    return f"job{k}"


def train_variants_parallel(
    jobs: Sequence[dict[str, Any]],
    *,
    cpus_per_job: float = 1,
    gpus_per_job: float = 0,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run independent training jobs side by side, one Ray task each.

    A job is either ``{"fn": callable, "kwargs": {...}}`` (``fn(**kwargs)`` is run; it must
    be importable or picklable) or ``{"config": ExperimentConfig | dict, "out_dir": path}``
    with optional ``init_from``, ``train``, ``val``, ``experiment``, ``tracking_uri``
    (trained by :func:`train_local`; ``train.threads`` defaults to the job's CPUs and
    ``device`` to ``cuda`` when the job has GPUs). Every job may set ``name``,
    ``num_cpus`` and ``num_gpus`` (defaults ``cpus_per_job``, ``gpus_per_job``). Ray runs
    as many at once as the cluster's resources allow. Relative paths of ``config`` jobs
    (``out_dir``, ``init_from``, a data file, the default MLflow store) are resolved in the
    driver; an ``fn`` job's kwargs are passed as they are, so give it absolute paths.

    Returns one row per job, in the jobs' order: ``{"index", "name", "ok", "result",
    "error", "traceback", "seconds"}``; a job that raised (or whose worker died) has
    ``ok=False`` and its error, the others' results are kept. ``on_result(row)`` is called
    as each job finishes.
    """
    import ray

    from ase_mlff.utils import ensure_ray

    for k, job in enumerate(jobs):
        if ("fn" in job) == ("config" in job):
            raise ValueError(f"job {k}: give either 'fn' (and 'kwargs') or 'config'")
        if "config" in job and "out_dir" not in job:
            raise ValueError(f"job {k}: a 'config' job needs an 'out_dir'")
    ensure_ray()
    refs: dict[Any, int] = {}
    for k, job in enumerate(jobs):
        job = dict(job)
        for key in ("out_dir", "init_from"):  # the workers' cwd is not the driver's
            if job.get(key) is not None:
                job[key] = str(Path(job[key]).expanduser().resolve())
        if "config" in job:
            job["config"] = _for_workers(as_config(job["config"]))
            if job.get("experiment") is not None and job.get("tracking_uri") is None:
                from ase_mlff.tracking import default_tracking_uri

                job["tracking_uri"] = default_tracking_uri()
        cpus = job.pop("num_cpus", cpus_per_job)
        gpus = job.pop("num_gpus", gpus_per_job)
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0, max_calls=1)(_run_job)
        refs[task.remote(job, cpus, gpus)] = k
    rows: list[dict[str, Any] | None] = [None] * len(jobs)
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            k = refs[ref]
            try:
                row = ray.get(ref)
            except Exception as err:  # noqa: BLE001 -- the worker died (OOM, signal, ...)
                row = {
                    "ok": False,
                    "result": None,
                    "error": f"{type(err).__name__}: {err}",
                    "traceback": None,
                    "seconds": None,
                }
            row = {"index": k, "name": _job_name(jobs[k], k), **row}
            rows[k] = row
            if row["ok"]:
                log.info("job %s finished in %.1f s", row["name"], row["seconds"])
            else:
                log.warning("job %s failed: %s", row["name"], row["error"])
            if on_result is not None:
                on_result(row)
    return rows  # type: ignore[return-value]


__all__ = [
    "build_run",
    "result_dict",
    "train_and_test",
    "train_distributed",
    "train_local",
    "train_variants_parallel",
]
