"""Every training variant of the papers on the shipped aspirin data, judged by force
metrics *and* MD stability, compared in MLflow (the comparison agent on one study).

    python -m ase_mlff.recipes.aspirin_compare --profile quick     # < 45 min on 2 CPU cores
    python -m ase_mlff.recipes.aspirin_compare --active --alpha 0.05  # + the active verdict
    python -m ase_mlff.recipes.aspirin_compare --profile paper     # the papers' sizes (GPUs)
    RAY_ADDRESS=auto python -m ase_mlff.recipes.aspirin_compare    # on a running Ray cluster

Variants (same PaiNN architecture, same fine-tuning data and budget):

- ``scratch``: trained from its initial weights (lr 1e-3).
- ``ffpt``: pre-trained on GAFF-2.11 labels of rattled aspirin (x + 0.2 Å·ε, paper 001),
  then every weight fine-tuned on GFN2-xTB (lr 1e-4, reference energies refitted).
- ``sam``: scratch with sharpness-aware minimisation (ρ = 0.05), paper 004's baseline.
- ``reweighted``: ``scratch`` fine-tuned with per-frame weights from its per-cluster
  ratio of bad points (paper 002).
- ``continued``: ``scratch`` continued by active learning: batched MD from the start
  structures at 800 K (hotter than the 500 K of the data, to reach conformations outside
  the training clusters; paper 002 sampled its new conformations with replica-exchange
  MD), unexplored and pre-instability frames labelled with GFN2-xTB (tblite) in Ray
  tasks, added, retrained (paper 002); two rounds.
- ``scratch`` probes stability every few epochs while it trains (stability-aware
  checkpoint selection is logged; the checkpoint used is the validation-best, so the
  other variants start from the usual model).

Each model: paper 002's force metrics on the held-out trajectory (global, per element,
per conformation cluster), ``--replicas`` Langevin trajectories at 500 K, 0.5 fs
(stopped on bond deviation > 0.5 Å or atom overlap), h(r) MAE of the stable part. MLflow
(experiment ``aspirin_compare``): one parent run with the comparison table and figures, a
child run per variant; the best model (most replicas stable, then t_inst, then force MAE)
is registered as ``aspirin_compare-best``. An interrupted run resumes: finished variants
and the finished stability study are reused.
"""

from __future__ import annotations

import argparse
import copy
import logging
import time
from pathlib import Path
from typing import Any

from ase_mlff.md.protocol import PROTOCOLS

log = logging.getLogger(__name__)

#: paper 001's aspirin protocol (Langevin, 2 ps⁻¹, 0.5 fs, 500 K): ase_mlff.md.protocol
ASPIRIN_MD = PROTOCOLS["aspirin_langevin"].integration()

_VARIANTS = [
    {"name": "scratch", "kind": "scratch", "train": {"lr": 1e-3}},
    {"name": "ffpt", "kind": "pretrained", "train": {"lr": 1e-4}},
    {"name": "sam", "kind": "sam", "train": {"lr": 1e-3, "optimizer": "sam", "sam_rho": 0.05}},
    {"name": "reweighted", "kind": "reweighted", "base": "scratch", "train": {"lr": 1e-4}},
    {"name": "continued", "kind": "continued", "base": "scratch", "train": {"lr": 1e-4}},
]

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "n_pretrain": 20_000,
        "study": {
            "n_train": 950,
            "n_val": 50,
            "model": {"name": "painn", "hidden": 48, "n_interactions": 3},
            "train": {
                "epochs": 60,
                "batch_size": 16,
                "max_minutes": 4.0,
                "lr_factor": 0.7,
                "lr_patience": 5,
                "threads": 1,
            },
            "md": {
                "steps": 2000,
                "replicas": 8,
                **ASPIRIN_MD,
                "record_every": 20,
            },
        },
        "variant_train": {
            "scratch": {"probe_every": 4, "probe_starts": 2, "probe_steps": 400},
            "reweighted": {"max_minutes": 2.5},
            "continued": {"max_minutes": 1.5},
        },
        "pretrain": {"epochs": 6, "batch_size": 32, "lr": 1e-4, "max_minutes": 3.0, "threads": 1},
        "continued": {
            "md": {"steps": 1000, "n_replicas": 4, "record_every": 10, "temperature_K": 800.0},
            "max_new_per_round": 40,
        },
        "rounds": 2,
    },
    "paper": {
        "n_pretrain": 100_000,
        "study": {
            "n_train": 950,
            "n_val": 50,
            "model": {"name": "painn", "hidden": 128, "n_interactions": 3},
            "train": {"epochs": 2000, "batch_size": 8, "lr_factor": 0.7, "lr_patience": 50},
            "md": {
                "steps": 600_000,
                "replicas": 16,
                **ASPIRIN_MD,
                "record_every": 200,
            },
            "seeds": [0, 1, 2],
        },
        "variant_train": {"scratch": {"probe_every": 50, "probe_starts": 4, "probe_steps": 20_000}},
        "pretrain": {"epochs": 500, "batch_size": 32, "lr": 1e-4, "lr_patience": 50},
        "continued": {
            "md": {"steps": 20_000, "n_replicas": 32, "record_every": 20, "temperature_K": 800.0},
            "max_new_per_round": 500,
        },
        "rounds": 5,
    },
}


