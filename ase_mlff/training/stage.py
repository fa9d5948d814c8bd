"""One training stage: the single entry point every recipe and agent trains through.

    from ase_mlff.training.stage import run_stage
    model, res = run_stage("finetune", model, train, val, cfg, "runs/ft", init_from="runs/pt/best")

A stage is (data, the model or a checkpoint to start from, a :class:`TrainConfig` with its
budget of epochs and minutes, an output directory). :func:`run_stage` builds the
:class:`~ase_mlff.training.trainer.Trainer`, resumes an interrupted run in the same
directory (the trainer's own checkpoint), and marks a finished stage with
``stage_done.json`` (its result and config) so that running it again with the same config
only re-reads its result, and with a longer budget continues it. Scratch training,
pre-training, fine-tuning (paper 001's FFPT-FT, paper 000's pre-training on a large set,
paper 004's EAM-labelled pre-training), the comparison agent's variants, continued
learning and the data-parallel Ray workers all go through it.

**Starting from a checkpoint.** Energies of two levels of theory have different zeros (a
force field's energy has no absolute reference at all), so before fine-tuning on new labels
the per-element reference energies are refitted: e_ref is the least-squares fit of the
residual E_ref-level − E_network over the stage's training frames, E_network being the
loaded model without its reference energies. The force scale of the network is kept, so
the pre-trained PES shape is the starting point (paper 001, §2: two stages never mix data
of two levels of theory). Continued learning on the same level of theory keeps the
reference energies (``fit_reference_energies=False``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ase_mlff.models.io import load_model
from ase_mlff.models.prediction import predict
from ase_mlff.training.config import TrainConfig
from ase_mlff.training.trainer import Trainer, TrainResult, distributed_context
from ase_mlff.utils import DTYPES, jsonable, write_json

log = logging.getLogger(__name__)

DONE_FILE = "stage_done.json"
#: TrainConfig fields that say where a stage runs, not what it is: ignored when deciding
#: whether a finished stage is the same
PLACEMENT = frozenset({"device", "threads", "eval_batch_size"})
#: held while a run writes into its folder (:func:`exclusive_run_dir`)
LOCK_FILE = ".lock"
#: the stage's TrainConfig in its stage file: a finished stage is skipped only for the same
CONFIG_KEY = "train_config"


@torch.no_grad()
def refit_reference_energies(
    model: torch.nn.Module,
    dataset,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
) -> dict[str, float]:
    """Re-reference a (pre-trained) model to the energies of ``dataset`` (see module doc).

    Only ``model.atomref.e_ref`` of the elements in ``dataset`` changes (an element the new
    data lack keeps its old value: there is nothing to fit it to); returns the fit
    statistics and the energy MAE per atom before and after.
    """
    atomref = model.atomref
    saved = atomref.e_ref.clone()
    atomref.e_ref.zero_()
    model.eval()
    e_net = predict(model, dataset, batch_size=batch_size, device=device, dtype=dtype)["energy"]
    atomref.e_ref.copy_(saved)
    counts_ref = saved.cpu().numpy()[dataset.numbers_n]
    frame = np.repeat(np.arange(len(dataset)), dataset.n_atoms_s)
    e_before = e_net + np.bincount(frame, weights=counts_ref, minlength=len(dataset))
    stats = atomref.fit(dataset, energy_offset_s=e_net, scale=False)
    absent = torch.ones_like(saved, dtype=torch.bool)
    absent[dataset.species] = False
    atomref.e_ref[absent] = saved[absent]
    counts_new = atomref.e_ref.cpu().numpy()[dataset.numbers_n]
    e_after = e_net + np.bincount(frame, weights=counts_new, minlength=len(dataset))
    stats["energy_mae_per_atom_before"] = float(
        np.mean(np.abs(e_before - dataset.energy_s) / dataset.n_atoms_s)
    )
    stats["energy_mae_per_atom_after"] = float(
        np.mean(np.abs(e_after - dataset.energy_s) / dataset.n_atoms_s)
    )
    return stats


def start_from_checkpoint(
    model: torch.nn.Module,
    checkpoint: str | Path,
    train,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
    refit: bool = True,
) -> dict[str, Any]:
    """Load the weights of ``checkpoint`` into ``model`` (same architecture and config, or a
    ValueError naming both) and, with ``refit``, refit its per-element reference energies
    on ``train`` (see the module doc). Returns the refit statistics (``refit_*``) and
    ``init_from``; the trainer must then not fit the reference energies again."""
    pre, _ = load_model(checkpoint, device=device, dtype=dtype)
    if type(pre) is not type(model) or pre.config != model.config:
        raise ValueError(
            f"the checkpoint {checkpoint} holds a different model ({pre.config}) than the "
            f"one to train ({model.config}); starting from it needs the same architecture"
        )
    model.load_state_dict(pre.state_dict())
    model.to(device=device, dtype=dtype)
    stats = refit_reference_energies(model, train, device=device, dtype=dtype) if refit else {}
    return {**{f"refit_{k}": v for k, v in stats.items()}, "init_from": str(checkpoint)}


class RunDirectoryBusy(RuntimeError):
    """Another run writes into the same output folder."""


_HELD: dict[Path, tuple[Any, int]] = {}  # locks this process holds: path -> (file, depth)


@contextmanager
def exclusive_run_dir(out_dir: str | Path):
    """Hold ``out_dir/.lock`` (``fcntl.flock``, released by the OS when the process dies)
    while a run writes into ``out_dir``; another process gets :class:`RunDirectoryBusy`
    naming the holder, before anything is written. Re-entrant within one process (a
    recipe holds it around a stage that takes it again). Linux/macOS (fcntl)."""
    import fcntl
    import os
    import socket

    out_dir = Path(out_dir).resolve()
    if out_dir in _HELD:
        fh, depth = _HELD[out_dir]
        _HELD[out_dir] = (fh, depth + 1)
        try:
            yield
        finally:
            fh, depth = _HELD[out_dir]
            _HELD[out_dir] = (fh, depth - 1)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    fh = open(out_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held until the block ends
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise RunDirectoryBusy(
            f"{out_dir} is in use by another run ({holder}); wait for it to finish or "
            "choose another --out"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
    fh.flush()
    _HELD[out_dir] = (fh, 1)
    try:
        yield
    finally:
        del _HELD[out_dir]
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


@dataclass
class StageResult(TrainResult):
    """A finished stage: the trainer's :class:`TrainResult`, the stage's ``name`` and what
    happened before training (``extra``: the reference-energy fit, the checkpoint it
    started from)."""

    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_train(cls, name: str, r: TrainResult, extra: dict[str, Any]) -> StageResult:
        return cls(**{f: getattr(r, f) for f in r.__dataclass_fields__}, name=name, extra=extra)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["best_dir"], d["last_dir"] = str(self.best_dir), str(self.last_dir)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], out_dir: Path) -> StageResult:
        """The stage finished in ``out_dir``: its checkpoints are ``out_dir/best`` and
        ``out_dir/last`` wherever the folder has been moved or copied since (the paths
        stored in the file are those of the run that wrote it)."""
        d = {**d, "best_dir": Path(out_dir) / Path(d["best_dir"]).name}
        d["last_dir"] = Path(out_dir) / "last"
        return cls(**d)


def optimizer_steps(history: list[dict[str, Any]]) -> int:
    """The optimiser steps a stage took: its last history row's count (0 untrained)."""
    return int(history[-1].get("optimizer_steps", 0)) if history else 0


