"""Paper 004's study, end to end: physics-informed pre-training with a learnable EAM, on
silica (the ``eam_pretraining`` recipe is its command line).

    from ase_mlff.agents.eam_pretraining import StudyOptions, eam_pretraining_study
    from ase_mlff.recipes.eam_pretraining import PROFILES
    outcome = eam_pretraining_study(PROFILES["quick"], StudyOptions(out=Path("ept")))
    print(outcome.table)

The steps, in one MLflow parent run with a child run for the EAM and for each variant:

1. the EAM fitted alone on the quantum training frames;
2. the EAM-labelled pre-training set (:func:`ase_mlff.reference.eam_pretraining.
   pretraining_set`), its minimum-distance figure (Fig. 6b);
3. the MLIP :data:`VARIANTS` side by side in Ray tasks (:func:`train_variant`, every stage
   through :func:`ase_mlff.training.stage.run_stage`), Table 2 on the test set;
4. force angles (Fig. B.1, :func:`ase_mlff.metrics.silica.force_angle_sets`);
5. per ensemble a Ray stability study of every variant (:func:`run_md_study`): Table 1 from
   the test starts, RDFs of the relaxed polymorphs' NVT runs against the reference MD;
6. figures, ``comparison.md`` and ``results.json`` in ``out``.

``profile`` is a dict of the recipe's ``PROFILES`` (model, EAM, training stages, MD);
:class:`StudyOptions` holds the command line's choices.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ase_mlff.agents.study import StudyOutcome, model_dirs, run_stability_study
from ase_mlff.agents.training import train_variants_parallel
from ase_mlff.data.dataset import Dataset
from ase_mlff.data.io import SHIPPED_DIR
from ase_mlff.data.perturbation import PAPER_SETTINGS
from ase_mlff.data.splits import holdout_split, split_silica
from ase_mlff.md.detectors import materials_detectors
from ase_mlff.md.protocol import PROTOCOLS
from ase_mlff.metrics.bond_forces import force_angle_figure
from ase_mlff.metrics.distance_distribution import min_distance_figure, min_pair_distances
from ase_mlff.metrics.errors import EV_A3_TO_GPA, efs_errors
from ase_mlff.metrics.plots import learning_curve_figure
from ase_mlff.metrics.rdf import rdf_figure, rdf_mae
from ase_mlff.metrics.silica import (
    PAIR_NAMES,
    PAIRS,
    count_unphysical,
    force_angle_sets,
    polymorph_rdfs,
    reference_frames,
    tables,
    unphysical_figure,
)
from ase_mlff.metrics.trajectory import load_study
from ase_mlff.models import HybridPotential, build_model, load_model
from ase_mlff.models.eam import decomposition_figure
from ase_mlff.reference.eam_pretraining import pretraining_set
from ase_mlff.training.config import TrainConfig
from ase_mlff.training.stage import run_stage

log = logging.getLogger(__name__)

VARIANTS = ("baseline", "sam", "eam_pretrained", "hybrid")
POLYMORPHS_FILE = SHIPPED_DIR / "silica_gfn1_polymorphs.xyz"

#: Loss (every variant, the EAM too): the paper's mean *absolute* errors (§2.2.2, "minimizing
#: the Mean Absolute Error (MAE) of energies, forces, and stress") of energy per atom (eV),
#: forces (eV/Å) and stress (eV/Å³), weights 1 : 20 : 20·160.2/10, so that 1 GPa of
#: stress error weighs as 0.1 eV/Å of force error. Absolute errors also keep the
#: pre-training set's large EAM forces at the close contacts from dominating the loss.
LOSS = {
    "loss_error": "absolute",
    "energy_weight": 1.0,
    "force_weight": 20.0,
    "stress_weight": 20.0 * EV_A3_TO_GPA / 10.0,
}

#: paper 004 Table 1 (silica): 2,000 K, 2 fs; NVT Langevin, NPT Berendsen (ASE-like)
MD_PROTOCOLS: dict[str, dict[str, Any]] = {
    "NVT": PROTOCOLS["silica_nvt"].integration(),
    "NPT": PROTOCOLS["silica_npt"].integration(),
}
CHECK_EVERY = 10
#: the RDFs' range (Å) and bins
RDF_R_MAX, RDF_BINS = 5.0, 100


@dataclass
class StudyOptions:
    """The choices of one study (the recipe's command line); None takes the profile's
    value. ``minutes`` is the budget of every training stage, the EAM's too."""

    profile: str = "quick"
    data: str = "silica"
    fraction: float | None = None
    n_test: int | None = None
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    ensembles: list[str] = field(default_factory=lambda: ["NVT", "NPT"])
    starts: int | None = None
    md_steps: int | None = None
    minutes: float | None = None
    seed: int = 0
    device: str = "cpu"
    out: Path = Path("runs") / "eam_pretraining"
    experiment: str = "eam_pretraining"
    tracking_uri: str | None = None


@dataclass
class _Study:
    """One study's settings, data and what it has produced so far."""

    opts: StudyOptions
    prof: dict[str, Any]
    out: Path
    train: Dataset
    val: Dataset
    test: Dataset
    md_ref: Dataset
    model_cfg: dict[str, Any]
    cfgs: dict[str, dict[str, Any]]
    eam_cfg: TrainConfig
    starts: int
    md_steps: int
    protocol: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)