def build_spec(
    profile: str,
    pretrain_path: Path,
    variants: list[str] | None,
    seeds: list[int] | None,
    replicas: int | None,
) -> dict[str, Any]:
    prof = PROFILES[profile]
    study = copy.deepcopy(prof["study"])
    chosen = []
    for v in copy.deepcopy(_VARIANTS):
        if variants and v["name"] not in variants:
            continue
        v["train"] = {**v["train"], **prof["variant_train"].get(v["name"], {})}
        if v["kind"] == "pretrained":
            v["pretrain_data"] = str(pretrain_path)
            v["pretrain"] = dict(prof["pretrain"])
        if v["kind"] == "continued":
            v["rounds"] = prof["rounds"]
            v["continued"] = copy.deepcopy(prof["continued"])
        chosen.append(v)
    names = {v["name"] for v in chosen}
    missing = {v["base"] for v in chosen if v.get("base")} - names
    if missing:
        raise ValueError(f"variants {sorted(names)} need their base variants {sorted(missing)}")
    if seeds:
        study["seeds"] = seeds
    if replicas:
        study["md"]["replicas"] = replicas
    return {
        "name": "aspirin_compare",
        "data": "aspirin",
        "variants": chosen,
        **study,
        "reference": {"name": "tblite"},
        "register_as": "aspirin_compare-best",
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    p.add_argument("--variants", nargs="+", default=None, help="a subset, e.g. scratch sam")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--replicas", type=int, default=None, help="MD replicas per model")
    p.add_argument("--out", type=Path, default=Path("runs/aspirin_compare"))
    p.add_argument("--experiment", default="aspirin_compare")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--seed", type=int, default=0, help="pre-training data")
    p.add_argument("--device", default="cpu", help="evaluation and MD (cuda on a GPU node)")
    p.add_argument("--gpus-per-job", type=float, default=0, help="GPUs per training task")
    act = p.add_argument_group(
        "active comparison (docs/active_comparison.md): MD in rounds after the study until "
        "each pair of variants is shown different or equivalent"
    )
    act.add_argument("--active", action="store_true", help="run the active agent")
    act.add_argument("--active-replicas", type=int, default=8, help="replicas per round")
    act.add_argument("--active-rounds", type=int, default=6, help="at most this many rounds")
    act.add_argument("--alpha", type=float, default=0.05, help="family-wise error")
    act.add_argument("--margin", type=float, default=0.10, help="equivalence, of the run")
    act.add_argument("--max-replica-ps", type=float, default=None, help="MD budget")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from ase_mlff.agents.aspirin_ffpt import pretraining_data
    from ase_mlff.agents.comparison import ComparisonAgent

    t0 = time.perf_counter()
    a.out = a.out.expanduser().resolve()
    a.out.mkdir(parents=True, exist_ok=True)
    spec = build_spec(a.profile, a.out / "pretrain_gaff.npz", a.variants, a.seeds, a.replicas)
    spec["gpus_per_job"] = a.gpus_per_job
    if a.active:
        spec["active"] = {
            "replicas_per_round": a.active_replicas,
            "max_rounds": a.active_rounds,
            "alpha": a.alpha,
            "margin": a.margin,
            "max_replica_ps": a.max_replica_ps,
        }
    from ase_mlff.agents.comparison import StudySpec

    StudySpec.from_dict(spec)  # every setting checked before any work
    if any(v["kind"] == "pretrained" for v in spec["variants"]):
        pretraining_data(a.out, PROFILES[a.profile]["n_pretrain"], a.seed)
    result = ComparisonAgent(
        spec, a.out, experiment=a.experiment, tracking_uri=a.tracking_uri, device=a.device
    ).run()
    minutes = (time.perf_counter() - t0) / 60
    print(result.table_md)
    print(
        f"best: {result.best} (registered {result.registered}); {minutes:.1f} min; "
        f"results in {a.out}"
    )
    return {
        "rows": result.rows,
        "best": result.best,
        "minutes": minutes,
        "parent_run_id": result.parent_run_id,
    }


if __name__ == "__main__":
    from ase_mlff.recipes.cli import run_recipe

    run_recipe(main)