def run_stage(
    name: str,
    model: torch.nn.Module,
    train,
    val,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    init_from: str | Path | None = None,
    fit_reference_energies: bool = True,
    log_fn: Callable[[dict[str, float], int], None] | None = None,
    metadata: dict[str, Any] | None = None,
    **trainer_kwargs: Any,
) -> tuple[torch.nn.Module, StageResult]:
    """Train one stage in ``out_dir``. A stage already finished there with the same
    ``cfg`` is not trained again (its result is re-read); with another ``cfg`` (e.g. more
    epochs) training goes on from the stage's last state, as does an interrupted stage.

    ``init_from``: a checkpoint (e.g. the pre-trained model) whose weights start this stage.
    ``fit_reference_energies``: with ``init_from``, refit the per-element reference
    energies on ``train`` (a new level of theory, see the module doc) or keep them (False:
    continued training on the same labels); without it, the trainer's usual fit of e_ref
    and scale on a fresh model (False: the model's weights are used as given).
    ``log_fn(metrics, step)`` receives every epoch's metrics (e.g. an MLflow run's
    ``log_metrics``); ``metadata`` goes into every checkpoint. ``trainer_kwargs`` go to
    :class:`~ase_mlff.training.trainer.Trainer` (e.g. the start structures of a stability
    probe). Returns the trained model (the selected weights) and the :class:`StageResult`.
    The folder is held (:func:`exclusive_run_dir`) while the stage runs: a second run into
    it fails at once instead of overwriting the first one's checkpoints.
    """
    out_dir = Path(out_dir)
    rank, _ = distributed_context()
    with exclusive_run_dir(out_dir) if rank == 0 else nullcontext():
        return _run_stage(
            name,
            model,
            train,
            val,
            cfg,
            out_dir,
            init_from=init_from,
            fit_reference_energies=fit_reference_energies,
            log_fn=log_fn,
            metadata=metadata,
            **trainer_kwargs,
        )


