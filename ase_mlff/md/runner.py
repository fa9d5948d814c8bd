"""Run many replicas until each becomes unphysical or the run ends (adaptive batching).

Every ``check_every`` steps the detectors look at all replicas; a replica that fails is
recorded (t_inst, step, reason) and removed from the batch at once, so the remaining
replicas go on with the freed compute. Frames (positions, potential energy, temperature)
of every active replica are kept every ``record_every`` steps; the frames of a replica
end with the last check it passed, so what is kept is its stable part.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from torch import Tensor
from tqdm import tqdm

from ase_mlff.md.batching import auto_batch_size
from ase_mlff.md.detectors import Detector, default_detectors, scatter_max
from ase_mlff.md.metadynamics import BiasedPotential, Metadynamics, check_metadynamics
from ase_mlff.md.protocol import INTEGRATORS, MDProtocol, make_protocol
from ase_mlff.md.state import MDState, concat_states, init_state
from ase_mlff.md.storage import Frame, TrajectoryStore, as_frames, stored_frames
from ase_mlff.md.validation import validate_md_parameters
from ase_mlff.models.base import compute_properties
from ase_mlff.models.compiled import CompiledPotential

__all__ = ["INTEGRATORS", "MDRun", "ReplicaResult", "run_md"]

CHECKPOINT = "md_state.pt"


def _save_checkpoint(
    path: Path,
    state: MDState,
    active: list[int],
    stopped: dict,
    settings: dict,
    dets: Sequence[Detector] = (),
    fired: dict | None = None,
    extra: dict | None = None,
) -> None:
    fired = fired or {}
    data = {
        **(extra or {}),
        "settings": settings,
        "step": state.step,
        "active": active,
        "stopped": {str(r): [t, why] for r, (t, why) in stopped.items()},
        "fired": {str(r): [[name, t] for name, t in f.items()] for r, f in fired.items()},
        # windowed detectors (Lindemann, RDF) carry their accumulators across a resume
        "detectors": [d.state_dict() for d in dets],
    }
    if active:  # the state holds exactly the active replicas
        data.update(
            pos=state.batch.pos_nc.detach().cpu(),
            cell=state.batch.cell_s33.detach().cpu(),  # changes under a barostat
            vel=state.vel_nc.detach().cpu(),
            # the forces the next step starts from, as they were: a check may change the
            # potential afterwards (a metadynamics hill), so recomputing them would not do
            forces=state.forces_nc.detach().cpu(),
            energy=state.energy_s.detach().cpu(),
            # where the Verlet-skin graph was built: the same graph again on resume
            **(
                {"ref_pos": state.batch.ref_pos_nc.detach().cpu()}
                if state.batch.ref_pos_nc is not None
                else {}
            ),
            # each replica's random stream is (key, draws taken): the count is its state
            noise_count=state.noise_count_s.detach().cpu(),
            thermostat={k: v.detach().cpu() for k, v in state.thermostat.items()},
        )
    tmp = path.with_suffix(".tmp")
    torch.save(data, tmp)
    tmp.replace(path)  # atomic: a kill during the save leaves the previous checkpoint


def _load_checkpoint(
    path: Path, state0: MDState, ids: list[int], settings: dict, dets: list, model: torch.nn.Module
) -> tuple[MDState, list[int], dict, dict]:
    """Rebuild the saved state from the deterministic start state ``state0``; returns it,
    the active replicas, the stopped ones and every replica's fired criteria."""
    data = torch.load(path, weights_only=True)
    if data["settings"] != settings:
        raise ValueError(
            f"{path} was written by a run with other settings ({data['settings']}); "
            "remove it or use another traj_dir"
        )
    stopped = {int(r): (float(t), str(why)) for r, (t, why) in data["stopped"].items()}
    fired = {int(r): {str(n): float(t) for n, t in f} for r, f in data.get("fired", {}).items()}
    for r, (t, why) in stopped.items():  # checkpoints written before "fired" existed
        fired.setdefault(r, {why: t})
    if not data["active"]:
        return replace(state0, step=int(data["step"])), [], stopped, fired
    keep = torch.tensor([r in data["active"] for r in ids], device=state0.batch.device)
    for det in dets:
        det.select(keep, state0)
    for det, det_state in zip(dets, data.get("detectors", [])):
        det.load_state_dict(det_state)
    state = state0.select(keep)
    dev, dt = state.batch.device, state.batch.dtype
    if "noise_count" not in data:
        raise ValueError(
            f"{path} was written by an earlier version whose replicas drew their noise from "
            "torch generators; this one cannot continue those streams: remove it or use "
            "another traj_dir"
        )
    state = replace(state, noise_count_s=data["noise_count"].to(dev))
    cell = data["cell"].to(device=dev, dtype=dt) if "cell" in data else None
    batch = state.batch
    if "ref_pos" in data:  # the graph the run had, built where it was built
        batch = batch.rebuilt(data["ref_pos"].to(device=dev, dtype=dt), cell)
    batch = batch.with_positions(data["pos"].to(device=dev, dtype=dt), cell)
    if "forces" in data:
        forces, energy = data["forces"].to(device=dev, dtype=dt), data["energy"].to(dev)
    else:  # checkpoints written before the forces were saved
        out = compute_properties(model, batch, forces=True)
        forces, energy = out["forces"].to(dt), out["energy"]
    state = replace(
        state,
        batch=batch,
        vel_nc=data["vel"].to(device=dev, dtype=dt),
        forces_nc=forces,
        energy_s=energy,
        step=int(data["step"]),
        thermostat={k: v.to(dev) for k, v in data["thermostat"].items()},
    )
    return state, list(data["active"]), stopped, fired


