"""Which training strategy gives the more stable model, on any dataset: every variant of
the papers trained at equal optimiser steps on the same data, judged by force metrics and
MD stability, and (``--active``) an active verdict with stated confidence.

    python -m ase_mlff.recipes.compare --data aspirin --profile quick
    python -m ase_mlff.recipes.compare --data my_molecule.extxyz --variants scratch sam ffpt \\
        --smiles 'CCO' --seeds 0 1 2 --active
    python -m ase_mlff.recipes.compare --data aspirin --profile showcase   # ~3 h, 2 cores
    RAY_ADDRESS=auto python -m ase_mlff.recipes.compare --data aspirin --profile paper

``--data``: a shipped dataset name or any file :func:`ase_mlff.data.load_dataset` reads
(extxyz with energies and forces, MD17/rMD17 npz, ASE db, the native npz). Every frame
must hold the same atoms in the same order (one molecule, or one periodic cell): the
conformation clusters, the start structures and h(r) assume it. A shipped set is split by
its held-out trajectories; a user's file at random (the test set: every frame not drawn
for training or validation), and its MD starts are spread over the test frames.

Variants (same architecture except ``pretrained``, same fine-tuning data;
docs/recipe_compare.md):

- ``scratch``: trained from its initial weights (lr 1e-3).
- ``ffpt``: pre-trained on classical-force-field labels of rattled structures
  (x + 0.2 Å·ε, paper 001), then every weight fine-tuned (lr 1e-4, reference energies
  refitted). The force field: ``--ff`` names a parameter folder (or ``aspirin``, shipped);
  ``--ff gaff`` parametrises GAFF-2.11/AM1-BCC for the data's molecule through AmberTools
  (``pip install 'ase_mlff[gaff]'``; from ``--smiles`` or, without it, from the bonds
  RDKit perceives in the first frame). Where neither is possible (a periodic system, no
  AmberTools) the recipe says so before any work.
- ``sam``: scratch with sharpness-aware minimisation (ρ = 0.05), paper 004's baseline.
- ``reweighted``: ``scratch`` fine-tuned with per-frame weights from its per-cluster
  ratio of bad points (paper 002).
- ``continued``: ``scratch`` continued by active learning (paper 002): MD at 800 K,
  unexplored and pre-instability frames labelled with ``--reference`` (GFN2-xTB through
  tblite by default) in Ray tasks, added, retrained.
- ``pretrained`` (only when named in ``--variants``): paper 000's protocol, a model
  pre-trained on a large diverse set (``--checkpoint``, default the shipped
  ``organic-painn``, GFN2-xTB on 419 CHNO molecules) with every weight fine-tuned on the
  data (lr 1e-4, reference energies refitted). It keeps the checkpoint's architecture.

**Fair budgets.** scratch, sam and ffpt's fine-tuning take the same number of epochs on
the same frames with the same batch size, so the same optimiser steps (early stopping off;
``max_minutes`` is only a guard, and the table says when it cut a run short).
Pre-training and fine-tuning budgets are set (``--epochs``, ``--pretrain-epochs``) and
reported separately, in optimiser steps.

**Stress protocols** (``--protocol``): ``nvt`` (Langevin at ``--temperature``, paper 003's
fixed-temperature t_inst), ``ramp`` (Langevin heated linearly to ``--temperature-end``
over the run: the failure temperature, as MLIP Arena's heating test). Either is the MD of
the stability study and of the active rounds. ``--nve-gate STEPS`` adds the NVE
energy-drift gate (velocity Verlet, the drift of the total energy with its 95 %
interval; a model passes inside ± ``--nve-max-drift`` meV/atom/ps): a model can stay
"stable" to the detectors while heating up, which only NVE shows.

MLflow (experiment ``--experiment``): one parent run with the comparison table and
figures, a child run per variant and seed, the active agent's child run with a step per
round; the best model (the active verdict's winner, else the most stable by the criterion)
is registered as ``<name>-best``. An interrupted comparison resumes: finished variants,
the finished stability study and the finished active rounds are reused.
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

VARIANTS = ("scratch", "ffpt", "sam", "reweighted", "continued", "pretrained")
#: run only when asked for (``--variants``): it needs a pre-trained model of the data's
#: elements
OPTIONAL_VARIANTS = ("pretrained",)
#: the pre-trained model the ``pretrained`` variant fine-tunes by default (shipped)
DEFAULT_CHECKPOINT = "organic-painn"

_VARIANTS = [
    {"name": "scratch", "kind": "scratch", "train": {"lr": 1e-3}},
    {"name": "ffpt", "kind": "pretrained", "train": {"lr": 1e-4}},
    {"name": "sam", "kind": "sam", "train": {"lr": 1e-3, "optimizer": "sam", "sam_rho": 0.05}},
    {"name": "reweighted", "kind": "reweighted", "base": "scratch", "train": {"lr": 1e-4}},
    {"name": "continued", "kind": "continued", "base": "scratch", "train": {"lr": 1e-4}},
    {"name": "pretrained", "kind": "pretrained", "train": {"lr": 1e-4}},
]

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "n_pretrain": 20_000,
        "study": {
            "n_train": 950,
            "n_val": 50,
            "model": {"name": "painn", "hidden": 48, "n_interactions": 3},
            "train": {
                "epochs": 40,  # 950 / 16 -> 60 steps per epoch, 2,400 in all
                "batch_size": 16,
                "stop_early": False,
                "max_minutes": 12.0,  # a guard: the budget is the epochs
                "lr_factor": 0.7,
                "lr_patience": 5,
                "threads": 1,
            },
            "md": {"steps": 2000, "replicas": 8, **ASPIRIN_MD, "record_every": 20},
        },
        "variant_train": {
            "scratch": {"probe_every": 4, "probe_starts": 2, "probe_steps": 400},
            "reweighted": {"epochs": 10},
            "continued": {"epochs": 5},
        },
        "pretrain": {"epochs": 2, "batch_size": 32, "lr": 1e-4, "stop_early": False, "threads": 1},
        "continued": {
            "md": {"steps": 1000, "n_replicas": 4, "record_every": 10, "temperature_K": 800.0},
            "max_new_per_round": 40,
        },
        "rounds": 2,
    },
    # issue 15's showcase: few frames, so that failures occur within reach; 3 training
    # seeds; every variant at equal optimiser steps (200 frames / 16 = 13 per epoch);
    # the active verdict at 500 K (docs/recipe_compare.md)
    "showcase": {
        "n_pretrain": 20_000,
        "study": {
            "n_train": 200,
            "n_val": 50,
            "model": {"name": "painn", "hidden": 48, "n_interactions": 3},
            "train": {
                "epochs": 200,
                "batch_size": 16,
                "stop_early": False,
                "max_minutes": 30.0,  # a guard: the budget is the epochs
                "lr_factor": 0.7,
                "lr_patience": 10,
                "threads": 1,
            },
            # a heating ramp from paper 001's 500 K to 1,000 K over 5 ps (100 K/ps): at a
            # fixed 500 K one replica in eight of a 200-frame model failed within 5 ps,
            # at 800 K seven in eight (docs/recipe_compare.md)
            "md": {
                "steps": 10_000,
                "replicas": 4,
                **ASPIRIN_MD,
                "temperature_end_K": 1000.0,
                "record_every": 50,
            },
            "seeds": [0, 1, 2],
        },
        "variant_train": {"reweighted": {"epochs": 50}, "continued": {"epochs": 50}},
        "pretrain": {
            "epochs": 2,
            "batch_size": 32,
            "lr": 1e-3,
            "stop_early": False,
            "max_minutes": 30.0,
            "threads": 1,
        },
        "continued": {
            "md": {"steps": 1000, "n_replicas": 4, "record_every": 10, "temperature_K": 800.0},
            "max_new_per_round": 40,
        },
        "rounds": 2,
        "active": {"replicas_per_round": 6, "max_rounds": 8, "max_minutes": 60.0},
        "md_dtype": "float32",
    },
    "paper": {
        "n_pretrain": 100_000,
        "study": {
            "n_train": 950,
            "n_val": 50,
            "model": {"name": "painn", "hidden": 128, "n_interactions": 3},
            "train": {
                "epochs": 2000,
                "batch_size": 8,
                "stop_early": False,
                "lr_factor": 0.7,
                "lr_patience": 50,
            },
            "md": {"steps": 600_000, "replicas": 16, **ASPIRIN_MD, "record_every": 200},
            "seeds": [0, 1, 2],
        },
        "variant_train": {
            "scratch": {"probe_every": 50, "probe_starts": 4, "probe_steps": 20_000},
            "reweighted": {"epochs": 500},
            "continued": {"epochs": 200},
        },
        "pretrain": {"epochs": 500, "batch_size": 32, "lr": 1e-4, "stop_early": False},
        "continued": {
            "md": {"steps": 20_000, "n_replicas": 32, "record_every": 20, "temperature_K": 800.0},
            "max_new_per_round": 500,
        },
        "rounds": 5,
    },
}


def build_spec(
    profile: str,
    data: str,
    pretrain_path: Path,
    variants: list[str] | None,
    seeds: list[int] | None,
    replicas: int | None,
    name: str = "compare",
    checkpoint: str = DEFAULT_CHECKPOINT,
) -> dict[str, Any]:
    """The study spec (:class:`~ase_mlff.agents.comparison.StudySpec` as a dict) of a
    profile for ``data``, with the chosen variants, seeds and replicas (``pretrained``
    only when named; it fine-tunes ``checkpoint``)."""
    prof = PROFILES[profile]
    study = copy.deepcopy(prof["study"])
    chosen = []
    for v in copy.deepcopy(_VARIANTS):
        if v["name"] not in (variants or [n for n in VARIANTS if n not in OPTIONAL_VARIANTS]):
            continue
        v["train"] = {**v["train"], **prof["variant_train"].get(v["name"], {})}
        if v["name"] == "pretrained":
            v["checkpoint"] = checkpoint
        elif v["kind"] == "pretrained":
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
        "name": name,
        "data": data,
        "variants": chosen,
        **study,
        "reference": {"name": "tblite"},
        "register_as": f"{name}-best",
    }


def parser(defaults: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    """The command line (``defaults``: a preset's, e.g. aspirin_compare's)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", help="a shipped dataset name or a file (see above)")
    p.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    p.add_argument("--variants", nargs="+", default=None, choices=VARIANTS, metavar="VARIANT")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds")
    p.add_argument("--model", default=None, help="architecture (painn, schnet; default painn)")
    p.add_argument("--n-train", type=int, default=None, help="training frames")
    p.add_argument("--n-val", type=int, default=None, help="validation frames")
    p.add_argument("--epochs", type=int, default=None, help="the training budget, every variant")
    p.add_argument("--pretrain-epochs", type=int, default=None, help="ffpt's pre-training")
    p.add_argument("--replicas", type=int, default=None, help="MD replicas per model")
    p.add_argument("--ff", default=None, help="ffpt's force field: gaff, aspirin or a folder")
    p.add_argument("--smiles", default=None, help="the molecule, for --ff gaff")
    p.add_argument("--charge", type=int, default=None, help="net charge, for --ff gaff")
    p.add_argument("--reference", default="tblite", help="continued's labels (tblite, ...)")
    p.add_argument(
        "--checkpoint",
        default=None,
        help=f"the pre-trained model 'pretrained' fine-tunes (default {DEFAULT_CHECKPOINT})",
    )
    md = p.add_argument_group("the stress protocol of the stability study and active rounds")
    md.add_argument(
        "--protocol", default=None, choices=["nvt", "ramp"], help="default: the profile's"
    )
    md.add_argument("--temperature", type=float, default=None, help="K (default 500)")
    md.add_argument("--temperature-end", type=float, default=None, help="ramp: final K")
    md.add_argument("--steps", type=int, default=None, help="MD steps per replica")
    md.add_argument("--md-dtype", default=None, choices=["float32", "float64"])
    md.add_argument(
        "--nve-gate", type=int, default=0, metavar="STEPS", help="NVE drift gate (0: off)"
    )
    md.add_argument("--nve-max-drift", type=float, default=None, help="meV/atom/ps (1)")
    p.add_argument("--name", default=None, help="the study's name (MLflow, registry)")
    p.add_argument("--out", type=Path, default=None, help="default runs/<name>")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default: name)")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--seed", type=int, default=0, help="pre-training data")
    p.add_argument("--device", default="cpu", help="evaluation and MD (cuda on a GPU node)")
    p.add_argument("--gpus-per-job", type=float, default=0, help="GPUs per training task")
    act = p.add_argument_group(
        "active comparison (docs/active_comparison.md): MD in rounds after the study until "
        "each pair of variants is shown different or equivalent"
    )
    act.add_argument("--active", action="store_true", help="run it (the showcase always does)")
    act.add_argument("--active-replicas", type=int, default=None, help="per round (8)")
    act.add_argument("--active-rounds", type=int, default=None, help="at most (6)")
    act.add_argument("--alpha", type=float, default=0.05, help="family-wise error")
    act.add_argument("--margin", type=float, default=0.10, help="equivalence, of the run")
    act.add_argument("--max-replica-ps", type=float, default=None, help="MD budget")
    act.add_argument("--active-minutes", type=float, default=None, help="wall-clock budget")
    if defaults:
        p.set_defaults(**defaults)
    return p


