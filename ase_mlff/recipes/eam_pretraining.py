"""Physics-informed pre-training with a learnable EAM, on silica (paper 004).

    python -m ase_mlff.recipes.eam_pretraining --profile quick
    python -m ase_mlff.recipes.eam_pretraining --profile paper
    python -m ase_mlff.recipes.eam_pretraining --data my_silica.extxyz --n-test 300

Data: the shipped periodic silica set (GFN1-xTB energies, forces and stress; made by
:mod:`ase_mlff.recipes.make_silica_reference`) with its held-out test blocks, or any file
the readers take (extxyz with stress, e.g. the GAP-22 silica set the paper uses), split at
random. Paper 004's stress test: only ``--fraction`` (10 %) of the training pool is used,
for the EAM fit as well as for the MLIPs.

Variants, each an MLflow child run under one parent run:

- ``eam``: the EAM of Eqs. 1-3 fitted alone (AdamW, MAE of energy, forces and stress);
- ``baseline``: the MLIP trained from scratch on the quantum data;
- ``sam``: the same with sharpness-aware minimisation (paper 004's second baseline);
- ``eam_pretrained``: the training frames perturbed ``n_aug`` times (Algorithm 1, Table A.1
  silica/TorchMD-NET row: 5 rounds, 4 pulled pairs and 5 displaced sites, strengths
  [1.0, 0.0) Å), labelled by the fitted EAM (energy, forces, stress), the MLIP pre-trained
  on them and fine-tuned on the quantum data (:func:`ase_mlff.training.stage.run_stage`);
- ``hybrid``: E = E_MLIP + E_EAM (appendix B), the fitted EAM and a fresh MLIP trained
  jointly on the quantum data.

The MLIP variants train side by side in Ray tasks (:func:`ase_mlff.agents.training.
train_variants_parallel`). Evaluation:

- **Table 1**: MD of every MLIP variant from ``--starts`` test structures (100 in the paper)
  for ``--md-steps`` steps (5,000) of 2 fs at 2,000 K, NVT Langevin and NPT Berendsen, all
  replicas of a run in one batched engine; a trajectory is stopped as soon as two atoms
  come closer than half their initial minimum distance (atom overlap); the Lindemann
  criterion (local q_i > 0.25 or global > 0.2) is judged over the whole run, as the paper's
  temporal average; non-finite values, forces > 100 eV/Å or T > 10⁵ K stop a run as
  "other". The table counts the trajectories flagged by each criterion.
- **Table 2**: energy (meV/atom), force (meV/Å) and stress (GPa) MAE on the test set.
- **RDFs** (Si–O, O–O, Si–Si) of NVT runs from the four relaxed polymorphs against the
  reference GFN1-xTB NVT MD at 2,000 K from the same cells, with their MAE.
- **Force angles** (Fig. B.1): hybrid EAM part vs MLIP part; fitted EAM vs the fine-tuned
  (and the baseline) MLIP, atom by atom on the test set.
- Figures: the fitted EAM's decomposition (Fig. 2), minimum-distance histograms of the
  quantum and the pre-training data (Fig. 6b), learning curves, unphysical counts, RDFs.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ase_mlff.data import Dataset, load_dataset
from ase_mlff.data.io import SHIPPED_DATASETS, SHIPPED_DIR
from ase_mlff.data.splits import held_out_frames, holdout_split
from ase_mlff.md.protocol import PROTOCOLS
from ase_mlff.training.config import TrainConfig
from ase_mlff.training.trainer import EV_A3_TO_GPA, stress_errors

log = logging.getLogger(__name__)

VARIANTS = ("baseline", "sam", "eam_pretrained", "hybrid")
PAIRS = [("Si", "O"), ("O", "O"), ("Si", "Si")]
PAIR_NAMES = ["Si–O", "O–O", "Si–Si"]
POLYMORPHS_FILE = SHIPPED_DIR / "silica_gfn1_polymorphs.xyz"

#: Loss (every variant, the EAM too): squared errors of energy per atom (eV), forces
#: (eV/Å) and stress (eV/Å³), weights 1 : 20 : 20·160²/100, so that 1 GPa of stress error
#: weighs as 0.1 eV/Å of force error. The paper fits the EAM on the *absolute* errors;
#: here AdamW on them reached a force MAE of 1.11 eV/Å on the quick training set in
#: 3 minutes (the data's mean |F| is 1.37 eV/Å), on squared errors 0.24 eV/Å, so we use
#: squared errors (``loss_error: absolute`` switches back, see docs/recipe_eam_pretraining.md).
LOSS = {
    "loss_error": "squared",
    "energy_weight": 1.0,
    "force_weight": 20.0,
    "stress_weight": 20.0 * EV_A3_TO_GPA**2 / 100.0,
}

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "fraction": 0.1,
        "n_val": 30,
        "model": {"name": "painn", "hidden": 32, "n_interactions": 2, "cutoff": 5.0},
        "eam": {"name": "eam", "cutoff": 6.0, "n_density_terms": 2},
        "eam_train": {
            "epochs": 400,
            "batch_size": 16,
            "lr": 0.1,
            "lr_patience": 20,
            "early_stopping_patience": 60,
            "max_minutes": 3.0,
        },
        "train": {"epochs": 400, "batch_size": 4, "lr": 2e-3, "max_minutes": 5.0},
        "pretrain": {"epochs": 100, "batch_size": 8, "lr": 2e-3, "max_minutes": 4.0},
        "finetune": {"epochs": 400, "batch_size": 4, "lr": 1e-3, "max_minutes": 5.0},
        "starts": 24,
        "md_steps": 1000,
        "record_every": 10,
        "md_dtype": "float32",
    },
    "paper": {
        "fraction": 0.1,
        "n_val": 30,
        "model": {"name": "painn", "hidden": 128, "n_interactions": 3, "cutoff": 5.0},
        "eam": {"name": "eam", "cutoff": 6.0, "n_density_terms": 2},
        "eam_train": {
            "epochs": 1000,
            "batch_size": 16,
            "lr": 0.1,
            "lr_patience": 20,
            "early_stopping_patience": 100,
        },
        "train": {"epochs": 200, "batch_size": 4, "lr": 1e-3, "lr_patience": 20},
        "pretrain": {"epochs": 50, "batch_size": 8, "lr": 1e-3, "lr_patience": 10},
        "finetune": {"epochs": 200, "batch_size": 4, "lr": 5e-4, "lr_patience": 20},
        "starts": 100,
        "md_steps": 5000,
        "record_every": 20,
        "md_dtype": "float32",
    },
}

#: paper 004 Table 1 (silica): 2,000 K, 2 fs; NVT Langevin, NPT Berendsen (ASE-like)
MD_PROTOCOLS: dict[str, dict[str, Any]] = {
    "NVT": PROTOCOLS["silica_nvt"].integration(),
    "NPT": PROTOCOLS["silica_npt"].integration(),
}
CHECK_EVERY = 10


# ------------------------------------------------------------------ data
def split_silica(
    data: str, fraction: float, n_val: int, n_test: int | None, seed: int
) -> tuple[Dataset, Dataset, Dataset, Dataset]:
    """(train, val, test, reference-MD frames). The shipped set uses its held-out blocks;
    another file is split at random (``n_test`` frames, default 15 %)."""
    ds = load_dataset(data)
    if not ds.has_stress:
        raise ValueError(f"{data}: paper 004's recipe fits energies, forces and stress; no stress")
    if not 0 < fraction <= 1:
        raise ValueError(f"--fraction must be in (0, 1], got {fraction}")
    held_out = held_out_frames(data, ds) if data in SHIPPED_DATASETS else None
    rng = np.random.default_rng(seed)
    if held_out is not None:
        is_test = np.isin(np.arange(len(ds)), held_out)
    else:
        k = n_test if n_test is not None else int(round(0.15 * len(ds)))
        is_test = np.zeros(len(ds), bool)
        is_test[rng.choice(len(ds), size=k, replace=False)] = True
    pool = rng.permutation(np.flatnonzero(~is_test))
    if n_val >= len(pool):
        raise ValueError(f"only {len(pool)} frames outside the test set; n_val={n_val}")
    n_train = max(1, int(round(fraction * (len(pool) - n_val))))
    train, val = ds[np.sort(pool[n_val : n_val + n_train])], ds[np.sort(pool[:n_val])]
    md_ref = ds[np.flatnonzero(ds.config_type_s == "md_2000K")]
    return train, val, ds[np.flatnonzero(is_test)], md_ref


#: frames of the pre-training set whose largest EAM force is above this are dropped
#: (eV/Å; ~10x the largest force of the quantum data, see perturbed_dataset)
MAX_LABEL_FORCE = 100.0
#: perturbation passes (each the Table A.1 schedule with its own seed) at most, to reach
#: n_aug x N frames after dropping
MAX_PASSES = 10


def pretraining_set(train: Dataset, eam, perturb: dict, seed: int, device: str = "cpu"):
    """Algorithm 1 with Table A.1's settings, labelled by the fitted EAM, frames with EAM
    forces above :data:`MAX_LABEL_FORCE` dropped; passes with new seeds are added until
    the set has n_aug × len(train) frames (or :data:`MAX_PASSES` passes ran)."""
    from ase_mlff.reference.sampling import perturbed_dataset

    target = perturb["n_aug"] * len(train)
    parts, dropped = [], 0
    for k in range(MAX_PASSES):
        part = perturbed_dataset(
            train,
            eam,
            **perturb,
            seed=seed * 1000 + k,
            device=device,
            max_label_force=MAX_LABEL_FORCE,
        )
        dropped += part.provenance["dropped_frames"]
        if len(part):
            parts.append(part)
        if sum(len(p) for p in parts) >= target:
            break
    if not parts:
        raise RuntimeError(
            f"every perturbed frame had EAM forces above {MAX_LABEL_FORCE} eV/Å; "
            "the fitted EAM is not usable for pre-training"
        )
    pre = Dataset.concatenate(parts)
    pre = pre[np.arange(min(len(pre), target))]
    pre.provenance = {
        **parts[0].provenance,
        "passes": len(parts),
        "dropped_frames": dropped,
        "max_label_force": MAX_LABEL_FORCE,
        "n_frames": len(pre),
    }
    return pre


# ------------------------------------------------------------------ training (Ray tasks)
def _train_variant(
    kind: str,
    model_cfg: dict,
    cfgs: dict[str, dict],
    paths: dict[str, str],
    out: str,
) -> dict[str, Any]:
    """Train one MLIP variant in this process; returns its checkpoint and histories."""
    from ase_mlff.models import HybridPotential, build_model, load_model
    from ase_mlff.training.stage import run_stage

    torch.set_num_threads(1)
    train, val = Dataset.load_npz(paths["train"]), Dataset.load_npz(paths["val"])
    out_dir = Path(out)
    t0 = time.perf_counter()
    torch.manual_seed(TrainConfig(**cfgs["train"]).seed)
    if kind in ("baseline", "sam"):
        cfg = TrainConfig(**cfgs["train"])
        if kind == "sam":
            cfg = replace(cfg, optimizer="sam")
        _, res = run_stage(kind, build_model(model_cfg), train, val, cfg, out_dir)
        hist, best = {kind: res.history}, res.best_dir
    elif kind == "eam_pretrained":
        pre_data = Dataset.load_npz(paths["pretrain"])
        pre_train, pre_val = holdout_split(pre_data, 0, sort=True)
        _, pre = run_stage(
            "pretrain",
            build_model(model_cfg),
            pre_train,
            pre_val,
            TrainConfig(**cfgs["pretrain"]),
            out_dir / "pretrain",
        )
        _, fine = run_stage(
            "finetune",
            build_model(model_cfg),
            train,
            val,
            TrainConfig(**cfgs["finetune"]),
            out_dir / "finetune",
            init_from=pre.best_dir,
        )
        hist, best = {"pretrain": pre.history, "finetune": fine.history}, fine.best_dir
    elif kind == "hybrid":
        eam, _ = load_model(paths["eam"], dtype=torch.float64)
        model = HybridPotential(build_model(model_cfg), eam.config)
        model.eam.load_state_dict(eam.state_dict())
        _, res = run_stage(kind, model, train, val, TrainConfig(**cfgs["train"]), out_dir)
        hist, best = {kind: res.history}, res.best_dir
    else:
        raise ValueError(f"unknown variant {kind!r}; known: {VARIANTS}")
    return {"checkpoint": str(best), "histories": hist, "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------ evaluation
def efs_errors(model, test: Dataset) -> dict[str, float]:
    """Table 2: energy MAE (meV/atom), force MAE (meV/Å), stress MAE (GPa) on ``test``."""
    from ase_mlff.models.prediction import predict

    p = predict(model, test, batch_size=16, dtype=torch.float64, stress=True)
    de = (p["energy"] - test.energy_s) / test.n_atoms_s
    return {
        "energy_mae_meV_atom": float(np.mean(np.abs(de)) * 1e3),
        # over all force components (atom-weighted), as the paper's Table 2
        "forces_mae_meV_A": float(np.mean(np.abs(p["forces"] - test.forces_nc)) * 1e3),
        "stress_mae_GPa": stress_errors(p["stress"], test.stress_s33)["stress_mae_GPa"],
    }


def count_unphysical(reasons: list[str | None]) -> dict[str, int]:
    """Table 1's columns from the stop reasons of the replicas."""
    overlap = sum(r == "atom_overlap" for r in reasons)
    lindemann = sum(r == "lindemann" for r in reasons)
    other = sum(r is not None and r not in ("atom_overlap", "lindemann") for r in reasons)
    return {
        "atom_overlap": overlap,
        "lindemann": lindemann,
        "other": other,
        "unphysical": overlap + lindemann + other,
        "n": len(reasons),
    }