@dataclass
class ReplicaResult:
    replica_id: int
    t_inst_fs: float  # onset of the first failed check; nan when it stayed stable
    reason: str | None
    times_fs: np.ndarray  # (T,)
    positions_tn3: np.ndarray  # (T, n, 3) Å, the stable part
    energy_t: np.ndarray  # (T,) eV
    temperature_t: np.ndarray  # (T,) K
    max_force_t: np.ndarray  # (T,) largest per-atom force norm, eV/Å
    cell_t33: np.ndarray | None = None  # (T, 3, 3) Å, each frame's cell (NPT changes it)
    #: each criterion that failed, with the onset of its first failure (fs), in firing
    #: order; with ``stop_on_failure=False`` every criterion is judged to the end
    fired_fs: dict[str, float] = field(default_factory=dict)

    @property
    def stable(self) -> bool:
        return self.reason is None

    @classmethod
    def from_frames(
        cls,
        replica_id: int,
        t_inst_fs: float,
        reason: str | None,
        frames: Sequence[Frame | tuple],
        fired_fs: dict[str, float] | None = None,
    ) -> ReplicaResult:
        """From :class:`~ase_mlff.md.storage.Frame` records (or tuples in its field order);
        ``cell_t33`` when every frame has a cell."""
        frames = as_frames(frames)
        cells = [f.cell_33 for f in frames]
        return cls(
            replica_id=replica_id,
            t_inst_fs=t_inst_fs,
            reason=reason,
            times_fs=np.array([f.time_fs for f in frames]),
            positions_tn3=np.array([f.positions_n3 for f in frames]),
            energy_t=np.array([f.energy for f in frames]),
            temperature_t=np.array([f.temperature_K for f in frames]),
            max_force_t=np.array([f.max_force for f in frames]),
            cell_t33=np.array(cells) if frames and all(c is not None for c in cells) else None,
            fired_fs=dict(fired_fs or ({} if reason is None else {reason: t_inst_fs})),
        )


@dataclass
class MDRun:
    replicas: list[ReplicaResult]
    dt_fs: float
    steps: int
    settings: dict = field(default_factory=dict)
    #: with a replica queue, the mean fraction of the batch's slots in use per step
    occupancy: float | None = None

    def t_inst(self) -> np.ndarray:
        """(R,) instability times, fs; the run length for replicas that stayed stable."""
        total = self.steps * self.dt_fs
        return np.array([total if r.stable else r.t_inst_fs for r in self.replicas])

    def failure_temperature_K(self) -> np.ndarray:
        """(R,) the thermostat's target temperature at each replica's t_inst (K; NaN for a
        replica that stayed stable): on a heating ramp (``temperature_end_K``), the
        temperature at which the model failed, as MLIP Arena's heating test reports it."""
        t0 = float(self.settings.get("temperature_K", np.nan))
        t1 = float(self.settings.get("temperature_end_K", t0))
        total = self.steps * self.dt_fs
        return np.array(
            [
                np.nan if r.stable else t0 + (t1 - t0) * min(r.t_inst_fs / total, 1.0)
                for r in self.replicas
            ]
        )