def relaxed_polymorphs() -> list:
    """The GFN1-xTB-relaxed silica polymorphs shipped with the package (ASE Atoms, each
    with ``info["polymorph"]``); empty if the file is absent."""
    import ase.io

    return ase.io.read(POLYMORPHS_FILE, ":") if POLYMORPHS_FILE.exists() else []


# ------------------------------------------------------------------ training (Ray tasks)
def train_variant(
    kind: str,
    model_cfg: dict,
    cfgs: dict[str, dict],
    paths: dict[str, str],
    out: str,
) -> dict[str, Any]:
    """Train one MLIP variant in this process (the body of its Ray task): ``baseline``,
    ``sam``, ``eam_pretrained`` (pre-training on ``paths["pretrain"]``, 5 % held out,
    then fine-tuning) or ``hybrid`` (the fitted EAM of ``paths["eam"]`` plus a fresh MLIP).
    Returns its checkpoint, its histories per stage and the seconds it took."""
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


# ------------------------------------------------------------------ MD (Ray agents)
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

    Every criterion is judged to the end of the run on its own (``stop_on_failure=False``:
    paper 004's Table 1 counts overlap and Lindemann separately); only non-finite values,
    runaway forces or temperature stop a replica.

    Returns per model each replica's failed criteria ({criterion: onset fs}, in image
    order) and the stored positions of each replica's physical part (before its first
    failure), ``{replica: (T, N, 3)}``."""
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
            "stop_on_failure": False,
        },
        detector_factory=partial(materials_detectors, window=max(2, steps // CHECK_EVERY)),
        dtype=prof.get("md_dtype", "float64"),
        device=device,
    )
    seconds = time.perf_counter() - t0
    dirs = model_dirs(list(checkpoints.values()))
    stored = load_study(out_dir, stable_only=True)
    out: dict[str, Any] = {"seconds": seconds, "fired": {}, "trajectories": {}}
    for name, ckpt in checkpoints.items():
        rows = sorted((r for r in study.rows if r["model"] == ckpt), key=lambda r: r["replica_id"])
        out["fired"][name] = [r["fired_fs"] for r in rows]
        out["trajectories"][name] = {
            t.replica_id: t.positions_tnc for t in stored.get(dirs[ckpt], [])
        }
    return out


# ------------------------------------------------------------------ the study's steps
def _prepare(prof: dict[str, Any], opts: StudyOptions) -> _Study:
    """The output folder, the split and the training configurations of every stage."""
    out = Path(opts.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    fraction = opts.fraction if opts.fraction is not None else prof["fraction"]
    train, val, test, md_ref = split_silica(
        opts.data, fraction, prof["n_val"], opts.n_test, opts.seed
    )
    base = {"seed": opts.seed, "device": opts.device, "dtype": "float32", **LOSS}
    budget = {"max_minutes": opts.minutes} if opts.minutes else {}
    cfgs = {
        k: asdict(TrainConfig(**{**base, **prof[k], **budget}))
        for k in ("train", "pretrain", "finetune")
    }
    st = _Study(
        opts=opts,
        prof=prof,
        out=out,
        train=train,
        val=val,
        test=test,
        md_ref=md_ref,
        model_cfg={**prof["model"], "species": train.species},
        cfgs=cfgs,
        eam_cfg=TrainConfig(**{**base, **prof["eam_train"], **budget, "dtype": "float64"}),
        starts=opts.starts if opts.starts is not None else prof["starts"],
        md_steps=opts.md_steps if opts.md_steps is not None else prof["md_steps"],
    )
    st.protocol = _protocol(st, fraction)
    st.results = {"protocol": st.protocol, "variants": {}}
    return st


def _protocol(st: _Study, fraction: float) -> dict[str, Any]:
    """Everything that defines the study: the parent run's parameters."""
    return {
        "profile": st.opts.profile,
        "data": st.opts.data,
        "data_provenance_method": st.train.provenance.get("method"),
        "fraction": fraction,
        "n_train": len(st.train),
        "n_val": len(st.val),
        "n_test": len(st.test),
        "model": st.model_cfg,
        "eam": st.prof["eam"],
        "loss": LOSS,
        "perturbation": PAPER_SETTINGS["silica"]["torchmd"],
        "train": st.cfgs,
        "eam_train": asdict(st.eam_cfg),
        "md": {
            "steps": st.md_steps,
            "starts": st.starts,
            "check_every": CHECK_EVERY,
            **{e: MD_PROTOCOLS[e] for e in st.opts.ensembles},
        },
        "variants": st.opts.variants,
    }