def _run_stage(
    name: str,
    model: torch.nn.Module,
    train,
    val,
    cfg: TrainConfig,
    out_dir: Path,
    *,
    init_from: str | Path | None,
    fit_reference_energies: bool,
    log_fn: Callable[[dict[str, float], int], None] | None,
    metadata: dict[str, Any] | None,
    **trainer_kwargs: Any,
) -> tuple[torch.nn.Module, StageResult]:
    done = out_dir / DONE_FILE
    dtype = DTYPES[cfg.dtype]
    # where a stage runs does not make it another stage (data-parallel ranks differ in it)
    config = {k: v for k, v in jsonable(cfg, nan_as_null=False).items() if k not in PLACEMENT}
    if done.exists():
        info = json.loads(done.read_text())
        stored = info.pop(CONFIG_KEY, config)  # stage files written before it was stored
        stored = {k: v for k, v in stored.items() if k not in PLACEMENT}
        if stored == config:
            result = StageResult.from_json(info, out_dir)
            trained, _ = load_model(result.best_dir, device=cfg.device, dtype=dtype)
            log.info("stage %s already finished in %s: skipped", name, out_dir)
            return trained, result
        changed = sorted(k for k in config if stored.get(k) != config[k])
        log.info(
            "stage %s in %s finished with another configuration (%s changed): training "
            "goes on from its last state",
            name,
            out_dir,
            ", ".join(changed),
        )
        init_from = None  # the stage's own checkpoint holds the weights to continue from
    extra: dict[str, Any] = {}
    if init_from is not None:
        extra = start_from_checkpoint(
            model, init_from, train, device=cfg.device, dtype=dtype, refit=fit_reference_energies
        )
    refit_in_trainer = init_from is None and fit_reference_energies
    trainer = Trainer(
        model,
        train,
        val,
        cfg,
        out_dir,
        metadata={**(metadata or {}), "stage": name, **extra},
        log_fn=log_fn,
        refit_atomref=refit_in_trainer,
        **trainer_kwargs,
    )
    if refit_in_trainer:
        extra.update({f"atomref_{k}": v for k, v in trainer.atomref_stats.items()})
    result = StageResult.from_train(name, trainer.fit(), extra)
    if trainer.rank == 0:  # data parallel: one writer
        write_json(done, {**result.to_json(), CONFIG_KEY: config}, nan_as_null=False)
    return trainer.model, result