def spec_from_args(a: argparse.Namespace) -> dict[str, Any]:
    """The study spec the command line asks for (checked by the caller)."""
    prof = PROFILES[a.profile]
    spec = build_spec(
        a.profile,
        a.data,
        a.out / "pretrain_ff.npz",
        a.variants,
        a.seeds,
        a.replicas,
        a.name,
        checkpoint=a.checkpoint or DEFAULT_CHECKPOINT,
    )
    spec["gpus_per_job"] = a.gpus_per_job
    spec["reference"] = {"name": a.reference}
    if a.model:
        spec["model"] = {**spec["model"], "name": a.model}
    for key in ("n_train", "n_val"):
        if getattr(a, key) is not None:
            spec[key] = getattr(a, key)
    if a.epochs is not None:
        spec["train"]["epochs"] = a.epochs
    for v in spec["variants"]:
        if a.epochs is not None and v["kind"] in ("scratch", "sam", "pretrained"):
            v["train"].pop("epochs", None)  # one budget; reweighted/continued keep theirs
        if v.get("pretrain_data") and a.pretrain_epochs is not None:
            v["pretrain"]["epochs"] = a.pretrain_epochs
    _protocol(spec["md"], a)
    _check_unused(a, spec)
    if a.nve_gate:
        spec["nve_gate"] = {"steps": a.nve_gate}
        if a.nve_max_drift is not None:
            spec["nve_gate"]["max_drift_meV_per_atom_ps"] = a.nve_max_drift
    given = {
        "replicas_per_round": a.active_replicas,
        "max_rounds": a.active_rounds,
        "max_replica_ps": a.max_replica_ps,
        "max_minutes": a.active_minutes,
    }
    if not (a.active or "active" in prof):
        if any(v is not None for v in given.values()):
            raise ValueError("the --active-*/--max-replica-ps options need --active")
    else:
        spec["active"] = {
            "replicas_per_round": 8,
            "max_rounds": 6,
            **prof.get("active", {}),
            **{k: v for k, v in given.items() if v is not None},
            "alpha": a.alpha,
            "margin": a.margin,
        }
    return spec


