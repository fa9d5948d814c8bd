"""Continued learning: an active loop that adds unexplored and pre-collapse MD frames.

Paper 002 (Wang et al., J. Chem. Phys. 159, 035101 (2023), § III) improves an MLFF by
"continued training by recruiting additional unexplored data": conformations sampled by MD
that lie outside every cluster of the training conformations (a frame is *unexplored* when
its distance to the nearest K-means centre exceeds that cluster's radius, § II B 1, see
:mod:`ase_mlff.metrics.clusters`) are labelled with the reference method, added to the
training set, and the model is trained further from its current weights. The paper also
computes the reference forces of "ten frames prior to simulation collapse" (Fig. 7) and
finds the errors grow there, or jump when unexplored regions are reached; those frames are
recruited too. Each round k:

1. MD with the current model from ``starts`` (:func:`ase_mlff.md.runner.run_md`, stored
   under ``out_dir/round_k/md``): t_inst of every replica, fraction stable;
2. :func:`select_frames`: stable stored frames that are unexplored, plus the
   ``n_before_instability`` frames before each replica's t_inst; deduplicated, capped;
3. :func:`ase_mlff.agents.labelling.label_frames` labels them with the reference
   calculator over Ray tasks (``round_k/added.npz``), appended to the training set
   (``round_k/train.npz``, cumulative);
4. training continues from the current weights (reference energies kept,
   ``refit_atomref=False``) in ``round_k/train``; errors on ``val`` before and after.

The loop stops after ``rounds`` rounds, or at the first round whose MD has a fraction of
stable replicas >= ``target_fraction_stable`` (that round then adds nothing), or when a
round finds no frame to add. A finished round is recorded in ``round_k/round_done.json``
and skipped when the loop is run again (as :func:`ase_mlff.training.stage.run_stage`);
a round interrupted after its labelling resumes at the training (``round_k/md_done.json``),
and the training itself resumes from its checkpoints.

Differences from the paper: it samples new Chignolin conformations with replica-exchange MD
and adds 3,000 unexplored frames in one step; here the loop runs plain (Langevin /
Nosé-Hoover / NVE) MD with the model being improved and repeats, i.e. on-the-fly active
learning with the paper's selection criterion in place of an uncertainty.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ase_mlff.data.dataset import Dataset
from ase_mlff.md.runner import MDRun, run_md
from ase_mlff.metrics.clusters import ConformationClusters
from ase_mlff.metrics.errors import evaluate
from ase_mlff.metrics.stability import t_inst_summary
from ase_mlff.metrics.trajectory import Trajectory
from ase_mlff.training.config import TrainConfig
from ase_mlff.utils import jsonable, numeric_metrics, write_json

log = logging.getLogger(__name__)

ROUND_DONE = "round_done.json"
MD_DONE = "md_done.json"
SETTINGS_FILE = "continued.json"

UNEXPLORED = "unexplored"
PRE_INSTABILITY = "pre_instability"
BOTH = "unexplored+pre_instability"
#: ``info`` entries of the selected frames kept as per-frame arrays of the added data
EXTRA_KEYS = (
    "replica_id",
    "time_fs",
    "t_inst_fs",
    "cluster",
    "cluster_distance",
    "unexplored",
    "pre_instability",
    "selected_because",
)
#: training settings that may change between a run and its resumption
_CFG_VOLATILE = ("device", "threads", "max_minutes")


# ------------------------------------------------------------------------ selection
@dataclass
class FrameSelection:
    """Frames picked by :func:`select_frames`, in (replica, time) order.

    ``images`` carry in ``info``: ``selected_because`` (``"unexplored"``,
    ``"pre_instability"`` or ``"unexplored+pre_instability"``), ``config_type``
    (``"continued:" + selected_because``), ``replica_id``, ``time_fs``, ``t_inst_fs`` (NaN
    for a stable replica), ``cluster`` (nearest), ``cluster_distance`` (Å),
    ``unexplored``, ``pre_instability``. The arrays hold the same per frame.
    ``n_frames_seen`` / ``n_unexplored_seen``: all stable stored frames looked at and how
    many of them are unexplored; ``n_candidates``: frames that qualified (deduplicated)
    before the ``max_frames`` cap.
    """

    images: list[Atoms]
    replica_id_f: np.ndarray
    time_fs_f: np.ndarray
    unexplored_f: np.ndarray
    pre_instability_f: np.ndarray
    reason_f: np.ndarray
    n_frames_seen: int
    n_unexplored_seen: int
    n_candidates: int

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self):
        return iter(self.images)

    @property
    def unexplored_fraction(self) -> float:
        """Fraction of the stable stored frames outside the training clusters (Fig. 3a)."""
        return self.n_unexplored_seen / self.n_frames_seen if self.n_frames_seen else np.nan

    def counts(self) -> dict[str, int]:
        """Selected frames by reason; the three tags are disjoint."""
        return {
            tag: int(np.sum(self.reason_f == tag)) for tag in (UNEXPLORED, PRE_INSTABILITY, BOTH)
        }


@dataclass
class _Replica:
    replica_id: int
    times: np.ndarray  # (T,)
    positions: np.ndarray  # (T, N, 3)
    t_inst: float  # NaN when stable
    template: Atoms


def _template(numbers: np.ndarray, cell=None, pbc=None) -> Atoms:
    return Atoms(numbers=numbers, cell=np.zeros((3, 3)) if cell is None else cell, pbc=pbc)


def _replicas_of(source, clusters: ConformationClusters, templates) -> list[_Replica]:
    """Normalise an MDRun, a trajectory directory or Trajectory objects to replicas."""
    if isinstance(source, MDRun):
        n = len(source.replicas)
        if templates is None:
            if clusters.numbers_ is None:
                raise ValueError(
                    "an MDRun holds no atomic numbers: pass templates= (the start structures "
                    "given to run_md) or clusters fitted with numbers"
                )
            temps = [_template(clusters.numbers_)] * n
        elif isinstance(templates, Atoms):
            temps = [templates] * n
        else:
            temps = list(templates)
            if len(temps) != n:
                raise ValueError(f"{len(temps)} templates for an MDRun of {n} replicas")
        return [
            _Replica(
                r.replica_id,
                np.asarray(r.times_fs, float),
                np.asarray(r.positions_tn3, float),
                float(r.t_inst_fs) if r.reason is not None else np.nan,
                t,
            )
            for r, t in zip(source.replicas, temps)
            if len(r.times_fs)
        ]
    if isinstance(source, (str, Path)):
        from ase_mlff.md.storage import read_summary

        directory = Path(source)
        if not (directory / "summary.json").exists():
            raise ValueError(f"{directory} is not an MD trajectory directory (no summary.json)")
        trajs = []
        for key in read_summary(directory).get("replicas", {}):
            try:
                trajs.append(Trajectory.from_store(directory, int(key), stable_only=True))
            except (FileNotFoundError, ValueError):  # no stable frame was stored
                continue
        source = trajs
    out = []
    for k, tr in enumerate(source):
        if not isinstance(tr, Trajectory):
            raise TypeError(
                "select_frames takes an MDRun, a trajectory directory or a list of "
                f"Trajectory, got {type(tr).__name__} in the list"
            )
        t_inst = np.nan if tr.t_inst_fs is None else float(tr.t_inst_fs)
        rid = k if tr.replica_id is None else int(tr.replica_id)
        out.append(
            _Replica(
                rid,
                tr.time_fs_t,
                tr.positions_tnc,
                t_inst,
                _template(tr.numbers_n, tr.cell_33, tr.pbc_3),
            )
        )
    return out


def check_molecule(images: Sequence[Atoms], clusters: ConformationClusters, what: str) -> None:
    """ValueError unless every image is the molecule ``clusters`` were fitted on."""
    if not clusters.is_fitted:
        raise ValueError("ConformationClusters is not fitted: call fit() / fit_dataset() first")
    n = len(clusters.reference_)
    for k, a in enumerate(images):
        if len(a) != n:
            raise ValueError(
                f"{what} {k} has {len(a)} atoms but the clusters were fitted on a molecule of "
                f"{n} atoms: clusters of another molecule?"
            )
        if clusters.numbers_ is not None and np.any(a.numbers != clusters.numbers_):
            raise ValueError(
                f"{what} {k} ({a.get_chemical_formula()}) has other atoms or another atom "
                "order than the molecule the clusters were fitted on"
            )


def select_frames(
    run_or_trajectories: MDRun | str | Path | Sequence[Trajectory],
    clusters: ConformationClusters,
    *,
    n_before_instability: int = 10,
    max_frames: int | None = None,
    stride: int = 1,
    templates: Atoms | Sequence[Atoms] | None = None,
) -> FrameSelection:
    """Pick MD frames to label: unexplored ones and those just before each collapse.

    From the stable stored frames of every replica (an :class:`~ase_mlff.md.runner.MDRun`,
    a ``traj_dir`` written by ``run_md`` or a list of :class:`~ase_mlff.metrics.trajectory.
    Trajectory`), select (a) frames outside the training clusters (``clusters.assign``:
    unexplored, paper 002 § II B 1), taking every ``stride``-th stored frame of a replica,
    and (b) the last ``n_before_instability`` stored frames with t < t_inst of each replica
    that became unstable (paper 002 Fig. 7: the ten frames prior to the collapse; every
    stored frame, regardless of ``stride``). Frames with identical positions (e.g. the start
    structure shared by replicas) are kept once with their tags merged. When more than
    ``max_frames`` qualify, ``max_frames`` are kept evenly spread over the (replica, time)
    ordered candidates. All of it is vectorised over frames (one ``assign`` call).

    ``templates``: for an MDRun, the start structures given to ``run_md`` (one Atoms for
    all, or one per replica), which supply atomic numbers, cell and pbc; not needed when the
    clusters were fitted with atomic numbers.
    """
    if int(n_before_instability) < 0:
        raise ValueError(f"n_before_instability must be >= 0, got {n_before_instability}")
    if int(stride) < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and int(max_frames) < 1:
        raise ValueError(f"max_frames must be >= 1 (or None), got {max_frames}")
    if not clusters.is_fitted:
        raise ValueError("ConformationClusters is not fitted: call fit() / fit_dataset() first")
    reps = _replicas_of(run_or_trajectories, clusters, templates)
    check_molecule([r.template for r in reps], clusters, "the MD system of replica")
    empty = np.zeros(0)
    if not reps:
        return FrameSelection(
            [],
            empty.astype(int),
            empty,
            empty.astype(bool),
            empty.astype(bool),
            empty.astype(str),
            0,
            0,
            0,
        )
    for r in reps:  # time order within a replica
        order = np.argsort(r.times, kind="stable")
        r.times, r.positions = r.times[order], r.positions[order]
    t_r = np.array([len(r.times) for r in reps])
    rep_f = np.repeat(np.arange(len(reps)), t_r)
    start_r = np.concatenate([[0], np.cumsum(t_r)[:-1]])
    local_f = np.arange(t_r.sum()) - start_r[rep_f]
    pos = np.concatenate([r.positions for r in reps])
    time_f = np.concatenate([r.times for r in reps])
    t_inst_f = np.array([r.t_inst for r in reps])[rep_f]

    labels, dist, explored = clusters.assign(pos)
    unexplored = ~explored
    pre = _last_before_instability(rep_f, start_r, time_f, t_inst_f, int(n_before_instability))
    cand = np.flatnonzero((unexplored & (local_f % int(stride) == 0)) | pre)
    keep, u_keep, p_keep = _unique_frames(pos, cand, unexplored, pre)
    n_candidates = len(keep)
    if max_frames is not None and n_candidates > int(max_frames):
        pick = np.round(np.linspace(0, n_candidates - 1, int(max_frames))).astype(int)
        keep, u_keep, p_keep = keep[pick], u_keep[pick], p_keep[pick]

    reason = np.where(u_keep & p_keep, BOTH, np.where(u_keep, UNEXPLORED, PRE_INSTABILITY))
    info = {"time_f": time_f, "labels": labels, "dist": dist}
    images = [
        _tagged_image(reps[rep_f[f]], pos[f], f, bool(u), bool(p), str(why), info)
        for f, u, p, why in zip(keep, u_keep, p_keep, reason)
    ]
    rid = np.array([r.replica_id for r in reps])
    return FrameSelection(
        images=images,
        replica_id_f=rid[rep_f[keep]],
        time_fs_f=time_f[keep],
        unexplored_f=u_keep,
        pre_instability_f=p_keep,
        reason_f=reason.astype(str),
        n_frames_seen=int(len(pos)),
        n_unexplored_seen=int(unexplored.sum()),
        n_candidates=int(n_candidates),
    )


def _tagged_image(r, pos_n3, f: int, u: bool, p: bool, why: str, info: dict) -> Atoms:
    """Frame ``f`` of replica ``r`` as Atoms, with why it was selected and where it lies
    (cluster, distance) in ``atoms.info``."""
    a = r.template.copy()
    a.calc = None
    a.info = {
        "config_type": f"continued:{why}",
        "selected_because": why,
        "replica_id": int(r.replica_id),
        "time_fs": float(info["time_f"][f]),
        "t_inst_fs": float(r.t_inst),
        "cluster": int(info["labels"][f]),
        "cluster_distance": float(info["dist"][f]),
        "unexplored": u,
        "pre_instability": p,
    }
    a.positions = pos_n3
    return a


def _last_before_instability(
    rep_f: np.ndarray, start_r: np.ndarray, time_f: np.ndarray, t_inst_f: np.ndarray, n: int
) -> np.ndarray:
    """(F,) True for the last ``n`` frames with t < t_inst of each replica (frames in time
    order per replica, replica r's first frame at ``start_r[r]``); none for a replica
    that stayed stable (t_inst NaN)."""
    with np.errstate(invalid="ignore"):
        before = time_f < t_inst_f  # NaN t_inst (stable) -> False
    n_before_r = np.bincount(rep_f, weights=before, minlength=len(start_r)).astype(int)
    csum = np.cumsum(before)
    rank_in_r = csum - (csum[start_r] - before[start_r])[rep_f]  # 1-based among before-frames
    return before & (n_before_r[rep_f] - rank_in_r < n)


def _unique_frames(
    pos: np.ndarray, cand: np.ndarray, unexplored: np.ndarray, pre: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidate frames ``cand`` without repeats of identical positions, in their
    order; a kept frame gets the tags (unexplored, pre-instability) of all its copies."""
    flat = np.ascontiguousarray(pos[cand].reshape(len(cand), pos.shape[1] * 3))
    _, first, inverse = np.unique(flat, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    u_any = np.zeros(len(first), bool)
    p_any = np.zeros(len(first), bool)
    np.logical_or.at(u_any, inverse, unexplored[cand])
    np.logical_or.at(p_any, inverse, pre[cand])
    order = np.argsort(first)
    return cand[first[order]], u_any[order], p_any[order]


# -------------------------------------------------------------------- datasets
def _missing_value(dtype: np.dtype):
    kind = np.dtype(dtype).kind
    return {"f": np.nan, "c": np.nan, "i": -1, "u": 0, "b": False, "U": "", "S": b""}.get(kind)


def _fill_extras(ds: Dataset, like: dict[str, np.ndarray]) -> Dataset:
    """``ds`` (not modified) with every extra array of ``like`` it lacks, filled with a
    missing value (NaN, -1, False, "")."""
    extra = dict(ds.extra_s)
    for key, arr in like.items():
        fill = _missing_value(arr.dtype)
        if key not in extra and fill is not None:
            extra[key] = np.full((len(ds), *arr.shape[1:]), fill, dtype=arr.dtype)
    return replace(ds, extra_s=extra)


def append_frames(train: Dataset, added: Dataset, round_k: int) -> Dataset:
    """``train`` followed by ``added``; the per-frame extras of both are kept (missing
    values where one set has none) and ``continued_round`` is 0 for original frames."""
    if "continued_round" not in train.extra_s:
        train = replace(
            train, extra_s={**train.extra_s, "continued_round": np.zeros(len(train), int)}
        )
    added = replace(
        added, extra_s={**added.extra_s, "continued_round": np.full(len(added), int(round_k))}
    )
    both = Dataset.concatenate(
        [_fill_extras(train, added.extra_s), _fill_extras(added, train.extra_s)]
    )
    both.provenance = {
        "continued_learning": {
            "round": int(round_k),
            "n_before": len(train),
            "n_added": len(added),
        },
        "base": train.provenance,
        "added": added.provenance,
    }
    return both


def _save_atomic(ds: Dataset, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.npz")
    ds.save_npz(tmp)
    tmp.replace(path)


def _write_json(path: Path, data: dict) -> None:
    write_json(path, data, nan_as_null=False)


# ------------------------------------------------------------------------ loop
@dataclass
class ContinuedResult:
    """Every round's record (finished ones read back from disk), the last model and why
    the loop ended: ``"rounds"``, ``"target_reached"`` or ``"no_new_frames"``."""

    rounds: list[dict[str, Any]]
    final_checkpoint: Path
    final_train: Path | None
    stopped_because: str
    out_dir: Path


def _md_kwargs(md: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """``run_md`` keywords of the ``md`` settings, and ``n_replicas``."""
    from ase_mlff.md.detectors import default_detectors
    from ase_mlff.utils import DTYPES

    md = dict(md)
    if "steps" not in md:
        raise ValueError("md needs 'steps' (plus optional dt, temperature_K, integrator, ...)")
    for key in ("traj_dir", "detectors", "detector_factory", "images", "replica_ids"):
        if key in md:
            raise ValueError(f"md[{key!r}] is set by continued_learning; remove it")
    n_replicas = md.pop("n_replicas", None)
    dtype = md.pop("dtype", "float64")
    if dtype not in DTYPES:
        raise ValueError(f"md dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    kwargs = {"dtype": DTYPES[dtype], "device": md.pop("device", "cpu")}
    if "bond_delta" in md:
        kwargs["detector_factory"] = partial(default_detectors, delta=float(md.pop("bond_delta")))
    kwargs.update(md)
    return kwargs, n_replicas


def _check_settings(path: Path, settings: dict[str, Any]) -> None:
    current = jsonable(settings, nan_as_null=False)
    if path.exists():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(current) if old.get(k) != current.get(k))
        if diff:
            raise ValueError(
                f"{path.parent} holds a continued-learning run with other settings "
                f"({', '.join(diff)} differ); use another out_dir or the same settings"
            )
    else:
        _write_json(path, current)


def continued_learning(
    model_dir: str | Path,
    train: Dataset,
    val: Dataset,
    *,
    reference: dict[str, Any] | None = None,
    clusters: ConformationClusters,
    starts: Sequence[Atoms],
    cfg: TrainConfig,
    out_dir: str | Path,
    rounds: int = 3,
    md: dict[str, Any] | None = None,
    target_fraction_stable: float | None = None,
    max_new_per_round: int | None = 200,
    n_before_instability: int = 10,
    stride: int = 1,
    n_label_tasks: int | None = None,
    log_fn: Callable[..., None] | None = None,
) -> ContinuedResult:
    """Paper 002's continued learning as an active loop (see the module doc).

    Args:
        model_dir: the starting checkpoint (a directory or a shipped model name).
        train, val: training and validation sets; ``val`` is never added to.
        reference: calculator spec of the labels (``make_calculator``); default
            ``{"name": "tblite"}`` (GFN2-xTB). Must be the level of theory of ``train``.
        clusters: :class:`~ase_mlff.metrics.clusters.ConformationClusters` fitted on the
            training conformations (kept fixed over the rounds, as in the paper, so
            "unexplored" is always relative to the original data).
        starts: MD start structures (the clusters' molecule).
        cfg: the training of each round (e.g. :func:`~ase_mlff.training.stage.
            paper_schedule` ``(cfg, "finetune")``); every round starts a new optimiser.
        rounds: the most rounds to run.
        md: ``run_md`` keywords (``steps`` required; ``dt``, ``temperature_K``,
            ``integrator``, ``record_every``, ``check_every``, ``seed``, ...) plus
            ``n_replicas`` (replica k starts from ``starts[k % len(starts)]``; default one
            per start), ``bond_delta`` (Å, the bond detector's Δ), ``dtype`` (default
            float64), ``device``. The same seed every round: stability is compared on the
            same initial velocities.
        target_fraction_stable: stop at the first round whose MD has at least this fraction
            of stable replicas (that round adds nothing).
        max_new_per_round: cap on the frames added per round (spread evenly); None: no cap.
        n_before_instability, stride: see :func:`select_frames`.
        n_label_tasks: Ray tasks for the labelling (default: one per CPU).
        log_fn: called ``log_fn(metrics, step=k)`` with the numeric entries of round k's
            record (e.g. ``RunHandle.log_metrics``); rounds skipped on resume are not logged.

    Returns:
        :class:`ContinuedResult`; each round's record has ``round``, ``model_in``,
        ``model_out`` (relative to ``out_dir``), ``stopped`` (None or why the loop ended
        there), the MD's survival summary (``fraction_stable``,
        ``t_inst_{mean,median,min}_fs``, ``n_replicas`` and the rest of
        :func:`~ase_mlff.metrics.stability.survival_summary`), ``n_frames_md``,
        ``fraction_unexplored``, ``n_candidates``,
        ``n_added`` and ``n_added_{unexplored,pre_instability,both}``, ``train_size``,
        ``val_*`` error metrics after training (``val_before_*`` before), ``added_*``
        errors on the added frames before / after training (``added_before_*``),
        ``best_epoch``, ``epochs_run``, timings.
    """
    from ase_mlff.calculators.mlff import resolve_model_path

    reference = dict(reference or {"name": "tblite"})
    md = dict(md or {"steps": 1000})
    images, md_kwargs = _checked_inputs(
        reference, starts, clusters, train, val, rounds, target_fraction_stable,
        max_new_per_round, n_before_instability, stride, md,
    )  # fmt: skip
    base = resolve_model_path(model_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg_dict = {k: v for k, v in asdict(cfg).items() if k not in _CFG_VOLATILE}
    _check_settings(
        out / SETTINGS_FILE,
        {
            "model_dir": str(base),
            "reference": reference,
            "md": {k: v for k, v in md.items() if k != "device"},
            "train_config": cfg_dict,
            "max_new_per_round": max_new_per_round,
            "n_before_instability": int(n_before_instability),
            "stride": int(stride),
            "n_train": len(train),
            "n_val": len(val),
            "n_starts": len(starts),
            "clusters": {
                "n_clusters": clusters.n_clusters,
                "features": clusters.features,
                "n_fit_frames": len(clusters.labels_),
            },
        },
    )
    loop = _Loop(
        out=out,
        train=train,
        val=val,
        cfg=cfg,
        clusters=clusters,
        reference=reference,
        images=images,
        md_kwargs=md_kwargs,
        selection={
            "n_before_instability": n_before_instability,
            "max_frames": max_new_per_round,
            "stride": stride,
        },
        n_label_tasks=n_label_tasks,
        target_fraction_stable=target_fraction_stable,
        log_fn=log_fn,
    )
    return loop.run(base, int(rounds))


def _checked_inputs(
    reference, starts, clusters, train, val, rounds, target_fraction_stable,
    max_new_per_round, n_before_instability, stride, md,
) -> tuple[list[Atoms], dict[str, Any]]:  # fmt: skip
    """Every argument of :func:`continued_learning` checked before any work; returns the
    MD start structures (one per replica) and the ``run_md`` keywords."""
    if not reference.get("name"):
        raise ValueError(f"reference must be a calculator spec with a 'name', got {reference!r}")
    starts = list(starts)
    if not starts:
        raise ValueError("no MD start structures given (starts is empty)")
    check_molecule(starts, clusters, "start structure")
    if len(train) == 0 or len(val) == 0:
        raise ValueError("training and validation sets must not be empty")
    if int(rounds) < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if target_fraction_stable is not None and not 0.0 < target_fraction_stable <= 1.0:
        raise ValueError(f"target_fraction_stable must be in (0, 1], got {target_fraction_stable}")
    if max_new_per_round is not None and int(max_new_per_round) < 1:
        raise ValueError(f"max_new_per_round must be >= 1 (or None), got {max_new_per_round}")
    if int(n_before_instability) < 0 or int(stride) < 1:
        raise ValueError("n_before_instability must be >= 0 and stride >= 1")
    md_kwargs, n_replicas = _md_kwargs(md)
    n_replicas = len(starts) if n_replicas is None else int(n_replicas)
    if n_replicas < 1:
        raise ValueError(f"md n_replicas must be >= 1, got {n_replicas}")
    return [starts[k % len(starts)] for k in range(n_replicas)], md_kwargs


@dataclass
class _Loop:
    """The rounds of :func:`continued_learning`, each (1) MD from the current model,
    (2) frame selection, (3) labelling, (4) training; a round's record is written when it
    ends (``round_k/round_done.json``) and after step 3 (``md_done.json``), the points a
    rerun resumes from."""

    out: Path
    train: Dataset
    val: Dataset
    cfg: TrainConfig
    clusters: ConformationClusters
    reference: dict[str, Any]
    images: list[Atoms]
    md_kwargs: dict[str, Any]
    selection: dict[str, Any]
    n_label_tasks: int | None
    target_fraction_stable: float | None
    log_fn: Callable[..., None] | None

    def run(self, base: Path, rounds: int) -> ContinuedResult:
        records: list[dict[str, Any]] = []
        current = base
        train_path: Path | None = None  # cumulative training set of the last finished round
        stopped = "rounds"
        for k in range(1, rounds + 1):
            rdir = self.out / f"round_{k}"
            done = rdir / ROUND_DONE
            if done.exists():
                rec = json.loads(done.read_text())
                records.append(rec)
                log.info("continued learning: round %d already finished in %s: skipped", k, rdir)
                if rec.get("stopped"):
                    stopped = rec["stopped"]
                    break
                current = self.out / rec["model_out"]
                train_path = self.out / rec["train_file"]
                continue
            rdir.mkdir(parents=True, exist_ok=True)
            rec: dict[str, Any] = {"round": k, "model_in": _rel(current, self.out), "stopped": None}
            added = self._explore(k, rdir, rec, current, train_path)
            if rec["stopped"]:
                log.info("round %d: %s, loop ends", k, rec["stopped"])
                _finish(rec, done, records, self.log_fn, k)
                stopped = rec["stopped"]
                break
            current = self._train(k, rdir, rec, current, added)
            _finish(rec, done, records, self.log_fn, k)
            train_path = self.out / rec["train_file"]
        return ContinuedResult(
            rounds=records,
            final_checkpoint=current,
            final_train=train_path,
            stopped_because=stopped,
            out_dir=self.out,
        )

    def _explore(
        self, k: int, rdir: Path, rec: dict, current: Path, train_path: Path | None
    ) -> Dataset | None:
        """Steps 1-3 into ``rec`` (skipped when an interrupted round did them); returns the
        labelled new frames, or None when the loop stops here (``rec["stopped"]``)."""
        from ase_mlff.agents.labelling import label_frames
        from ase_mlff.models.io import load_model

        if (rdir / MD_DONE).exists():
            rec.update(json.loads((rdir / MD_DONE).read_text()))
            log.info("round %d: MD and labelling already done, resuming at the training", k)
            return Dataset.load_npz(rdir / "added.npz") if rec["n_added"] else None
        kw = self.md_kwargs
        model_md, _ = load_model(current, device=kw["device"], dtype=kw["dtype"])
        t0 = time.perf_counter()
        run = run_md(model_md, self.images, traj_dir=rdir / "md", **kw)
        rec["seconds_md"] = time.perf_counter() - t0
        stable = np.array([r.stable for r in run.replicas])
        rec.update(t_inst_summary(run.t_inst(), stable, run.steps * run.dt_fs))
        rec["t_inst_fs"] = [float(t) for t in run.t_inst()]
        rec["reasons"] = [r.reason for r in run.replicas]
        sel = select_frames(run, self.clusters, templates=self.images, **self.selection)
        counts = sel.counts()
        rec.update(
            n_frames_md=sel.n_frames_seen,
            fraction_unexplored=sel.unexplored_fraction,
            n_candidates=sel.n_candidates,
            n_added=len(sel),
            n_added_unexplored=counts[UNEXPLORED],
            n_added_pre_instability=counts[PRE_INSTABILITY],
            n_added_both=counts[BOTH],
        )
        target = self.target_fraction_stable
        if target is not None and rec["fraction_stable"] >= float(target):
            rec.update(stopped="target_reached", n_added=0, model_out=rec["model_in"])
        elif not len(sel):
            rec.update(stopped="no_new_frames", model_out=rec["model_in"])
        if rec["stopped"]:
            for key in ("n_added_unexplored", "n_added_pre_instability", "n_added_both"):
                rec[key] = 0
            return None
        prev_train = self.train if train_path is None else Dataset.load_npz(train_path)
        t0 = time.perf_counter()
        added = label_frames(
            sel.images,
            self.reference,
            self.n_label_tasks,
            extra_keys=EXTRA_KEYS,
            provenance={"continued_round": k, "selection": counts},
        )
        rec["seconds_label"] = time.perf_counter() - t0
        new_train = append_frames(prev_train, added, k)
        _save_atomic(added, rdir / "added.npz")
        _save_atomic(new_train, rdir / "train.npz")
        rec["train_file"] = _rel(rdir / "train.npz", self.out)
        _write_json(rdir / MD_DONE, rec)  # the round resumes after this point
        return added

    def _train(self, k: int, rdir: Path, rec: dict, current: Path, added: Dataset) -> Path:
        """Step 4: continue training from the current weights on the grown set, with the
        errors on the validation set and on the added frames before and after; returns
        the new checkpoint."""
        from ase_mlff.models.io import load_model
        from ase_mlff.training.stage import optimizer_steps, run_stage
        from ase_mlff.utils import DTYPES

        cfg, val = self.cfg, self.val
        new_train = Dataset.load_npz(self.out / rec["train_file"])
        model, _ = load_model(current, device=cfg.device, dtype=DTYPES[cfg.dtype])
        ev = {"device": cfg.device, "dtype": DTYPES[cfg.dtype], "batch_size": cfg.eval_batch_size}
        rec.update({f"val_before_{m}": v for m, v in evaluate(model, val, **ev).items()})
        rec.update({f"added_before_{m}": v for m, v in evaluate(model, added, **ev).items()})
        t0 = time.perf_counter()
        trained, res = run_stage(
            f"round_{k}",
            model,
            new_train,
            val,
            cfg,
            rdir / "train",
            fit_reference_energies=False,  # the same level of theory: keep e_ref
            metadata={"continued_round": k, "init_from": str(current)},
        )
        rec["seconds_train"] = time.perf_counter() - t0
        rec.update({f"val_{m}": v for m, v in evaluate(trained, val, **ev).items()})
        rec.update({f"added_{m}": v for m, v in evaluate(trained, added, **ev).items()})
        rec.update(
            train_size=len(new_train),
            best_epoch=res.best_epoch,
            epochs_run=res.epochs_run,
            optimizer_steps=optimizer_steps(res.history),
            train_stopped_because=res.stopped_because,
            model_out=_rel(res.best_dir, self.out),
        )
        log.info(
            "round %d: +%d frames (%s), train %d, val F-MAE %.1f meV/Å, stable %.2f",
            k,
            rec["n_added"],
            {t: rec[f"n_added_{t}"] for t in ("unexplored", "pre_instability", "both")},
            len(new_train),
            rec["val_forces_mae"] * 1e3,
            rec["fraction_stable"],
        )
        return res.best_dir


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def _finish(rec: dict, done: Path, records: list, log_fn, k: int) -> None:
    _write_json(done, rec)
    records.append(rec)
    if log_fn is not None:
        log_fn(numeric_metrics(rec), step=k)