def polymorph_rdfs(
    frames_by_polymorph: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    r_max: float,
    n_bins: int,
):
    """(r, (P, n_bins)) element-pair RDFs averaged over polymorphs, each weighted equally;
    ``frames_by_polymorph``: name -> (positions (T, N, 3), numbers (N,), cell (3, 3))."""
    from ase_mlff.metrics.rdf import rdf_of_frames

    gs, r = [], None
    for pos, numbers, cell in frames_by_polymorph.values():
        if len(pos) == 0:
            continue
        r, g = rdf_of_frames(pos, PAIRS, r_max, n_bins, numbers=numbers, cell=cell)
        gs.append(g)
    if not gs:
        return None, None
    return r, np.mean(gs, axis=0)


def _polymorphs() -> list:
    import ase.io

    return ase.io.read(POLYMORPHS_FILE, ":") if POLYMORPHS_FILE.exists() else []


def reference_frames(md_ref: Dataset, names: list[str]) -> dict[str, tuple]:
    """The reference NVT frames of each polymorph (shipped set: ``source`` ids named in the
    provenance), as (positions (T, N, 3), numbers, cell); empty for other data."""
    sources = md_ref.provenance.get("sources", {})
    out = {}
    for name in names:
        ids = [int(k) for k, d in sources.items() if d == f"{name} NVT 2000 K"]
        frames = np.flatnonzero(np.isin(md_ref.extra_s.get("source", []), ids))
        if len(frames) == 0:
            continue
        sub = md_ref[frames]
        n = int(sub.n_atoms_s[0])
        out[name] = (sub.positions_nc.reshape(len(sub), n, 3), sub.numbers_n[:n], sub.cell_s33[0])
    return out


