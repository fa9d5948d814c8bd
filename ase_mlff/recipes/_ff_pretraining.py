"""The command line the force-field pre-training recipes (``aspirin_ffpt``,
``water_ffpt``, ``alanine_fes``) take, and their one ``main``. Their study is in the
library: the options are :class:`ase_mlff.agents.ff_pretraining.FFPTOptions` (one field
per option below), the variants are trained by
:func:`ase_mlff.agents.ff_pretraining.train_variants`."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any


def ffpt_main(
    argv: list[str] | None,
    doc: str,
    name: str,
    profiles: dict[str, dict[str, Any]],
    n_train: int,
    study: Callable[..., Any],
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> dict[str, Any]:
    """Parse the options (:func:`add_arguments`, plus ``extra``), run ``study(profile,
    FFPTOptions)``, print its table and where the results are; returns the results."""
    from ase_mlff.agents.ff_pretraining import FFPTOptions

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    add_arguments(p, name, profiles, n_train=n_train)
    if extra is not None:
        extra(p)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    outcome = study(profiles[a.profile], FFPTOptions(**vars(a)))
    print(outcome.table)
    print(f"results in {outcome.out}; MLflow store: {outcome.tracking_uri}")
    return outcome.results


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