def _fit_eam(st: _Study, tracker, parent) -> torch.nn.Module:
    """Step 1: the EAM alone on the quantum data (fast: a few hundred parameters), E_atom
    first fitted by least squares; its test errors, decomposition and learning curve."""
    torch.manual_seed(st.opts.seed)
    with tracker.run("eam", params={"variant": "eam"}, parent=parent) as run_h:
        eam0 = build_model({**st.prof["eam"], "species": st.train.species}).double()
        run_h.log_params(
            {f"e_atom_init.{k}": v for k, v in eam0.fit_atomic_energies(st.train).items()}
        )
        eam, eam_res = run_stage(
            "eam", eam0, st.train, st.val, st.eam_cfg, st.out / "eam", log_fn=run_h.log_metrics
        )
        st.paths["eam"] = str(eam_res.best_dir)
        eam = eam.double().eval()
        res_eam = {"test": efs_errors(eam, st.test)}
        run_h.log_metrics({f"test_{k}": v for k, v in res_eam["test"].items()})
        run_h.log_artifact(eam_res.best_dir, "checkpoint")
        st.results["variants"]["eam"] = res_eam
        for pair in PAIRS:
            st.figures[f"eam_decomposition_{pair[0]}{pair[1]}.png"] = decomposition_figure(
                eam, pair
            )
        if eam_res.history:
            st.figures["learning_curve_eam.png"] = learning_curve_figure(eam_res.history)
    return eam


def _pretraining_data(st: _Study, eam: torch.nn.Module, parent) -> None:
    """Step 2: the EAM-labelled pre-training set (Algorithm 1, Table A.1; re-read when
    there) and its minimum distances against the quantum data's (Fig. 6b)."""
    pre_path = st.out / "pretrain_eam.npz"
    if pre_path.exists():
        pre = Dataset.load_npz(pre_path)
    else:
        perturb = PAPER_SETTINGS["silica"]["torchmd"]
        pre = pretraining_set(st.train, eam, perturb, st.opts.seed, st.opts.device)
        pre.save_npz(pre_path)
    st.paths["pretrain"] = str(pre_path)
    parent.log_dict(
        {k: v for k, v in pre.provenance.items() if k != "sources"},
        "pretrain_data_provenance.json",
    )
    md_qm = min_pair_distances(st.train, PAIRS)
    md_pre = min_pair_distances(pre, PAIRS)
    st.figures["min_distances.png"] = min_distance_figure(
        {"quantum training set": md_qm, "EAM pre-training set": md_pre}
    )
    st.results["min_distance_A"] = {
        k: {
            "quantum": float(np.nanmin(md_qm[k])),
            "pretraining": float(np.nanmin(md_pre[k])),
        }
        for k in md_qm
    }


def _train_jobs(st: _Study) -> list[dict[str, Any]]:
    """One :func:`train_variant` job per variant, the longest (pre-training) first."""
    return [
        {
            "name": v,
            "fn": train_variant,
            "kwargs": {
                "kind": v,
                "model_cfg": st.model_cfg,
                "cfgs": st.cfgs,
                "paths": st.paths,
                "out": str(st.out / v),
            },
        }
        for v in sorted(st.opts.variants, key=lambda v: v != "eam_pretrained")
    ]


def _log_histories(st: _Study, v: str, histories: dict[str, list], run_h) -> None:
    """Every epoch's numbers of each stage of variant ``v`` (prefixed by the stage when
    there are several) and a learning-curve figure per stage."""
    for stage, hist in histories.items():
        prefix = "" if len(histories) == 1 else f"{stage}_"
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
            st.figures[f"learning_curve_{v}_{stage}.png"] = learning_curve_figure(hist)