def run_md(
    model: torch.nn.Module,
    images: Sequence[Atoms],
    protocol: MDProtocol | str | Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    replica_ids: Sequence[int] | None = None,
    detectors: Sequence[Detector] | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    progress: bool = False,
    traj_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    detector_factory: Callable[[Sequence[Atoms], MDState], list] = default_detectors,
    metadynamics: Metadynamics | None = None,
    stop_on_failure: bool = True,
    skin: float = 0.0,
    compile: bool = False,
    batch_size: int | str | None = None,
    **protocol_fields: Any,
) -> MDRun:
    """Integrate all ``images`` as replicas under an MD protocol.

    The protocol (:class:`~ase_mlff.md.protocol.MDProtocol`: integrator, ``dt`` fs, steps,
    temperature, thermostat and barostat constants, check and record strides) is
    ``protocol`` (a protocol, the name of one in :data:`~ase_mlff.md.protocol.PROTOCOLS`
    or a mapping of fields) with ``protocol_fields`` applied, e.g.
    ``run_md(model, images, steps=2000, integrator="nose_hoover")``. Its defaults are the
    project's only MD defaults.

    ``detectors=None`` uses :func:`~ase_mlff.md.detectors.default_detectors` built on the
    start structures; pass ``[]`` to run without any. With ``traj_dir`` every replica's
    stable frames are also appended to ``traj_dir/replica_XXXX.traj`` as they pass their
    checks (:mod:`ase_mlff.md.storage`). With ``checkpoint_every`` (steps, a multiple of
    ``check_every``; needs ``traj_dir``) the MD state — positions, velocities, forces,
    thermostat, every replica's random stream, step, which replicas stopped — is saved to
    ``traj_dir/md_state.pt`` right after a check, and a run started again with the same
    arguments resumes from it, bit-identically, without losing a stored frame.

    ``integrator="npt_berendsen"`` (periodic replicas only) is Berendsen NPT as ASE's
    ``NPTBerendsen`` (:func:`~ase_mlff.md.integrators.npt_berendsen_step`); every replica
    has its own cell, recorded with each frame (``ReplicaResult.cell_t33``, ``atoms.cell``
    of the stored frames).

    ``metadynamics``: a :class:`~ase_mlff.md.metadynamics.Metadynamics` bias acting in
    every step (its hills deposited at the checks, kept in the checkpoint).

    ``skin`` (Å): a Verlet skin for the neighbour graph, rebuilt only when an atom has
    moved half the skin (:class:`~ase_mlff.graph.Batch`); the forces are those of a graph
    rebuilt every step.

    ``compile=True`` runs the model compiled
    (:class:`~ase_mlff.models.compiled.CompiledPotential`: ``torch.compile`` with dynamic
    shapes, an eager fallback with a logged reason) from the first step, so that a resumed
    run evaluates the same compiled code and stays bit-identical; compiling costs seconds
    (tens of seconds cold), so it pays over long runs.

    ``batch_size``: at most this many replicas are integrated at once (None, the default:
    all; ``"auto"``: all when they fit in half the free memory by a probe evaluation of a
    few replicas, :func:`~ase_mlff.md.batching.auto_batch_size`, else as many as fit, and
    all with a warning where a queue cannot run or the probe fails; a resumed run keeps
    its batch size). ``"auto"`` is not the default because the probe evaluates the model
    on a subset of the replicas before the run: a potential whose energy depends on the
    whole batch, or a stateful wrapper, would see an extra call. The
    others wait in a queue and enter, in order, as soon as replicas stop (unstable) or
    finish: each replica runs ``steps`` steps of its own, its times count from its entry,
    its random stream is its own (so its trajectory is the one it has in any batch), and
    its frames, checkpoint and results are kept as any replica's. Replicas enter and
    finish at checks, so ``steps`` must be a multiple of ``check_every``.
    ``MDRun.occupancy`` is the mean fraction of the batch in use. Not with metadynamics
    (shared hills), an explicit ``detectors`` list, windowed detectors, or integrators
    that carry thermostat or barostat state (``nose_hoover``, ``npt_berendsen``): each is
    refused before any work.

    ``stop_on_failure=False`` judges every criterion on its own (paper 004 Table 1 counts
    overlap and Lindemann separately): a replica runs on after a failed check and
    ``ReplicaResult.fired_fs`` records when each criterion first failed; only a
    ``terminal`` detector (non-finite values, runaway forces or temperature) stops it.
    ``t_inst_fs``/``reason`` are the earliest failure either way (onsets dated back by a
    window included); in this mode the stored frames go on past it, otherwise the frames
    end before it.

    Every parameter is checked first (the protocol when it is made,
    :func:`~ase_mlff.md.validation.validate_md_parameters`): a bad one raises
    ``ValueError`` naming it before the model is evaluated.
    """
    p = make_protocol(protocol, **protocol_fields)
    _check_run(p, model, images, dtype, traj_dir, checkpoint_every)
    if not skin >= 0:
        raise ValueError(f"skin (the Verlet skin, Å) must be ≥ 0, got {skin}")
    if compile not in (True, False):
        raise ValueError(f"compile must be True or False, got {compile!r}")
    if compile and metadynamics is not None:
        raise ValueError(
            "compile=True with metadynamics is not supported: the bias wraps the model, and "
            "the compiled evaluation would be bypassed; run without compile"
        )
    if compile:
        model = CompiledPotential(model, True)
    if batch_size == "auto":  # probed with the potential alone (a bias needs its walkers)
        batch_size = _auto_batch_size(
            model, images, p, detectors, metadynamics, dtype, device, skin, traj_dir
        )
    queued = _check_queue(batch_size, p, images, detectors, metadynamics)
    if metadynamics is not None:  # the bias force in every step; hills at the checks
        check_metadynamics(metadynamics, p.check_every)
        metadynamics.dt_fs = p.dt
        model = BiasedPotential(model, metadynamics)
    ids = list(range(len(images))) if replica_ids is None else list(replica_ids)
    n_first = min(batch_size, len(ids)) if queued else len(ids)
    start = _Starter(model, dict(zip(ids, images)), p, seed, dtype, device, skin)
    start.detectors, start.detector_factory = detectors, detector_factory
    state, dets = start(ids[:n_first])
    if queued:
        _check_entrants(dets, batch_size, len(ids))
    if metadynamics is not None:
        dets.append(metadynamics)
    settings = _settings(p, seed, dets, stop_on_failure)
    if skin:
        settings["skin"] = float(skin)
    if queued:
        settings["batch_size"] = int(batch_size)
    ckpt = Path(traj_dir) / CHECKPOINT if traj_dir else None
    resuming = bool(checkpoint_every and ckpt and ckpt.exists())
    store = TrajectoryStore(traj_dir, images, ids, settings, resume=resuming) if traj_dir else None
    book = _Replicas(ids, p.dt, store, p.check_every, stop_on_failure)
    queue = list(ids[n_first:])
    book.active = ids[:n_first]
    if queued:
        book.finish_after, book.record_every = p.steps, p.record_every
        book.start = {r: 0 for r in book.active}
    if resuming:
        state, dets, queue = _restore(ckpt, state, dets, book, start, settings, queued)
        book.frames = {r: stored_frames(traj_dir, r) for r in ids}
    else:
        book.record(state)
    loop = _Loop(p, book, start, batch_size if queued else None, progress, len(ids))
    state = loop.run(state, dets, queue, model, checkpoint_every, ckpt, settings)
    if store:
        store.close()
    results = [book.result(r) for r in ids]
    return MDRun(
        replicas=results, dt_fs=p.dt, steps=p.steps, settings=settings, occupancy=loop.occupancy
    )