def _protocol(md: dict[str, Any], a: argparse.Namespace) -> None:
    """The stress protocol into the study's ``md``: the profile's unless ``--protocol``
    says otherwise (``nvt`` drops a profile's ramp; ``ramp`` keeps its end temperature
    unless ``--temperature-end`` gives one)."""
    if a.temperature is not None:
        md["temperature_K"] = a.temperature
    if a.steps is not None:
        md["steps"] = a.steps
    protocol = a.protocol or ("ramp" if "temperature_end_K" in md else "nvt")
    if protocol == "nvt":
        if a.temperature_end is not None:
            raise ValueError("--temperature-end belongs to --protocol ramp")
        md.pop("temperature_end_K", None)
        return
    if a.temperature_end is not None:
        md["temperature_end_K"] = a.temperature_end
    if "temperature_end_K" not in md:
        raise ValueError("--protocol ramp needs --temperature-end (K)")


def _check_unused(a: argparse.Namespace, spec: dict[str, Any]) -> None:
    """Options that would be silently ignored are an error, before any work."""
    ffpt = any(v.get("pretrain_data") for v in spec["variants"])
    if a.checkpoint is not None and not any(v.get("checkpoint") for v in spec["variants"]):
        raise ValueError("--checkpoint would be ignored: it belongs to the 'pretrained' variant")
    unused = [
        flag
        for flag, given, used in (
            ("--ff", a.ff, ffpt),
            ("--smiles", a.smiles, ffpt),
            ("--charge", a.charge, ffpt),
            ("--pretrain-epochs", a.pretrain_epochs, ffpt),
            ("--nve-max-drift", a.nve_max_drift, bool(a.nve_gate)),
        )
        if given is not None and not used
    ]
    if unused:
        raise ValueError(
            f"{', '.join(unused)} would be ignored: "
            + ("they belong to ffpt, which is not among the variants" if not ffpt else "")
            + ("; --nve-max-drift needs --nve-gate STEPS" if "--nve-max-drift" in unused else "")
        )


