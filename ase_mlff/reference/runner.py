"""One runner for every reference data set: a job list, Ray tasks, resume, assembly and
provenance.

    from ase_mlff.reference.runner import run_reference
    ds = run_reference(SilicaConfig(), Path("silica_gfn1.npz"), workers=2)

A reference kind (GFN2-xTB MD of a molecule, :mod:`~ase_mlff.reference.molecule`; OpenMM
MD of bulk water, :mod:`~ase_mlff.reference.water`; GFN1-xTB silica,
:mod:`~ase_mlff.reference.silica`) is a frozen config dataclass whose class attribute
``kind`` is a :class:`ReferenceKind`: what its jobs are, what one job does and how the
parts become one :class:`~ase_mlff.data.dataset.Dataset`. :func:`run_reference` takes any
of these configs and does the rest the same way for all:

* **jobs**: one :class:`Job` is one trajectory or one static block, with its own random
  stream ``np.random.default_rng(job.seed)``, ``job.seed = (config seed, job index)``;
  the results do not depend on how many jobs run at once or in which order they finish;
* **parallel**: the jobs run as Ray tasks (:func:`ase_mlff.utils.ensure_ray`: a local
  Ray, or the cluster at ``RAY_ADDRESS``), at most ``workers`` at a time, each in a
  worker process with ``cpus_per_job`` OpenMP threads. A Ray this function started is
  shut down when it returns. Jobs of stage k start when every job of stage k − 1 has
  finished (silica's MD starts from the cells its static jobs relaxed);
* **resume**: a job writes ``<out>.parts/<job>.tmp<suffix>`` and the task renames it to
  ``<job><suffix>`` when the job has finished, so a rerun skips every finished job and
  recomputes the others from their start (a resumed Langevin trajectory would not be the
  same trajectory). ``<out>.parts/jobs.json`` records the config and the job list; a
  rerun with other settings is refused rather than mixed with the old parts. The tasks
  write the parts themselves, so the parts directory must be on a filesystem every Ray
  worker sees (always true for the local Ray);
* **assembly**: the parts are read in the order of the job list, never in the order the
  jobs finished;
* **provenance**: the kind's own (method, program versions, config, sampling) plus
  ``generation_wall_s``, ``workers``, ``runner`` (jobs, the ones reused from an earlier
  run), ``created``, ``python`` and the recipe's ``command``, written into the npz and as
  ``<out>.provenance.json``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ase_mlff.data.dataset import Dataset
from ase_mlff.data.io import provenance_path
from ase_mlff.utils import ensure_ray, jsonable, show_progress

log = logging.getLogger(__name__)

#: the file in the parts directory that ties the parts to the settings that made them
MANIFEST = "jobs.json"


@dataclass(frozen=True)
class Job:
    """One unit of work: one trajectory or one static block.

    ``name`` is the part file's stem (unique in a run), ``index`` the job's number (the
    trajectory id, or silica's ``source``), ``seed`` its random stream
    (``np.random.default_rng(job.seed)``), ``stage`` when it may start (after every job
    of a lower stage), ``params`` what else the kind's ``run_job`` needs (plain values:
    the job travels to a Ray worker and into ``jobs.json``).
    """

    name: str
    index: int
    seed: tuple[int, int]
    stage: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))


class ReferenceConfig(Protocol):
    """What :func:`run_reference` needs of a config: a ``seed`` and its kind."""

    seed: int
    kind: ClassVar[ReferenceKind]


@dataclass(frozen=True)
class ReferenceKind:
    """How one kind of reference data is made.

    * ``jobs(cfg, parts_dir, **inputs) -> list[Job]``: the job list, in assembly order;
      it checks the settings (it runs before Ray starts);
    * ``run_job(cfg, job, path)``: one job, in a Ray worker: write its frames to ``path``
      (the part's temporary name; the runner renames it when ``run_job`` returns);
    * ``assemble(cfg, jobs, parts, out) -> Dataset``: the parts (one path per job, job
      order) as one dataset with the kind's provenance; it may write files beside ``out``;
    * ``recipe``: the module of ``python -m ase_mlff.recipes.<recipe>`` (provenance);
    * ``part_suffix``: ``.xyz`` (extxyz frames) or ``.npz`` (a Dataset);
    * ``keep_parts``: keep ``<out>.parts/`` after assembly (else it is removed);
    * ``threads(cfg)``: the CPUs one job takes (Ray ``num_cpus``, ``OMP_NUM_THREADS``);
    * ``resume_ignores``: config fields that do not change the results (e.g. ``workers``),
      left out of the check that the parts of an earlier run were made with this config;
    * ``single_precision``: the set is written with float32 positions and forces
      (:meth:`~ase_mlff.data.dataset.Dataset.save_npz`).
    """

    recipe: str
    jobs: Callable[..., list[Job]]
    run_job: Callable[[Any, Job, Path], None]
    assemble: Callable[[Any, list[Job], list[Path], Path], Dataset]
    part_suffix: str = ".xyz"
    keep_parts: bool = False
    threads: Callable[[Any], int] = lambda cfg: 1
    resume_ignores: tuple[str, ...] = ()
    single_precision: bool = False

    def cpus_per_job(self, cfg: Any) -> int:
        return max(1, int(self.threads(cfg)))


def parts_dir_of(out: Path) -> Path:
    """``<out>.parts``: where the jobs of ``out`` keep their parts."""
    return out.with_name(out.name + ".parts")


def part_path(parts_dir: Path, job: Job, kind: ReferenceKind) -> Path:
    return parts_dir / (job.name + kind.part_suffix)


def _temporary(part: Path) -> Path:
    return part.with_suffix(".tmp" + part.suffix)


def _run_job(
    run_job: Callable[[Any, Job, Path], None], cfg: Any, job: Job, part: str, threads: int
) -> str:
    """One job in a Ray worker: it writes the temporary part, which becomes the part
    when the job has finished (a half-written part is never taken for a finished one)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    final = Path(part)
    tmp = _temporary(final)
    tmp.unlink(missing_ok=True)
    run_job(cfg, job, tmp)
    if not tmp.exists():  # a job that kept no frame (e.g. every SCC failed)
        tmp.touch()
    tmp.replace(final)
    return part


def _manifest(cfg: Any, jobs: Sequence[Job], ignore: Sequence[str]) -> dict[str, Any]:
    config = {k: v for k, v in asdict(cfg).items() if k not in ignore}
    return jsonable({"config": config, "jobs": [j.as_dict() for j in jobs]})


def _check_manifest(parts_dir: Path, manifest: dict[str, Any]) -> None:
    """Write ``jobs.json``, or check that the parts there were made with these settings."""
    path = parts_dir / MANIFEST
    if path.exists():
        old = json.loads(path.read_text())
        if old != manifest:
            raise ValueError(
                f"{parts_dir} holds parts made with other settings ({path}); remove the "
                "directory or write to another --out"
            )
        return
    path.write_text(json.dumps(manifest, indent=1))


@contextmanager
def _ray_session() -> Iterator[Any]:
    """Ray for the jobs: the running one, else one started here and shut down after."""
    import ray

    started = not ray.is_initialized()
    ensure_ray()
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _run_stage(
    kind: ReferenceKind, cfg: Any, jobs: list[Job], parts_dir: Path, workers: int, ray: Any
) -> None:
    """Run ``jobs`` as Ray tasks, at most ``workers`` at once. A failed job stops new
    submissions; the running ones finish (their parts are kept for a rerun), then the
    first failure is raised, naming its job."""
    from tqdm import tqdm

    threads = kind.cpus_per_job(cfg)
    task = ray.remote(num_cpus=threads)(_run_job)
    waiting, running, failed = list(jobs), {}, []
    bar = tqdm(total=len(jobs), desc=kind.recipe, unit="job", disable=not show_progress())
    while running or (waiting and not failed):
        while waiting and not failed and len(running) < workers:
            job = waiting.pop(0)
            part = str(part_path(parts_dir, job, kind))
            running[task.remote(kind.run_job, cfg, job, part, threads)] = job
        (ref,), _ = ray.wait(list(running), num_returns=1)
        job = running.pop(ref)
        try:
            log.info("job %s finished: %s", job.name, ray.get(ref))
        except Exception as err:  # Ray wraps the job's error; reported after the others
            failed.append((job, err))
        bar.update(1)
    bar.close()
    if failed:
        job, err = failed[0]
        raise RuntimeError(f"reference job {job.name} failed: {err}") from err


def run_jobs(
    kind: ReferenceKind, cfg: Any, jobs: Sequence[Job], parts_dir: Path, workers: int
) -> list[str]:
    """Run every job of ``jobs`` whose part is not there yet, stage by stage, as Ray tasks,
    ``workers`` at once (at least one, as the old process pools did). Returns the names of
    the jobs whose parts were already there (reused)."""
    workers = max(1, int(workers))
    todo = [j for j in jobs if not part_path(parts_dir, j, kind).exists()]
    reused = [j.name for j in jobs if j not in todo]
    for name in reused:
        log.info("job %s already finished in %s, reusing it", name, parts_dir)
    if not todo:
        return reused
    with _ray_session() as ray:
        for stage in sorted({j.stage for j in todo}):
            _run_stage(kind, cfg, [j for j in todo if j.stage == stage], parts_dir, workers, ray)
    return reused


def run_reference(
    cfg: ReferenceConfig,
    out: Path,
    workers: int = 1,
    *,
    command: Sequence[str] | None = None,
    **inputs: Any,
) -> Dataset:
    """Make the reference set of ``cfg`` (any config with a ``kind``) and write ``out``
    (npz) plus ``<out>.provenance.json``.

    ``workers``: jobs at once; ``command``: the recipe's arguments for the provenance
    (default ``sys.argv[1:]``); ``inputs`` go to the kind's ``jobs`` (e.g. a start
    geometry). Paths are made absolute here: a Ray worker need not share our directory.
    """
    kind: ReferenceKind = type(cfg).kind
    out = Path(out).absolute()
    parts_dir = parts_dir_of(out)
    parts_dir.mkdir(parents=True, exist_ok=True)
    jobs = kind.jobs(cfg, parts_dir, **inputs)
    if len({j.name for j in jobs}) != len(jobs):
        raise ValueError(f"job names are not unique: {[j.name for j in jobs]}")
    _check_manifest(parts_dir, _manifest(cfg, jobs, kind.resume_ignores))
    t0 = time.perf_counter()
    reused = run_jobs(kind, cfg, jobs, parts_dir, workers)
    wall = time.perf_counter() - t0
    ds = kind.assemble(cfg, jobs, [part_path(parts_dir, j, kind) for j in jobs], out)
    args = sys.argv[1:] if command is None else list(command)
    ds.provenance.update(
        generation_wall_s=wall,
        workers=max(1, int(workers)),
        runner={
            "parallel": "Ray tasks (ase_mlff.reference.runner)",
            "jobs": {j.name: list(j.seed) for j in jobs},
            "reused_parts": reused,
        },
        created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        python=platform.python_version(),
        command=f"python -m ase_mlff.recipes.{kind.recipe} " + " ".join(args),
    )
    ds.save_npz(out, single_precision=kind.single_precision)
    provenance_path(out).write_text(json.dumps(ds.provenance, indent=2, default=str))
    if not kind.keep_parts:
        shutil.rmtree(parts_dir)
    return ds