def force_angle_sets(models: dict[str, Any], eam, test: Dataset) -> dict[str, np.ndarray]:
    """Fig. B.1: hybrid EAM part vs MLIP part; the fitted EAM vs each other MLIP."""
    from ase_mlff.graph.batch import Batch
    from ase_mlff.metrics.bond_forces import force_angles
    from ase_mlff.models.hybrid import part_forces
    from ase_mlff.models.prediction import predict

    out: dict[str, np.ndarray] = {}
    f_eam = predict(eam, test, batch_size=16, dtype=torch.float64)["forces"]
    for name, model in models.items():
        if name == "hybrid":
            parts = {"eam": [], "mlip": []}
            for lo in range(0, len(test), 16):
                frames = np.arange(lo, min(lo + 16, len(test)))
                b = Batch.from_dataset(
                    test, frames, cutoff=model.cutoff, dtype=torch.float64, labels=False
                )
                for k, v in part_forces(model, b).items():
                    parts[k].append(v.numpy())
            out["hybrid: EAM part vs MLIP part"] = force_angles(
                np.concatenate(parts["eam"]), np.concatenate(parts["mlip"])
            )
        else:
            f = predict(model, test, batch_size=16, dtype=torch.float64)["forces"]
            out[f"{name} vs fitted EAM"] = force_angles(f_eam, f)
    return out