def _record_variant(st: _Study, v: str, row: dict[str, Any], run_h) -> torch.nn.Module | None:
    """A finished training task of variant ``v`` in its child run: its error, or its
    learning curves, test errors (Table 2) and checkpoint. Returns the model (float64)."""
    if not row["ok"]:
        log.error("variant %s failed: %s", v, row["error"])
        run_h.set_tag("error", str(row["error"])[:500])
        st.results["variants"][v] = {"error": row["error"]}
        return None
    r = row["result"]
    _log_histories(st, v, r["histories"], run_h)
    model, _ = load_model(r["checkpoint"], dtype=torch.float64)
    model = model.eval()
    res = {"test": efs_errors(model, st.test), "train_seconds": r["seconds"]}
    run_h.log_metrics({f"test_{k}": x for k, x in res["test"].items()})
    run_h.log_artifact(r["checkpoint"], "checkpoint")
    st.results["variants"][v] = res
    return model


def _train_mlips(st: _Study, tracker, parent) -> tuple[dict, dict, dict[str, str]]:
    """Step 3: the MLIP variants side by side in Ray tasks, each then a child run.
    Returns the trained models, the child runs and the checkpoints, by variant."""
    rows = {r["name"]: r for r in train_variants_parallel(_train_jobs(st), cpus_per_job=1)}
    models: dict[str, Any] = {}
    handles: dict[str, Any] = {}
    for v in st.opts.variants:
        with tracker.run(v, params={"variant": v}, parent=parent) as run_h:
            handles[v] = run_h
            model = _record_variant(st, v, rows[v], run_h)
            if model is not None:
                models[v] = model
    checkpoints = {v: str(rows[v]["result"]["checkpoint"]) for v in models}
    return models, handles, checkpoints


def _force_angles(st: _Study, models: dict[str, Any], eam: torch.nn.Module) -> None:
    """Step 4: Fig. B.1 and its median and share above 90° per pair."""
    angles = force_angle_sets(models, eam, st.test)
    if angles:
        st.figures["force_angles.png"] = force_angle_figure(angles)
        st.results["force_angles"] = {
            k: {"median": float(np.median(t)), "frac_above_90": float(np.mean(t > 90))}
            for k, t in angles.items()
        }


@dataclass
class _MDSetup:
    """The MD's start structures, the polymorphs with a reference MD, the reference RDFs
    and the RDF curves drawn so far (pair name -> label -> g)."""

    starts: list
    polys: dict[str, Any]
    r: np.ndarray | None
    g_ref: np.ndarray | None
    curves: dict[str, dict[str, np.ndarray]]


def _md_setup(st: _Study) -> _MDSetup:
    """``starts`` random test structures; the relaxed polymorphs with a reference NVT MD
    in the data, and that MD's RDFs."""
    rng = np.random.default_rng(st.opts.seed)
    pick = np.sort(rng.choice(len(st.test), size=min(st.starts, len(st.test)), replace=False))
    starts = [st.test.to_atoms(int(i), with_labels=False) for i in pick]
    polys = {x.info["polymorph"]: x for x in relaxed_polymorphs()}
    ref_frames = reference_frames(st.md_ref, list(polys))
    polys = {n: polys[n] for n in ref_frames}  # those with a reference MD
    r, g_ref = polymorph_rdfs(ref_frames, RDF_R_MAX, RDF_BINS)
    curves: dict[str, dict[str, np.ndarray]] = {n: {} for n in PAIR_NAMES}
    if g_ref is not None:
        for k, n in enumerate(PAIR_NAMES):
            curves[n]["GFN1-xTB (reference)"] = g_ref[k]
    return _MDSetup(starts, polys, r, g_ref, curves)


def _variant_rdf(st: _Study, v: str, trajs: dict, md: _MDSetup, handle) -> None:
    """The RDFs of variant ``v``'s NVT runs from the polymorphs (stored physical parts),
    their MAE against the reference (logged) and their curves."""
    n_starts = len(md.starts)
    frames = {
        n: (trajs[n_starts + k], atoms.numbers, np.asarray(atoms.cell[:]))
        for k, (n, atoms) in enumerate(md.polys.items())
        if trajs.get(n_starts + k) is not None
    }
    _, g = polymorph_rdfs(frames, RDF_R_MAX, RDF_BINS)
    if g is None:
        return
    m = rdf_mae(g, md.g_ref, RDF_R_MAX)
    mae = {n: float(m[k]) for k, n in enumerate(PAIR_NAMES)}
    st.results["variants"][v]["rdf_mae"] = mae
    handle.log_metrics({f"rdf_mae_{n.replace('–', '')}": x for n, x in mae.items()})
    for k, n in enumerate(PAIR_NAMES):
        md.curves[n][v] = g[k]


