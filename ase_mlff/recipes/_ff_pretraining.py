"""The command line both force-field pre-training recipes (``aspirin_ffpt``,
``water_ffpt``) take. Their study is in the library: the options are
:class:`ase_mlff.agents.ff_pretraining.FFPTOptions` (one field per option below), the
variants are trained by :func:`ase_mlff.agents.ff_pretraining.train_variants`."""

from __future__ import annotations

import argparse
from pathlib import Path


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