def run_md_study(
    checkpoints: dict[str, str],
    images: list,
    steps: int,
    ensemble: str,
    out_dir: Path,
    seed: int,
    prof: dict[str, Any],
    device: str = "cpu",
) -> dict[str, Any]:
    """Every model from every image for ``steps`` steps of ``ensemble`` in a Ray stability
    study (:func:`ase_mlff.agents.study.run_stability_study`, paper 004's detectors).

    Returns per model the stop reason of each replica (in image order) and the stored
    positions of each replica's physical part, ``{replica: (T, N, 3)}``."""
    from functools import partial

    from ase_mlff.agents.study import model_dirs, run_stability_study
    from ase_mlff.md.detectors import materials_detectors
    from ase_mlff.metrics.trajectory import load_study

    t0 = time.perf_counter()
    study = run_stability_study(
        list(checkpoints.values()),
        images,
        n_replicas=len(images),
        out_dir=out_dir,
        md={
            **MD_PROTOCOLS[ensemble],
            "steps": steps,
            "seed": seed,
            "check_every": CHECK_EVERY,
            "record_every": prof["record_every"],
        },
        detector_factory=partial(materials_detectors, window=max(2, steps // CHECK_EVERY)),
        dtype=prof.get("md_dtype", "float64"),
        device=device,
    )
    seconds = time.perf_counter() - t0
    dirs = model_dirs(list(checkpoints.values()))
    stored = load_study(out_dir, stable_only=True)
    out: dict[str, Any] = {"seconds": seconds, "reasons": {}, "trajectories": {}}
    for name, ckpt in checkpoints.items():
        rows = sorted((r for r in study.rows if r["model"] == ckpt), key=lambda r: r["replica_id"])
        out["reasons"][name] = [r["reason"] for r in rows]
        out["trajectories"][name] = {
            t.replica_id: t.positions_tnc for t in stored.get(dirs[ckpt], [])
        }
    return out


def unphysical_figure(table: dict[str, dict[str, dict[str, int]]]):
    """Bars of Table 1: overlap / Lindemann / other per variant, one panel per ensemble."""
    from ase_mlff.metrics.plots import _plt

    plt = _plt()
    ensembles = sorted({e for v in table.values() for e in v})
    fig, axes = plt.subplots(1, len(ensembles), figsize=(5.0 * len(ensembles), 3.4), squeeze=False)
    names = list(table)
    x = np.arange(len(names))
    for ax, ens in zip(axes[0], ensembles):
        bottom = np.zeros(len(names))
        for key, label in (
            ("atom_overlap", "atom overlap"),
            ("lindemann", "Lindemann"),
            ("other", "other"),
        ):
            h = np.array([table[n].get(ens, {}).get(key, 0) for n in names], dtype=float)
            ax.bar(x, h, bottom=bottom, label=label)
            bottom += h
        n = max((table[v].get(ens, {}).get("n", 0) for v in names), default=0)
        ax.set(title=f"{ens}: unphysical trajectories (of {n})", ylabel="trajectories")
        ax.set_xticks(x, names, rotation=15)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def tables(results: dict[str, Any]) -> str:
    """Markdown: Table 1 (unphysical counts), Table 2 (EFS MAE), RDF MAE, force angles."""
    lines = [
        "**Table 1** — trajectories flagged (of the replicas started from test structures)",
        "",
        "| setup | ensemble | atom overlap | Lindemann | other | stable |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in results["variants"].items():
        for ens, c in v.get("md", {}).items():
            lines.append(
                f"| {name} | {ens} | {c['atom_overlap']} | {c['lindemann']} | {c['other']} | "
                f"{c['n'] - c['unphysical']}/{c['n']} |"
            )
    lines += [
        "",
        "**Table 2** — test-set errors",
        "",
        "| setup | energy MAE (meV/atom) | force MAE (meV/Å) | stress MAE (GPa) |",
        "|---|---|---|---|",
    ]
    for name, v in results["variants"].items():
        if "test" not in v:
            lines.append(f"| {name} | failed: {str(v.get('error', '?'))[:60]} | | |")
            continue
        t = v["test"]
        lines.append(
            f"| {name} | {t['energy_mae_meV_atom']:.2f} | {t['forces_mae_meV_A']:.1f} | "
            f"{t['stress_mae_GPa']:.3f} |"
        )
    rdf_rows = [(n, v["rdf_mae"]) for n, v in results["variants"].items() if "rdf_mae" in v]
    if rdf_rows:
        lines += ["", "**RDF MAE** (∫|g − g_ref| dr, NVT 2,000 K from the relaxed polymorphs)", ""]
        lines += [
            "| setup | " + " | ".join(PAIR_NAMES) + " |",
            "|---" * (len(PAIR_NAMES) + 1) + "|",
        ]
        for n, m in rdf_rows:
            lines.append(f"| {n} | " + " | ".join(f"{m[p]:.3f}" for p in PAIR_NAMES) + " |")
    if results.get("force_angles"):
        lines += ["", "**Force angles** (Fig. B.1), degrees", "", "| pair | median | > 90° |"]
        lines.append("|---|---|---|")
        for k, s in results["force_angles"].items():
            lines.append(f"| {k} | {s['median']:.1f} | {100 * s['frac_above_90']:.1f} % |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    p.add_argument("--data", default="silica", help="shipped name or a file with stress labels")
    p.add_argument("--fraction", type=float, default=None, help="share of the training pool")
    p.add_argument("--n-test", type=int, default=None, help="test frames (files only)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    p.add_argument("--starts", type=int, default=None, help="MD replicas from test structures")
    p.add_argument("--md-steps", type=int, default=None)
    p.add_argument("--ensembles", default="NVT,NPT")
    p.add_argument(
        "--minutes", type=float, default=None, help="budget of each training stage (EAM too)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("runs") / "eam_pretraining")
    p.add_argument("--experiment", default="eam_pretraining")
    p.add_argument("--tracking-uri", default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    variants = [v for v in a.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    ensembles = [e for e in a.ensembles.split(",") if e]
    if unknown or not variants:
        raise SystemExit(f"--variants: unknown {sorted(unknown)}; choose from {VARIANTS}")
    if set(ensembles) - set(MD_PROTOCOLS):
        raise SystemExit(f"--ensembles: choose from {sorted(MD_PROTOCOLS)}")
    return run(a, variants, ensembles)


def run(a: argparse.Namespace, variants: list[str], ensembles: list[str]) -> dict[str, Any]:
    from ase_mlff.agents.training import train_variants_parallel
    from ase_mlff.data.perturbation import PAPER_SETTINGS
    from ase_mlff.metrics.bond_forces import force_angle_figure
    from ase_mlff.metrics.distance_distribution import min_distance_figure, min_pair_distances
    from ase_mlff.metrics.plots import learning_curve_figure
    from ase_mlff.metrics.rdf import rdf_figure, rdf_mae
    from ase_mlff.models import build_model, load_model
    from ase_mlff.models.eam import decomposition_figure
    from ase_mlff.tracking import Tracker
    from ase_mlff.training.stage import run_stage

    prof = PROFILES[a.profile]
    fraction = a.fraction if a.fraction is not None else prof["fraction"]
    starts_n = a.starts if a.starts is not None else prof["starts"]
    md_steps = a.md_steps if a.md_steps is not None else prof["md_steps"]
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    train, val, test, md_ref = split_silica(a.data, fraction, prof["n_val"], a.n_test, a.seed)
    model_cfg = {**prof["model"], "species": train.species}
    base = {"seed": a.seed, "device": a.device, "dtype": "float32", **LOSS}
    cfgs = {
        k: asdict(
            TrainConfig(**{**base, **prof[k], **({"max_minutes": a.minutes} if a.minutes else {})})
        )
        for k in ("train", "pretrain", "finetune")
    }
    eam_over = {"max_minutes": a.minutes} if a.minutes else {}
    eam_cfg = TrainConfig(**{**base, **prof["eam_train"], **eam_over, "dtype": "float64"})
    perturb = PAPER_SETTINGS["silica"]["torchmd"]
    protocol = {
        "profile": a.profile,
        "data": a.data,
        "data_provenance_method": train.provenance.get("method"),
        "fraction": fraction,
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
        "model": model_cfg,
        "eam": prof["eam"],
        "loss": LOSS,
        "perturbation": perturb,
        "train": cfgs,
        "eam_train": asdict(eam_cfg),
        "md": {
            "steps": md_steps,
            "starts": starts_n,
            "check_every": CHECK_EVERY,
            **{e: MD_PROTOCOLS[e] for e in ensembles},
        },
        "variants": variants,
    }
    tracker = Tracker(a.experiment, uri=a.tracking_uri)
    results: dict[str, Any] = {"protocol": protocol, "variants": {}}
    figures: dict[str, Any] = {}
    with tracker.run(
        f"eam_pretraining-{time.strftime('%Y%m%d-%H%M%S')}",
        params=protocol,
        tags={"recipe": "eam_pretraining", "paper": "004"},
    ) as parent:
        paths = {"train": str(out / "train.npz"), "val": str(out / "val.npz")}
        train.save_npz(paths["train"])
        val.save_npz(paths["val"])

        # 1. the EAM alone on the quantum data (fast: a few hundred parameters)
        torch.manual_seed(a.seed)
        with tracker.run("eam", params={"variant": "eam"}, parent=parent) as run_h:
            eam0 = build_model({**prof["eam"], "species": train.species}).double()
            run_h.log_params(
                {f"e_atom_init.{k}": v for k, v in eam0.fit_atomic_energies(train).items()}
            )
            eam, eam_res = run_stage(
                "eam", eam0, train, val, eam_cfg, out / "eam", log_fn=run_h.log_metrics
            )
            paths["eam"] = str(eam_res.best_dir)
            eam = eam.double().eval()
            res_eam = {"test": efs_errors(eam, test)}
            run_h.log_metrics({f"test_{k}": v for k, v in res_eam["test"].items()})
            run_h.log_artifact(eam_res.best_dir, "checkpoint")
            results["variants"]["eam"] = res_eam
            for pair in (("Si", "O"), ("O", "O"), ("Si", "Si")):
                figures[f"eam_decomposition_{pair[0]}{pair[1]}.png"] = decomposition_figure(
                    eam, pair
                )
            if eam_res.history:
                figures["learning_curve_eam.png"] = learning_curve_figure(eam_res.history)

        # 2. the EAM-labelled pre-training set (Algorithm 1, Table A.1)
        pre_path = out / "pretrain_eam.npz"
        if "eam_pretrained" in variants:
            if pre_path.exists():
                pre = Dataset.load_npz(pre_path)
            else:
                pre = pretraining_set(train, eam, perturb, a.seed, a.device)
                pre.save_npz(pre_path)
            paths["pretrain"] = str(pre_path)
            parent.log_dict(
                {k: v for k, v in pre.provenance.items() if k != "sources"},
                "pretrain_data_provenance.json",
            )
            md_qm = min_pair_distances(train, PAIRS)
            md_pre = min_pair_distances(pre, PAIRS)
            figures["min_distances.png"] = min_distance_figure(
                {"quantum training set": md_qm, "EAM pre-training set": md_pre}
            )
            results["min_distance_A"] = {
                k: {
                    "quantum": float(np.nanmin(md_qm[k])),
                    "pretraining": float(np.nanmin(md_pre[k])),
                }
                for k in md_qm
            }

        # 3. the MLIP variants, side by side in Ray tasks
        jobs = [
            {
                "name": v,
                "fn": _train_variant,
                "kwargs": {
                    "kind": v,
                    "model_cfg": model_cfg,
                    "cfgs": cfgs,
                    "paths": paths,
                    "out": str(out / v),
                },
            }
            for v in sorted(variants, key=lambda v: v != "eam_pretrained")  # longest first
        ]
        rows = {r["name"]: r for r in train_variants_parallel(jobs, cpus_per_job=1)}
        models: dict[str, Any] = {}
        handles: dict[str, Any] = {}
        for v in variants:
            row = rows[v]
            with tracker.run(v, params={"variant": v}, parent=parent) as run_h:
                handles[v] = run_h
                if not row["ok"]:
                    log.error("variant %s failed: %s", v, row["error"])
                    run_h.set_tag("error", str(row["error"])[:500])
                    results["variants"][v] = {"error": row["error"]}
                    continue
                r = row["result"]
                for stage, hist in r["histories"].items():
                    prefix = "" if len(r["histories"]) == 1 else f"{stage}_"
                    for h in hist:
                        run_h.log_metrics(
                            {
                                f"{prefix}{k}": x
                                for k, x in h.items()
                                if isinstance(x, (int, float)) and k != "epoch"
                            },
                            step=int(h["epoch"]),
                        )
                    if hist:
                        figures[f"learning_curve_{v}_{stage}.png"] = learning_curve_figure(hist)
                model, _ = load_model(r["checkpoint"], dtype=torch.float64)
                models[v] = model.eval()
                res = {"test": efs_errors(model, test), "train_seconds": r["seconds"]}
                run_h.log_metrics({f"test_{k}": x for k, x in res["test"].items()})
                run_h.log_artifact(r["checkpoint"], "checkpoint")
                results["variants"][v] = res

        # 4. force angles (Fig. B.1)
        angles = force_angle_sets(models, eam, test)
        if angles:
            figures["force_angles.png"] = force_angle_figure(angles)
            results["force_angles"] = {
                k: {"median": float(np.median(t)), "frac_above_90": float(np.mean(t > 90))}
                for k, t in angles.items()
            }

        # 5. MD (Ray trajectory agents, one batched engine each): Table 1 and the RDFs
        rng = np.random.default_rng(a.seed)
        pick = np.sort(rng.choice(len(test), size=min(starts_n, len(test)), replace=False))
        starts = [test.to_atoms(int(i), with_labels=False) for i in pick]
        polys = {x.info["polymorph"]: x for x in _polymorphs()}
        ref_frames = reference_frames(md_ref, list(polys))
        polys = {n: polys[n] for n in ref_frames}  # those with a reference MD
        r_max, n_bins = 5.0, 100
        r, g_ref = polymorph_rdfs(ref_frames, r_max, n_bins)
        curves: dict[str, dict[str, np.ndarray]] = {n: {} for n in PAIR_NAMES}
        if g_ref is not None:
            for k, n in enumerate(PAIR_NAMES):
                curves[n]["GFN1-xTB (reference)"] = g_ref[k]
        checkpoints = {v: str(rows[v]["result"]["checkpoint"]) for v in models}
        for ens in ensembles:
            images = starts + (list(polys.values()) if ens == "NVT" else [])
            study = run_md_study(
                checkpoints, images, md_steps, ens, out / f"md_{ens}", a.seed, prof, a.device
            )
            for v in models:
                reasons = study["reasons"][v]
                counts = count_unphysical(reasons[: len(starts)])
                counts["seconds"] = study["seconds"]
                results["variants"][v].setdefault("md", {})[ens] = counts
                handles[v].log_metrics({f"md_{ens}_{k}": float(x) for k, x in counts.items()})
                trajs = study["trajectories"][v]
                if ens == "NVT" and g_ref is not None:
                    frames = {
                        n: (trajs[len(starts) + k], atoms.numbers, np.asarray(atoms.cell[:]))
                        for k, (n, atoms) in enumerate(polys.items())
                        if trajs.get(len(starts) + k) is not None
                    }
                    _, g = polymorph_rdfs(frames, r_max, n_bins)
                    if g is not None:
                        m = rdf_mae(g, g_ref, r_max)
                        mae = {n: float(m[k]) for k, n in enumerate(PAIR_NAMES)}
                        results["variants"][v]["rdf_mae"] = mae
                        handles[v].log_metrics(
                            {f"rdf_mae_{n.replace('–', '')}": x for n, x in mae.items()}
                        )
                        for k, n in enumerate(PAIR_NAMES):
                            curves[n][v] = g[k]
            parent.log_artifact(out / f"md_{ens}" / "t_inst.csv", f"md_{ens}")
        if results["variants"] and any("md" in x for x in results["variants"].values()):
            figures["unphysical.png"] = unphysical_figure(
                {v: x["md"] for v, x in results["variants"].items() if "md" in x}
            )
        if r is not None and any(len(c) > 1 for c in curves.values()):
            figures["rdf.png"] = rdf_figure(r, curves, "NVT 2,000 K, relaxed polymorphs")

        (out / "figures").mkdir(exist_ok=True)
        for fname, fig in figures.items():
            fig.savefig(out / "figures" / fname, dpi=120, bbox_inches="tight")
            parent.log_figure(fig, fname)
        table = tables(results)
        results["total_minutes"] = (time.perf_counter() - t_start) / 60
        (out / "comparison.md").write_text(table)
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        parent.log_artifact(out / "comparison.md")
        parent.log_artifact(out / "results.json")
        parent.log_metrics({"total_minutes": results["total_minutes"]})
    print(table)
    print(f"results in {out}; {results['total_minutes']:.1f} min; MLflow store: {tracker.uri}")
    return results


if __name__ == "__main__":
    main()
