"""What the force-field pre-training recipes share: train the two variants of paper 001
(scratch; pre-train -> fine-tune) under one MLflow parent run, with the same architecture
and the same fine-tuning budget."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ase_mlff.data import Dataset
from ase_mlff.models import build_model
from ase_mlff.training.config import TrainConfig
from ase_mlff.training.finetune import paper_schedule
from ase_mlff.training.stage import run_stage


@dataclass
class Variants:
    checkpoints: dict[str, Path] = field(default_factory=dict)
    histories: dict[str, dict[str, list]] = field(default_factory=dict)
    handles: dict[str, Any] = field(default_factory=dict)  # MLflow child runs
    finetune_extra: dict[str, Any] = field(default_factory=dict)


def stage_configs(
    base: TrainConfig, pretrain: dict[str, Any], finetune: dict[str, Any]
) -> dict[str, TrainConfig]:
    """Paper-001 schedules: pretrain (lr 1e-4), scratch (1e-3) and finetune (1e-4), the
    last two with the same epochs and time budget."""
    pt = paper_schedule(TrainConfig(**{**base.__dict__, **pretrain}), "pretrain")
    ft = TrainConfig(**{**base.__dict__, **finetune})
    return {
        "pretrain": pt,
        "scratch": paper_schedule(ft, "scratch"),
        "finetune": paper_schedule(ft, "finetune"),
    }


def train_variants(
    model_cfg: dict[str, Any],
    pretrain_data: tuple[Dataset, Dataset],
    finetune_data: tuple[Dataset, Dataset],
    cfgs: dict[str, TrainConfig],
    out: Path,
    tracker,
    parent,
) -> Variants:
    """Train ``scratch`` and ``ffpt`` (pretrain, then finetune from its best checkpoint),
    each in its own MLflow child run; finished stages in ``out`` are not trained again."""
    v = Variants()
    train, val = finetune_data
    with tracker.run("scratch", params={"variant": "scratch"}, parent=parent) as run_h:
        v.handles["scratch"] = run_h
        _, res = run_stage(
            "scratch",
            build_model(model_cfg),
            train,
            val,
            cfgs["scratch"],
            out / "scratch",
            log_fn=run_h.log_metrics,
        )
        v.checkpoints["scratch"] = res.best_dir
        v.histories["scratch"] = {"scratch": res.history}
    with tracker.run("ffpt", params={"variant": "ffpt"}, parent=parent) as run_h:
        v.handles["ffpt"] = run_h
        _, pre = run_stage(
            "pretrain",
            build_model(model_cfg),
            *pretrain_data,
            cfgs["pretrain"],
            out / "pretrain",
            log_fn=lambda m, s: run_h.log_metrics({f"pt_{k}": x for k, x in m.items()}, s),
        )
        _, fine = run_stage(
            "finetune",
            build_model(model_cfg),
            train,
            val,
            cfgs["finetune"],
            out / "finetune",
            init_from=pre.best_dir,
            log_fn=lambda m, s: run_h.log_metrics({f"ft_{k}": x for k, x in m.items()}, s),
        )
        run_h.log_params({f"finetune.{k}": x for k, x in fine.extra.items()})
        v.finetune_extra = fine.extra
        v.checkpoints["ffpt"] = fine.best_dir
        v.checkpoints["pretrained only"] = pre.best_dir
        v.histories["ffpt"] = {"pretrain": pre.history, "finetune": fine.history}
    return v


def add_arguments(p: argparse.ArgumentParser, name: str, profiles, n_train: int) -> None:
    """The command-line options both recipes take."""
    p.add_argument("--profile", default="quick", choices=sorted(profiles))
    p.add_argument("--model", default="painn", help="painn | schnet (any registered GNN)")
    p.add_argument("--n-pretrain", type=int, default=None, help="rattled frames to label")
    p.add_argument("--n-train", type=int, default=n_train)
    p.add_argument("--n-val", type=int, default=50)
    p.add_argument("--replicas", type=int, default=None)
    p.add_argument("--md-steps", type=int, default=None)
    p.add_argument("--pretrain-minutes", type=float, default=None)
    p.add_argument("--finetune-minutes", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("runs") / name)
    p.add_argument("--experiment", default=name)
    p.add_argument("--tracking-uri", default=None)


def settings_from_arguments(a: argparse.Namespace, prof: dict[str, Any]):
    """(n_pretrain, replicas, md_steps, stage configs) from the profile and the flags."""
    pt_over, ft_over = dict(prof["pretrain"]), dict(prof["finetune"])
    if a.pretrain_minutes:
        pt_over["max_minutes"] = a.pretrain_minutes
    if a.finetune_minutes:
        ft_over["max_minutes"] = a.finetune_minutes
    base = TrainConfig(device=a.device, seed=a.seed, threads=a.threads, dtype="float32")
    return (
        a.n_pretrain or prof["n_pretrain"],
        a.replicas or prof["replicas"],
        a.md_steps or prof["md_steps"],
        stage_configs(base, pt_over, ft_over),
    )