def _md_ensemble(st: _Study, ens: str, md: _MDSetup, checkpoints, handles, parent) -> None:
    """Step 5 for one ensemble: the study of every variant from the test starts (and, in
    NVT, the polymorphs); Table 1's counts from the test starts; the RDFs."""
    images = md.starts + (list(md.polys.values()) if ens == "NVT" else [])
    study = run_md_study(
        checkpoints,
        images,
        st.md_steps,
        ens,
        st.out / f"md_{ens}",
        st.opts.seed,
        st.prof,
        st.opts.device,
    )
    for v in checkpoints:
        counts = count_unphysical(study["fired"][v][: len(md.starts)])
        counts["seconds"] = study["seconds"]
        st.results["variants"][v].setdefault("md", {})[ens] = counts
        handles[v].log_metrics({f"md_{ens}_{k}": float(x) for k, x in counts.items()})
        if ens == "NVT" and md.g_ref is not None:
            _variant_rdf(st, v, study["trajectories"][v], md, handles[v])
    parent.log_artifact(st.out / f"md_{ens}" / "t_inst.csv", f"md_{ens}")


def _md_studies(st: _Study, checkpoints: dict[str, str], handles: dict, parent) -> None:
    """Step 5: MD of every variant (Ray trajectory agents, one batched engine each) in
    every ensemble: Table 1 and the RDFs, with their figures."""
    md = _md_setup(st)
    for ens in st.opts.ensembles:
        _md_ensemble(st, ens, md, checkpoints, handles, parent)
    variants = st.results["variants"]
    if variants and any("md" in x for x in variants.values()):
        st.figures["unphysical.png"] = unphysical_figure(
            {v: x["md"] for v, x in variants.items() if "md" in x}
        )
    if md.r is not None and any(len(c) > 1 for c in md.curves.values()):
        st.figures["rdf.png"] = rdf_figure(md.r, md.curves, "NVT 2,000 K, relaxed polymorphs")


def _write_outputs(st: _Study, parent, t_start: float) -> str:
    """Step 6: the figures, ``comparison.md`` and ``results.json``, in ``out`` and in the
    parent run. Returns the Markdown tables."""
    (st.out / "figures").mkdir(exist_ok=True)
    for fname, fig in st.figures.items():
        fig.savefig(st.out / "figures" / fname, dpi=120, bbox_inches="tight")
        parent.log_figure(fig, fname)
    table = tables(st.results)
    st.results["total_minutes"] = (time.perf_counter() - t_start) / 60
    (st.out / "comparison.md").write_text(table)
    (st.out / "results.json").write_text(json.dumps(st.results, indent=1, default=str))
    parent.log_artifact(st.out / "comparison.md")
    parent.log_artifact(st.out / "results.json")
    parent.log_metrics({"total_minutes": st.results["total_minutes"]})
    return table


def eam_pretraining_study(prof: dict[str, Any], opts: StudyOptions) -> StudyOutcome:
    """Paper 004's study with the profile ``prof`` (the module doc's steps), one MLflow
    parent run (``opts.experiment`` in ``opts.tracking_uri``) with a child run per model.
    A rerun in the same ``opts.out`` skips finished training stages and re-reads the
    pre-training set."""
    from ase_mlff.tracking import Tracker

    t_start = time.perf_counter()
    st = _prepare(prof, opts)
    tracker = Tracker(opts.experiment, uri=opts.tracking_uri)
    with tracker.run(
        f"eam_pretraining-{time.strftime('%Y%m%d-%H%M%S')}",
        params=st.protocol,
        tags={"recipe": "eam_pretraining", "paper": "004"},
    ) as parent:
        st.paths.update(train=str(st.out / "train.npz"), val=str(st.out / "val.npz"))
        st.train.save_npz(st.paths["train"])
        st.val.save_npz(st.paths["val"])
        eam = _fit_eam(st, tracker, parent)
        if "eam_pretrained" in opts.variants:
            _pretraining_data(st, eam, parent)
        models, handles, checkpoints = _train_mlips(st, tracker, parent)
        _force_angles(st, models, eam)
        _md_studies(st, checkpoints, handles, parent)
        table = _write_outputs(st, parent, t_start)
    return StudyOutcome(st.results, table, st.out, tracker.uri)


__all__ = [
    "CHECK_EVERY",
    "LOSS",
    "MD_PROTOCOLS",
    "VARIANTS",
    "StudyOptions",
    "eam_pretraining_study",
    "relaxed_polymorphs",
    "run_md_study",
    "train_variant",
]