class _Starter:
    """Fresh replicas at a global step, with their detectors (the run's factory, or the
    explicit list): the start of a run, of a resumed queue run and of queue entrants."""

    def __init__(self, model, by_id: dict, p: MDProtocol, seed, dtype, device, skin) -> None:
        self.model, self.by_id, self.p = model, by_id, p
        self.seed, self.dtype, self.device, self.skin = seed, dtype, device, skin
        self.detectors: Sequence[Detector] | None = None
        self.detector_factory: Callable = default_detectors

    def __call__(self, run_ids: Sequence[int], step: int = 0) -> tuple[MDState, list]:
        imgs = [self.by_id[r] for r in run_ids]
        st = init_state(
            self.model,
            imgs,
            temperature_K=self.p.temperature_K,
            seed=self.seed,
            replica_ids=list(run_ids),
            dtype=self.dtype,
            device=self.device,
            skin=self.skin,
        )
        st = replace(st, step=step)
        if self.detectors is not None:
            return st, list(self.detectors)
        return st, list(self.detector_factory(imgs, st))


def _check_entrants(dets: Sequence, batch_size: int, n: int) -> None:
    """A replica queue needs detectors that can take entrants (before any step)."""
    unfit = [
        getattr(d, "name", type(d).__name__)
        for d in dets
        if not isinstance(d, Detector) or d.shared_accumulators()
    ]
    if unfit:
        raise ValueError(
            f"a replica queue (batch_size {batch_size} < {n}) cannot run with detectors "
            f"that accumulate over a window shared by the batch, or cannot take entrants "
            f"({unfit})"
        )


