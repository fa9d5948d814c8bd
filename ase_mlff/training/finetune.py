"""Paper 001's fine-tuning protocol (FFPT-FT): the learning-rate schedules of its three kinds
of stage. The stages themselves, and the refit of the reference energies when a stage
starts from a checkpoint of another level of theory, are :mod:`ase_mlff.training.stage`.

Paper 001's protocol: Adam, learning rate 1e-3 from scratch and 1e-4 for pre-training and
fine-tuning, energy:force weights 1:20, decay 0.7 on plateau down to 1 % of the initial LR.
"""

from __future__ import annotations

from dataclasses import replace

from ase_mlff.training.config import TrainConfig

#: paper 001, Methods: learning rates of the three kinds of stage
PAPER_LR = {"scratch": 1e-3, "pretrain": 1e-4, "finetune": 1e-4}


def paper_schedule(cfg: TrainConfig, stage: str) -> TrainConfig:
    """``cfg`` with paper 001's learning rate for ``stage`` and its plateau decay (×0.7,
    floor at 1 % of the initial rate), energy:force = 1:20."""
    lr = PAPER_LR[stage]
    return replace(
        cfg, lr=lr, lr_factor=0.7, min_lr=0.01 * lr, energy_weight=1.0, force_weight=20.0
    )
