"""Train a potential, evaluate it on the test split and record everything in MLflow.

    python -m ase_mlff.recipes.train --data aspirin --model painn --profile quick
    python -m ase_mlff.recipes.train --config my.yaml --epochs 500
    mlflow ui --backend-store-uri sqlite:///mlflow.db --workers 1 --host 127.0.0.1

Profiles (explicit flags and ``--config`` override them):

- ``quick``: 950/50 frames (the papers' MD17 split size), a small PaiNN, a few minutes on
  2 CPU cores: the README's main job.
- ``default``: the shipped ``aspirin-painn`` model: 4,000/200 frames, up to 200 epochs.
- ``paper``: 950/50 frames with the papers' long schedule (lr 1e-3, plateau decay).
- ``organic``: the shipped ``organic-painn`` model (``--data organic``): 30,000/1,000
  frames of the diverse GFN2-xTB CHNO set, 21 whole molecules held out for the test,
  up to 60 epochs or 60 minutes.
- ``fast``: the shipped ``aspirin-painn-fast`` model: the ``default`` data and schedule
  with a PaiNN of width 32, 2 interactions, 16 radial functions and a 4.5 Å cutoff, the
  speed end of the speed/accuracy choice (docs/models.md).

For the shipped aspirin data the test set is a whole held-out trajectory (``traj_id`` 4),
never time-correlated with training frames. Each run logs its config as params, per-epoch
training loss and validation energy/force MAE/RMSE, the final test metrics, the best
checkpoint, the data provenance and a learning-curve figure as artifacts.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from ase_mlff.agents.training import train_and_test
from ase_mlff.data.io import SHIPPED_SPLITS
from ase_mlff.training.config import ExperimentConfig
from ase_mlff.utils import DTYPES

log = logging.getLogger(__name__)

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "data": {"n_train": 950, "n_val": 50},
        "model": {"hidden": 48, "n_interactions": 3},
        "train": {"epochs": 8, "batch_size": 16, "lr": 2e-3, "max_minutes": 4.0},
    },
    "default": {
        "data": {"n_train": 4000, "n_val": 200},
        "model": {"hidden": 64, "n_interactions": 3},
        "train": {
            "epochs": 200,
            "batch_size": 16,
            "lr": 1e-3,
            "lr_patience": 4,
            "early_stopping_patience": 20,
            "max_minutes": 50.0,
        },
    },
    "fast": {
        "data": {"n_train": 4000, "n_val": 200},
        "model": {"hidden": 32, "n_interactions": 2, "n_rbf": 16, "cutoff": 4.5},
        "train": {
            "epochs": 200,
            "batch_size": 16,
            "lr": 1e-3,
            "lr_patience": 4,
            "early_stopping_patience": 20,
            "max_minutes": 50.0,
        },
    },
    # the shipped general model organic-painn: the diverse GFN2-xTB CHNO set (419
    # molecules; every 20th held out whole as the test set), aspirin-painn's architecture
    # with N in its element table (docs/recipe_pretrain_finetune.md)
    "organic": {
        "data": {"n_train": 30_000, "n_val": 1_000},
        "model": {"hidden": 64, "n_interactions": 3},
        "train": {
            "epochs": 60,
            "batch_size": 32,
            "lr": 1e-3,
            "lr_patience": 2,
            "lr_factor": 0.5,
            "early_stopping_patience": 8,
            "max_minutes": 60.0,
        },
    },
    "paper": {
        "data": {"n_train": 950, "n_val": 50},
        "model": {"hidden": 128, "n_interactions": 3},
        "train": {
            "epochs": 2000,
            "batch_size": 8,
            "lr": 1e-3,
            "lr_patience": 10,
            "early_stopping_patience": 50,
        },
    },
}


def build_config(args: argparse.Namespace) -> ExperimentConfig:
    prof = PROFILES[args.profile]
    data = {"name": args.data, **prof["data"], **SHIPPED_SPLITS.get(args.data, {})}
    cfg = ExperimentConfig.from_dict(
        {"data": data, "model": {"name": args.model, **prof["model"]}, "train": prof["train"]}
    )
    if args.config:
        file_cfg = ExperimentConfig.from_yaml(args.config).to_dict()
        cfg = cfg.override(**file_cfg)
    flags = {
        "data": {"n_train": args.n_train, "n_val": args.n_val, "split_seed": args.split_seed},
        "train": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "max_minutes": args.max_minutes,
            "seed": args.seed,
            "device": args.device,
            "dtype": args.dtype,
            "threads": args.threads,
        },
        "model": {"hidden": args.hidden},
    }
    return cfg.override(
        **{s: {k: v for k, v in d.items() if v is not None} for s, d in flags.items()}
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="aspirin", help="shipped dataset name or a file path")
    p.add_argument("--model", default="painn", choices=["painn", "schnet"])
    p.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    p.add_argument("--config", type=Path, help="YAML with data/model/train sections")
    p.add_argument("--out", type=Path, default=None, help="checkpoint directory")
    p.add_argument("--experiment", default="train", help="MLflow experiment name")
    p.add_argument(
        "--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI or ./mlflow.db"
    )
    for name, typ in [
        ("epochs", int),
        ("n-train", int),
        ("n-val", int),
        ("split-seed", int),
        ("batch-size", int),
        ("lr", float),
        ("max-minutes", float),
        ("seed", int),
        ("hidden", int),
        ("threads", int),
    ]:
        p.add_argument(f"--{name}", type=typ, default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES))
    p.add_argument(
        "--init-from",
        default=None,
        help="fine-tune this pre-trained model (shipped name, e.g. organic-painn, or a "
        "checkpoint folder) in its own architecture, reference energies refitted",
    )
    return p


def _refuse_model_choices(args: argparse.Namespace, argv: list[str]) -> None:
    """With ``--init-from`` the checkpoint's architecture is used: a model choice given on
    the command line or in ``--config`` would be ignored, so it is an error."""
    given = [flag for flag in ("--model", "--hidden") if flag in argv]
    if args.config:
        import yaml

        if (yaml.safe_load(args.config.read_text()) or {}).get("model"):
            given.append(f"the model section of {args.config}")
    if given:
        raise ValueError(
            f"{', '.join(given)} would be ignored: --init-from fine-tunes the checkpoint's "
            "own architecture"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.init_from is not None:
        _refuse_model_choices(args, sys.argv[1:] if argv is None else argv)
    cfg = build_config(args)
    out = (
        args.out
        or Path("runs") / f"{cfg.model['name']}-{Path(str(cfg.data.name)).stem}-{args.profile}"
    )
    argv = sys.argv[1:] if argv is None else argv
    command = "python -m ase_mlff.recipes.train " + " ".join(argv)
    res = train_and_test(
        cfg, out, args.experiment, args.tracking_uri, command, init_from=args.init_from
    )
    t = res["test"]
    print(
        f"\n{cfg.model['name']} on {cfg.data.name}: {res['n_train']} train / {res['n_val']} val / "
        f"{res['n_test']} test frames, {res['epochs_run']} epochs ({res['stopped_because']})\n"
        f"test force MAE {t['forces_mae'] * 1e3:.1f} meV/Å, "
        f"RMSE {t['forces_rmse'] * 1e3:.1f} meV/Å; "
        f"energy MAE {t['energy_mae_per_atom'] * 1e3:.2f} meV/atom "
        f"({t['energy_mae'] * 1e3:.1f} meV)\n"
        f"checkpoint: {res['checkpoint']}\n"
        f"MLflow store: {res['tracking_uri']}\n"
        f"  view: mlflow ui --backend-store-uri {res['tracking_uri']} --workers 1 --host 127.0.0.1",
        file=sys.stdout,
    )
    return res


if __name__ == "__main__":
    from ase_mlff.recipes.cli import run_recipe

    run_recipe(main)