def _restore(
    ckpt: Path,
    state: MDState,
    dets: list,
    book: _Replicas,
    start: _Starter,
    settings: dict,
    queued: bool,
) -> tuple[MDState, list, list[int]]:
    """The run's state, detectors and queue from its checkpoint; the book and the store
    are set back to it (frames written after it go)."""
    built_for, queue = list(book.active), []
    if queued:  # the replicas the checkpoint holds, started afresh, then restored
        saved = torch.load(ckpt, weights_only=True)
        queue, book.start = list(saved["queue"]), dict(saved["start"])
        if saved["active"]:
            built_for = list(saved["active"])
            state, dets = start(built_for, int(saved["step"]))
    state, book.active, book.stopped, book.fired = _load_checkpoint(
        ckpt, state, built_for, settings, dets, start.model
    )
    if queued:
        t_max = {r: book.time(r, state.step) for r in book.start}
    else:
        t_max = state.step * book.dt
    book.store.truncate(t_max, book.fired)
    return state, dets, queue


class _Loop:
    """The integration loop of :func:`run_md`: steps, records, checks, checkpoints and,
    with a replica queue (``batch_size``), lets queued replicas enter at checks."""

    def __init__(
        self,
        p: MDProtocol,
        book: _Replicas,
        start: _Starter,
        batch_size: int | None,
        progress: bool,
        n_replicas: int,
    ) -> None:
        self.p, self.book, self.start, self.batch_size = p, book, start, batch_size
        self.progress, self.n_replicas = progress, n_replicas
        self.used = self.slots = 0  # replica-steps integrated / offered

    @property
    def occupancy(self) -> float | None:
        """With a queue, the mean fraction of the batch's slots in use per step."""
        return self.used / self.slots if self.batch_size and self.slots else None

    def _enter_queued(self, state: MDState, dets: list, queue: list[int]):
        """Queued replicas take the free slots at a check (the clock moves on to the next
        check when nothing runs)."""
        book, stride = self.book, self.p.check_every
        if not book.active:
            state = replace(state, step=-(-state.step // stride) * stride)
        if state.step % stride == 0:
            new = queue[: self.batch_size - len(book.active)]
            del queue[: len(new)]
            state, dets = _enter(book, state, dets, *self.start(new, state.step), new)
        return state, dets

    def run(self, state, dets, queue, model, checkpoint_every, ckpt, settings) -> MDState:
        p, book, queued = self.p, self.book, self.batch_size is not None
        # queued replicas are recorded on their own clocks
        record_stride = math.gcd(p.check_every, p.record_every) if queued else p.record_every
        total = self.n_replicas * p.steps if queued else p.steps
        done = sum(state.step - t for t in book.start.values()) if queued else state.step
        bar = tqdm(total=total, initial=done, desc="MD", disable=not self.progress)
        step_fn, kwargs = p.integrator_spec.step, p.step_kwargs()
        ramp = p.temperature_end_K is not None
        saved_queue = queue if queued else None
        while (book.active or queue) and (queued or state.step < p.steps):
            if queue and len(book.active) < self.batch_size:
                state, dets = self._enter_queued(state, dets, queue)
            if ramp:  # the target at the middle of the step
                kwargs["temperature_K"] = p.temperature_at(state.step + 0.5)
            state = step_fn(state, model, **kwargs)
            self.used += len(book.active)
            self.slots += self.batch_size if queued else 1
            bar.update(len(book.active) if queued else 1)
            if state.step % record_stride == 0:
                book.record(state)
            if state.step % p.check_every == 0 or (not queued and state.step == p.steps):
                state = book.check(state, dets)
                if checkpoint_every and (state.step % checkpoint_every == 0 or not book.active):
                    book.save(ckpt, state, settings, dets, saved_queue)
        if checkpoint_every and book.active:  # a rerun returns at once
            book.save(ckpt, state, settings, dets, saved_queue)
        bar.close()
        return state


def _enter(
    book: _Replicas,
    state: MDState,
    dets: list,
    new_state: MDState,
    new_dets: list,
    new_ids: list[int],
) -> tuple[MDState, list]:
    """Replicas ``new_ids`` (their fresh state and detectors) join the batch; their
    start frame is recorded."""
    book.start.update({r: new_state.step for r in new_ids})
    book.record(new_state, new_ids)
    if not book.active:
        book.active = list(new_ids)
        return new_state, new_dets
    for det, new in zip(dets, new_dets):
        det.extend(new, state)
    book.active = book.active + list(new_ids)
    return concat_states(state, new_state), dets


def _auto_batch_size(
    model, images, p: MDProtocol, detectors, metadynamics, dtype, device, skin, traj_dir
) -> int | None:
    """``batch_size="auto"``: a resumed run keeps the batch size it was started with; a
    new one queues only when not every replica fits in memory
    (:func:`~ase_mlff.md.batching.auto_batch_size`), and runs all at once, with a
    warning, when it cannot queue (what :func:`_check_queue` refuses)."""
    ckpt = Path(traj_dir) / CHECKPOINT if traj_dir else None
    if ckpt is not None and ckpt.exists():
        saved = torch.load(ckpt, weights_only=True)["settings"].get("batch_size")
        return None if saved is None else int(saved)
    try:
        size = auto_batch_size(model, images, dtype=dtype, device=device, skin=skin)
    except Exception as err:  # e.g. a potential that only takes the whole batch
        warnings.warn(
            f"batch_size='auto': the memory probe failed ({type(err).__name__}: {err}); "
            "running all replicas at once",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    if size >= len(images):
        return None
    try:
        _check_queue(size, p, images, detectors, metadynamics)
    except ValueError as err:
        warnings.warn(
            f"only {size} of {len(images)} replicas fit in memory by the estimate, but {err}; "
            "running all at once",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return size


def _check_queue(batch_size, p: MDProtocol, images, detectors, metadynamics) -> bool:
    """Whether ``batch_size`` makes a replica queue (fewer slots than replicas); every
    combination the queue cannot run is refused here, before any work."""
    if batch_size is None:
        return False
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer ≥ 1, 'auto' or None, got {batch_size!r}")
    if batch_size >= len(images):
        return False
    why = None
    if metadynamics is not None:
        why = "metadynamics (its walkers share hills over the whole run)"
    elif detectors is not None:
        why = "an explicit detectors list (entrants need their own: use detector_factory)"
    elif p.temperature_end_K is not None:
        why = "a temperature ramp (the target follows the run's clock, not each replica's)"
    elif p.integrator not in ("nve", "langevin"):
        why = f"the {p.integrator} integrator (it carries thermostat or barostat state)"
    elif p.steps % p.check_every:
        why = (
            f"steps = {p.steps}, not a multiple of check_every ({p.check_every}): replicas "
            "enter and finish at checks"
        )
    if why:
        raise ValueError(
            f"a replica queue (batch_size {batch_size} < {len(images)}) cannot run with {why}"
        )
    return True


def first_failure(fired_fs: dict[str, float]) -> str | None:
    """The criterion with the earliest onset (the first recorded among equal onsets): a
    windowed criterion found at a later check can date its failure earlier."""
    return min(fired_fs, key=fired_fs.get) if fired_fs else None


def _check_run(
    p: MDProtocol,
    model: torch.nn.Module,
    images: Sequence[Atoms],
    dtype: torch.dtype,
    traj_dir: str | Path | None,
    checkpoint_every: int | None,
) -> None:
    """The checks of :func:`run_md` that need more than the protocol."""
    validate_md_parameters(
        steps=p.steps,
        check_every=p.check_every,
        checkpoint_every=checkpoint_every,
        images=images,
    )
    if checkpoint_every is not None and traj_dir is None:
        raise ValueError("checkpoint_every needs traj_dir (frames live on disk)")
    species = getattr(model, "species", None)
    if species:  # (a compiled EAM would index past its table instead of raising)
        unknown = sorted({int(z) for a in images for z in a.numbers} - set(species))
        if unknown:
            from ase.data import chemical_symbols

            raise ValueError(
                f"the model was never trained on element(s) "
                f"{', '.join(chemical_symbols[z] for z in unknown)}; it knows "
                f"{', '.join(chemical_symbols[z] for z in species)}"
            )
    param = next((q for q in model.parameters() if q.is_floating_point()), None)
    if param is not None and param.dtype != dtype:
        raise ValueError(
            f"the model's parameters are {param.dtype} but the MD runs in {dtype}: load or "
            f"cast the model in that dtype (model.to({dtype})) or pass dtype={param.dtype}"
        )


def _settings(
    p: MDProtocol, seed: int, dets: Sequence[Detector], stop_on_failure: bool = True
) -> dict[str, Any]:
    """What a run was made with: recorded with its frames, compared on resume."""
    settings = {
        "integrator": p.integrator,
        "dt_fs": p.dt,
        "steps": p.steps,
        "temperature_K": p.temperature_K,
        "seed": seed,
        "check_every": p.check_every,
        "record_every": p.record_every,
        "friction": p.friction,
        "tdamp": p.tdamp,
        "detectors": [d.name for d in dets],
    }
    if not stop_on_failure:  # older runs (always stopping) keep their settings
        settings["stop_on_failure"] = False
    metad = [d for d in dets if isinstance(d, Metadynamics)]
    if metad:  # runs from before 2026-12-01 did not record it: refused, as other settings
        settings["metadynamics"] = metad[0].describe()
    if p.temperature_end_K is not None:  # a ramp (older runs: none, same settings)
        settings["temperature_end_K"] = p.temperature_end_K
    if p.integrator_spec.periodic_only:  # the barostat's constants (older checkpoints: same)
        settings.update(
            {k: getattr(p, k) for k in p.integrator_spec.params if k != "temperature_K"}
        )
    return settings


class _Replicas:
    """The bookkeeping of :func:`run_md` per replica id: the ``active`` replicas (in batch
    order), their recorded frames ``pending`` until the next passed check, the kept
    ``frames``, ``fired`` = {id: {criterion: onset fs}} and ``stopped`` = {id: (t fs,
    reason)} of the replicas taken out of the batch; kept frames go to the trajectory
    ``store`` too. ``stop_on_failure``: a failed check stops the replica (else only a
    terminal detector does, and the others are judged to the end)."""

    def __init__(
        self,
        ids: list[int],
        dt: float,
        store: TrajectoryStore | None,
        check_every: int = 1,
        stop_on_failure: bool = True,
    ) -> None:
        self.dt, self.store, self.check_every = dt, store, check_every
        self.stop_on_failure = stop_on_failure
        #: replica queue: the global step at which each replica entered (its time is
        #: counted from there), and the steps after which it leaves, finished
        self.start: dict[int, int] = {}
        self.finish_after: int | None = None
        self.record_every: int | None = None  # set: record each replica on its own clock
        self.active = list(ids)
        self.frames: dict[int, list] = {r: [] for r in ids}
        self.pending: dict[int, list] = {r: [] for r in ids}
        self.stopped: dict[int, tuple[float, str]] = {}
        self.fired: dict[int, dict[str, float]] = {}

    def result(self, r: int) -> ReplicaResult:
        """Replica ``r``'s result: t_inst and reason of its earliest failure, its frames
        (those before that onset, unless every criterion was judged to the end)."""
        fired = self.fired.get(r, {})
        reason = first_failure(fired)
        t_inst = fired[reason] if reason else float("nan")
        frames = self.frames[r]
        if reason and self.stop_on_failure:  # a window dated back: its frames are not stable
            frames = [f for f in frames if f.time_fs < t_inst]
        return ReplicaResult.from_frames(r, t_inst, reason, frames, fired)

    def save(
        self,
        path: Path,
        state: MDState,
        settings: dict,
        dets: Sequence[Detector],
        queue: Sequence[int] | None = None,
    ) -> None:
        extra = None if queue is None else {"queue": list(queue), "start": dict(self.start)}
        _save_checkpoint(path, state, self.active, self.stopped, settings, dets, self.fired, extra)

    def time(self, r: int, step: int) -> float:
        """Replica ``r``'s time at global ``step``, fs (from its entry into the batch)."""
        return (step - self.start.get(r, 0)) * self.dt

    def record(self, st: MDState, ids: Sequence[int] | None = None) -> None:
        """Append the current frame of every replica of ``st`` (the active ones, or
        ``ids``) to its pending frames."""
        pos = st.batch.pos_nc.detach().cpu().numpy()
        cell = st.batch.cell_s33.detach().cpu().numpy()
        ptr = np.concatenate([[0], np.cumsum(st.batch.n_atoms_s.cpu().numpy())])
        e = st.energy_s.detach().cpu().numpy()
        t = st.temperature().detach().cpu().numpy()
        fmax = (
            scatter_max(st.forces_nc.detach().norm(dim=1), st.batch.system_n, st.batch.n_systems)
            .cpu()
            .numpy()
        )
        for k, r in enumerate(self.active if ids is None else ids):
            if (
                ids is None
                and self.record_every
                and (st.step - self.start.get(r, 0)) % (self.record_every)
            ):
                continue  # a queued replica is recorded on its own clock
            self.pending[r].append(
                Frame(
                    self.time(r, st.step),
                    pos[ptr[k] : ptr[k + 1]].copy(),
                    e[k],
                    t[k],
                    fmax[k],
                    cell[k].copy(),
                )
            )

    def _judge(self, state: MDState, dets: Sequence[Detector]) -> tuple[Tensor, list[str]]:
        """Run every detector; note each criterion's first failure per replica. Returns
        which replicas stop and, for those, the first detector that stops them."""
        stop_s = torch.zeros(state.batch.n_systems, dtype=torch.bool, device=state.batch.device)
        reasons = [""] * len(self.active)
        for det in dets:
            flag = det(state)
            lag = getattr(det, "onset_lag_checks", 0)  # duck-typed detectors: no lag
            for k in torch.nonzero(flag).flatten().tolist():
                mine = self.fired.setdefault(self.active[k], {})
                if det.name not in mine:
                    onset = self.time(self.active[k], state.step - lag * self.check_every)
                    mine[det.name] = onset
                    if self.store:
                        self.store.mark_fired(self.active[k], mine)
            terminal = getattr(det, "terminal", False)
            stops = flag & ~stop_s if self.stop_on_failure or terminal else None
            if stops is not None:
                for k in torch.nonzero(stops).flatten().tolist():
                    reasons[k] = det.name
                stop_s |= stops
        return stop_s, reasons

    def check(self, state: MDState, dets: Sequence[Detector]) -> MDState:
        """Run the detectors (the first that flags a replica names the reason); a replica
        that stops loses its pending frames, the others keep theirs. Returns the state
        without the stopped replicas (the detectors drop them too)."""
        bad_s, reasons = self._judge(state, dets)
        for k, r in enumerate(self.active):
            if bad_s[k]:
                self.stopped[r] = (self.time(r, state.step), reasons[k])
                self.pending[r] = []  # frames after the last passed check are not stable
            else:
                self.frames[r].extend(self.pending[r])
                if self.store:
                    self.store.append(r, self.pending[r])
                self.pending[r] = []
        if self.store:
            self.store.flush()
        if self.finish_after is not None:  # a replica queue: finished replicas leave too
            done = [state.step - self.start.get(r, 0) >= self.finish_after for r in self.active]
            bad_s = bad_s | torch.tensor(done, device=bad_s.device)
        if not bool(bad_s.any()):
            return state
        keep = ~bad_s
        for det in dets:
            det.select(keep, state)
        self.active = [r for r, k in zip(self.active, keep.tolist()) if k]
        return state.select(keep) if self.active else state
