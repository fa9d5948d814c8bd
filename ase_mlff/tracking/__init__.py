"""MLflow tracking: the only module of ase_mlff that imports mlflow.

The store is local by default: ``sqlite:///<cwd>/mlflow.db`` with artifacts under
``<cwd>/mlartifacts``; ``MLFLOW_TRACKING_URI`` (or ``uri=``) points elsewhere. View it with

    mlflow ui --backend-store-uri sqlite:///mlflow.db --workers 1 --host 127.0.0.1

A run that raises is marked FAILED (KILLED on Ctrl-C or SIGTERM) with the error as a tag,
keeping everything it logged so far; nothing vanishes.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ase_mlff.utils import check_reachable

log = logging.getLogger(__name__)


def default_tracking_uri(directory: str | Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a sqlite store in ``directory`` (default: cwd)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    d = Path(directory or Path.cwd()).resolve()
    d.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{d / 'mlflow.db'}"


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"a.b": v}`` (lists become their string form), for MLflow params."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    return out


#: run tags naming the process that owns a run, so that a later start can close it
PID_TAG, HOST_TAG = "ase_mlff.pid", "ase_mlff.host"


def _alive(pid: int) -> bool:
    """True when a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _raise_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt(f"signal {signum}")


class RunHandle:
    """One MLflow run; all logging goes through it (no global active-run state)."""

    def __init__(self, client, run_id: str, tracker: Tracker) -> None:
        self.client = client
        self.run_id = run_id
        self.tracker = tracker

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten(params)
        items = [Param(k, str(v)[:6000]) for k, v in flat.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [
            Metric(k, float(v), ts, int(step or 0)) for k, v in metrics.items() if v is not None
        ]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        import json

        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / name
            p.write_text(json.dumps(data, indent=2, default=str))
            self.client.log_artifact(self.run_id, str(p))

    def log_figure(self, fig, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / name
            fig.savefig(p, dpi=120, bbox_inches="tight")
            self.client.log_artifact(self.run_id, str(p), "figures")

    @property
    def artifact_uri(self) -> str:
        return self.client.get_run(self.run_id).info.artifact_uri


class Tracker:
    """A handle on one MLflow experiment in one store."""

    def __init__(self, experiment: str = "ase_mlff", uri: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri or default_tracking_uri()
        if self.uri.startswith(("http://", "https://")):
            check_reachable(self.uri, "the MLflow tracking server")  # else minutes of retries
        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            artifact_location = None
            if self.uri.startswith("sqlite:///"):
                root = Path(self.uri[len("sqlite:///") :]).parent / "mlartifacts"
                artifact_location = (root / experiment).resolve().as_uri()
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=artifact_location
            )
        else:
            self.experiment_id = exp.experiment_id
        self.experiment = experiment

    @contextmanager
    def run(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        parent: RunHandle | None = None,
    ) -> Iterator[RunHandle]:
        """Start a run; FINISHED on success, FAILED (KILLED on Ctrl-C) when the body raises.
        Runs of this experiment left RUNNING by a process of this host that no longer
        exists (killed with SIGKILL) are marked FAILED first (:meth:`close_stale_runs`)."""
        self.close_stale_runs()
        all_tags = {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname(), **(tags or {})}
        if parent is not None:
            all_tags["mlflow.parentRunId"] = parent.run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        handle = RunHandle(self.client, run.info.run_id, self)
        if params:
            handle.log_params(params)
        log.info("MLflow run %s (%s) in %s", name, handle.run_id, self.uri)
        previous = None
        if threading.current_thread() is threading.main_thread():
            # `kill` (SIGTERM) ends the process without unwinding; make it unwind so the
            # run is marked KILLED instead of staying RUNNING forever
            previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            yield handle
        except KeyboardInterrupt:
            self.client.set_tag(handle.run_id, "error", "interrupted")
            self.client.set_terminated(handle.run_id, status="KILLED")
            raise
        except BaseException as err:
            self.client.set_tag(handle.run_id, "error", f"{type(err).__name__}: {err}"[:5000])
            self.client.set_terminated(handle.run_id, status="FAILED")
            raise
        else:
            self.client.set_terminated(handle.run_id, status="FINISHED")
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def close_stale_runs(self) -> list[str]:
        """Mark FAILED every RUNNING run of this experiment whose process (its
        ``ase_mlff.pid`` and ``ase_mlff.host`` tags) was on this host and is gone: a run
        killed with SIGKILL (or a lost machine) cannot close itself. Runs of other hosts,
        of live processes, and runs without those tags are left alone. Returns the ids."""
        host = socket.gethostname()
        closed = []
        runs = self.client.search_runs(
            [self.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
        )
        for r in runs:
            pid, run_host = r.data.tags.get(PID_TAG), r.data.tags.get(HOST_TAG)
            if run_host != host or not pid or not pid.isdigit() or _alive(int(pid)):
                continue
            self.client.set_tag(
                r.info.run_id,
                "error",
                f"the process (pid {pid} on {host}) ended without closing this run "
                "(killed with SIGKILL, or the machine stopped)",
            )
            self.client.set_terminated(r.info.run_id, status="FAILED")
            closed.append(r.info.run_id)
        if closed:
            log.warning("marked %d stale MLflow run(s) FAILED: %s", len(closed), closed)
        return closed

    def get_run(self, run_id: str):
        return self.client.get_run(run_id)

    def register_model(
        self,
        name: str,
        run: RunHandle,
        artifact_path: str,
        tags: Mapping[str, Any] | None = None,
        description: str | None = None,
    ):
        """A new version of registered model ``name`` (created if needed) pointing at the
        artifacts ``artifact_path`` of ``run`` (e.g. the checkpoint it logged); returns the
        ``ModelVersion``."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException as err:
            if "RESOURCE_ALREADY_EXISTS" not in str(err.error_code):
                raise
        source = f"{run.artifact_uri.rstrip('/')}/{artifact_path}"
        return self.client.create_model_version(
            name,
            source,
            run_id=run.run_id,
            tags={k: str(v) for k, v in (tags or {}).items()},
            description=description,
        )


__all__ = ["RunHandle", "Tracker", "default_tracking_uri", "flatten"]
