"""Pre-train -> fine-tune (paper 001's FFPT-FT; also paper 000's pre-training on a large set
and paper 004's EAM-labelled pre-training).

Two stages, never mixing data of two levels of theory in one stage (paper 001, §2):

1. pre-train every weight on cheap labels (a classical force field on rattled frames);
2. fine-tune every weight on the quantum data, starting from the pre-trained weights.

Energies of two levels of theory have different zeros (a force field's energy has no
absolute reference at all), so before fine-tuning the per-element reference energies are
refitted: e_ref is the least-squares fit of the residual E_QM − E_network over the
fine-tuning frames, E_network being the pre-trained model without its reference energies.
The force scale of the network is kept, so the pre-trained PES shape is the starting point.

Paper 001's protocol: Adam, learning rate 1e-3 from scratch and 1e-4 for pre-training and
fine-tuning, energy:force weights 1:20, decay 0.7 on plateau down to 1 % of the initial LR.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ase_mlff.models.io import load_model
from ase_mlff.models.prediction import predict
from ase_mlff.training.config import TrainConfig
from ase_mlff.training.trainer import Trainer, TrainResult
from ase_mlff.utils import DTYPES

log = logging.getLogger(__name__)

DONE_FILE = "stage_done.json"

#: paper 001, Methods: learning rates of the three kinds of stage
PAPER_LR = {"scratch": 1e-3, "pretrain": 1e-4, "finetune": 1e-4}


def paper_schedule(cfg: TrainConfig, stage: str) -> TrainConfig:
    """``cfg`` with paper 001's learning rate for ``stage`` and its plateau decay (×0.7,
    floor at 1 % of the initial rate), energy:force = 1:20."""
    lr = PAPER_LR[stage]
    return replace(
        cfg, lr=lr, lr_factor=0.7, min_lr=0.01 * lr, energy_weight=1.0, force_weight=20.0
    )


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

    Only ``model.atomref.e_ref`` changes; returns the fit statistics and the energy MAE per
    atom before and after.
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
) -> dict[str, Any]:
    """Load the weights of ``checkpoint`` into ``model`` (same architecture and config, or a
    ValueError naming both) and refit its per-element reference energies on ``train`` (see
    the module doc). Returns the refit statistics (``refit_*``) and ``init_from``; the
    trainer must then not fit the reference energies again (``refit_atomref=False``)."""
    pre, _ = load_model(checkpoint, device=device, dtype=dtype)
    if type(pre) is not type(model) or pre.config != model.config:
        raise ValueError(
            f"the checkpoint {checkpoint} holds a different model ({pre.config}) than the "
            f"one to train ({model.config}); starting from it needs the same architecture"
        )
    model.load_state_dict(pre.state_dict())
    model.to(device=device, dtype=dtype)
    stats = refit_reference_energies(model, train, device=device, dtype=dtype)
    return {**{f"refit_{k}": v for k, v in stats.items()}, "init_from": str(checkpoint)}


@dataclass
class StageResult:
    """One finished stage: the trainer's result, or a summary re-read from disk."""

    name: str
    best_dir: Path
    best_epoch: int
    epochs_run: int
    stopped_because: str
    best_val: dict[str, float]
    history: list[dict[str, float]]
    extra: dict[str, Any]

    @classmethod
    def from_train(cls, name: str, r: TrainResult, extra: dict[str, Any]) -> StageResult:
        return cls(
            name,
            r.best_dir,
            r.best_epoch,
            r.epochs_run,
            r.stopped_because,
            r.best_val,
            r.history,
            extra,
        )


def run_stage(
    name: str,
    model: torch.nn.Module,
    train,
    val,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    init_from: str | Path | None = None,
    log_fn: Callable[[dict[str, float], int], None] | None = None,
    metadata: dict[str, Any] | None = None,
    **trainer_kwargs: Any,
) -> tuple[torch.nn.Module, StageResult]:
    """Train one stage in ``out_dir``; a stage already finished there is not trained again.

    ``init_from``: a checkpoint (e.g. the pre-trained model) whose weights start this stage;
    its reference energies are then refitted on ``train`` (see module doc). Without it the
    model is trained from its initial weights with the usual fit of e_ref and scale.
    ``trainer_kwargs`` go to :class:`~ase_mlff.training.trainer.Trainer` (e.g. the start
    structures of a stability probe).
    """
    out_dir = Path(out_dir)
    done = out_dir / DONE_FILE
    dtype = DTYPES[cfg.dtype]
    if done.exists():
        info = json.loads(done.read_text())
        trained, _ = load_model(info["best_dir"], device=cfg.device, dtype=dtype)
        log.info("stage %s already finished in %s: skipped", name, out_dir)
        return trained, StageResult(**{**info, "best_dir": Path(info["best_dir"])})
    extra: dict[str, Any] = {}
    refit = True
    if init_from is not None:
        extra = start_from_checkpoint(model, init_from, train, device=cfg.device, dtype=dtype)
        refit = False
    trainer = Trainer(
        model,
        train,
        val,
        cfg,
        out_dir,
        metadata={**(metadata or {}), "stage": name, **extra},
        log_fn=log_fn,
        refit_atomref=refit,
        **trainer_kwargs,
    )
    if refit:
        extra.update({f"atomref_{k}": v for k, v in trainer.atomref_stats.items()})
    result = StageResult.from_train(name, trainer.fit(), extra)
    info = asdict(result)
    info["best_dir"] = str(result.best_dir)
    done.write_text(json.dumps(info, indent=1))
    return trainer.model, result