def _check_checkpoints(spec: dict[str, Any]) -> None:
    """A ``pretrained`` variant's checkpoint exists and knows the data's elements, before
    any work."""
    from ase_mlff.agents.training import checkpoint_model
    from ase_mlff.data import load_dataset

    wanted = {v["checkpoint"] for v in spec["variants"] if v.get("checkpoint")}
    if wanted:
        ds = load_dataset(spec["data"])
        for ckpt in sorted(wanted):
            checkpoint_model(ckpt, ds)


def main(argv: list[str] | None = None, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    a = parser(defaults).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from ase_mlff.agents.comparison import ComparisonAgent, StudySpec, check_study_data
    from ase_mlff.agents.ff_pretraining import classical_pretraining_data, resolve_force_field

    if not a.data:
        raise ValueError("--data is required: a shipped dataset name or a file")
    t0 = time.perf_counter()
    a.name = a.name or "compare"
    a.out = (a.out or Path("runs") / a.name).expanduser().resolve()
    spec = spec_from_args(a)
    StudySpec.from_dict(spec)  # every setting checked before any work
    check_study_data(spec)
    _check_checkpoints(spec)
    ffpt = any(v.get("pretrain_data") for v in spec["variants"])
    # the force field is resolved (and AmberTools looked for) before any work
    ff = resolve_force_field(a.data, a.ff, a.smiles, a.charge) if ffpt else None
    a.out.mkdir(parents=True, exist_ok=True)
    if ffpt:
        classical_pretraining_data(
            a.out / "pretrain_ff.npz", ff, a.out / "ff", PROFILES[a.profile]["n_pretrain"], a.seed
        )
    result = ComparisonAgent(
        spec,
        a.out,
        experiment=a.experiment or a.name,
        tracking_uri=a.tracking_uri,
        device=a.device,
        md_dtype=a.md_dtype or PROFILES[a.profile].get("md_dtype"),
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
        "verdict": result.verdict,
    }


if __name__ == "__main__":
    from ase_mlff.recipes.cli import run_recipe

    run_recipe(main)
