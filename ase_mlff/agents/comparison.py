"""The comparison agent: train every variant of a study, judge each by force metrics *and*
MD stability, lay the comparison out in MLflow (papers 000, 002, 003, 004).

A study spec (a dict, or YAML through :meth:`StudySpec.from_dict`) names the data, the
architecture, the variants, the seeds and the MD protocol:

    spec = StudySpec.from_dict({
        "name": "aspirin_compare", "data": "aspirin", "n_train": 950, "n_val": 50,
        "model": {"name": "painn", "hidden": 48, "n_interactions": 3},
        "train": {"epochs": 60, "batch_size": 16, "max_minutes": 4},
        "variants": [
            {"name": "scratch", "kind": "scratch"},
            {"name": "sam", "kind": "sam", "train": {"sam_rho": 0.05}},
            {"name": "ffpt", "kind": "pretrained", "pretrain_data": "pretrain.npz",
             "pretrain": {"epochs": 6, "lr": 1e-4}},
            {"name": "reweighted", "kind": "reweighted", "base": "scratch"},
            {"name": "continued", "kind": "continued", "base": "scratch", "rounds": 2},
        ],
        "seeds": [0],
        "md": {"steps": 2000, "replicas": 8, "dt": 0.5, "temperature_K": 500.0,
               "integrator": "langevin", "friction": 0.002},
    })
    result = ComparisonAgent(spec, out_dir="runs/compare").run()

Kinds: ``scratch`` (training from initial weights), ``sam`` (the same with
sharpness-aware minimisation, paper 004's baseline), ``pretrained`` (pre-train on
``pretrain_data``, e.g. force-field or EAM labels, then fine-tune every weight, paper 001
and 004; or, with ``checkpoint``, fine-tune a model pre-trained on a large diverse set,
e.g. the shipped ``organic-painn``, in its own architecture, paper 000), ``reweighted``
(fine-tune ``base`` with per-frame weights from its per-cluster
ratio of bad points, paper 002) and ``continued`` (continued learning from ``base``:
MD, unexplored and pre-instability frames labelled by the reference, retraining, paper 002).
Any variant may add trainer settings in ``train`` (e.g. ``probe_every`` for the
stability-aware checkpoint selection, ``loss: element_balanced``).

Training runs as Ray tasks (:func:`ase_mlff.agents.training.train_variants_parallel`),
independent variants side by side, the ones built on a ``base`` after it. Each finished
variant leaves ``<out>/variants/<name>-s<seed>/variant_done.json``; a study started again
skips them (an interrupted study resumes), and the stability study is reused when it
holds the same models.

Evaluation: paper 002's force metrics on the held-out test set (global, per element, per
conformation cluster), a stability study of every model over Ray trajectory agents
(t_inst, survival), h(r) MAE of the stable parts. MLflow: one parent run (the comparison
table as markdown and CSV; figures: force MAE vs stability, paper 003 Fig. 3; survival
curves; t_inst vs epoch, paper 000 Fig. 2b, when the variants probed stability while
training; radar charts of per-cluster errors, paper 002 Fig. 8; h(r)), one child run per
variant and seed (its settings, learning curve, metrics, figures, checkpoint). The best
model by the stated criterion is registered in the MLflow model registry.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ase_mlff.md.protocol import PROTOCOLS
from ase_mlff.metrics.distance_distribution import H_R_MAE_LABEL
from ase_mlff.utils import jsonable, write_json

log = logging.getLogger(__name__)

KINDS = ("scratch", "sam", "pretrained", "reweighted", "continued")
DONE = "variant_done.json"

#: how the best model is chosen: most replicas stable, then longest mean t_inst, then
#: lowest test force MAE
CRITERION = (
    "passes the NVE gate (when run), then fraction_stable, then t_inst_mean_fs, then -forces_mae"
)

#: the NVE gate's default bound on |drift|, meV/atom/ps: over a 10 ps run it lets the
#: total energy wander by at most 10 meV/atom, a quarter of k_B·T at 500 K (43 meV); a
#: choice of this project, not a paper's number (docs/recipe_compare.md)
NVE_GATE_MEV = 1.0

#: the survival statistics each comparison row carries (see survival_summary; the mean
#: t_inst is the restricted mean survival time up to the run length)
SURVIVAL_KEYS = (
    "n_replicas",
    "n_unstable",
    "fraction_stable",
    "fraction_stable_lo",
    "fraction_stable_hi",
    "t_inst_mean_fs",
    "rmst_fs",
    "rmst_fs_lo",
    "rmst_fs_hi",
    "median_reached",
    "t_inst_median_fs",
    "t_inst_median_fs_lo",
    "t_inst_median_fs_hi",
)


@dataclass
class VariantSpec:
    name: str
    kind: str
    train: dict[str, Any] = field(default_factory=dict)
    pretrain_data: str | None = None
    pretrain: dict[str, Any] = field(default_factory=dict)
    #: kind ``pretrained``: fine-tune this checkpoint (a shipped model name such as
    #: ``organic-painn``, or a folder) instead of pre-training on ``pretrain_data``
    checkpoint: str | None = None
    base: str | None = None
    rounds: int = 2
    continued: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"variant {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}"
            )
        if self.kind == "pretrained" and bool(self.pretrain_data) == bool(self.checkpoint):
            raise ValueError(
                f"variant {self.name!r}: kind 'pretrained' needs pretrain_data (pre-train, "
                "then fine-tune) or checkpoint (fine-tune a pre-trained model), one of them"
            )
        if self.checkpoint is not None and self.kind != "pretrained":
            raise ValueError(f"variant {self.name!r}: checkpoint belongs to kind 'pretrained'")
        if self.kind in ("reweighted", "continued") and not self.base:
            raise ValueError(f"variant {self.name!r}: kind {self.kind!r} needs a base variant")
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ValueError(f"variant name {self.name!r} must be a plain word")


@dataclass
class StudySpec:
    name: str
    variants: list[VariantSpec]
    data: str = "aspirin"
    model: dict[str, Any] = field(default_factory=lambda: {"name": "painn"})
    train: dict[str, Any] = field(default_factory=dict)
    n_train: int = 950
    n_val: int = 50
    seeds: list[int] = field(default_factory=lambda: [0])
    md: dict[str, Any] = field(default_factory=dict)
    n_clusters: int = 3
    reference: dict[str, Any] = field(default_factory=lambda: {"name": "tblite"})
    register_as: str | None = None
    #: :class:`~ase_mlff.agents.active.ActiveSpec` fields (not ``md``): after the fixed
    #: study, the active agent runs MD in rounds until each pair of variants is shown
    #: different or equivalent; its winner is the registered model
    active: dict[str, Any] | None = None
    cpus_per_job: int = 1
    gpus_per_job: float = 0
    #: the NVE energy-drift gate (None: off): ``steps`` of velocity Verlet from
    #: ``n_starts`` starts at the study's dt and temperature; a model passes when the 95 %
    #: interval of its drift lies inside ± ``max_drift_meV_per_atom_ps``
    nve_gate: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudySpec:
        d = dict(d)
        variants = [
            v if isinstance(v, VariantSpec) else VariantSpec(**v) for v in d.pop("variants")
        ]
        spec = cls(variants=variants, **d)
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        for v in variants:
            if v.base is not None and v.base not in names:
                raise ValueError(f"variant {v.name!r} builds on unknown variant {v.base!r}")
            if v.base is not None and next(x for x in variants if x.name == v.base).base:
                raise ValueError(f"variant {v.name!r}: its base {v.base!r} must not have a base")
        if not spec.seeds:
            raise ValueError("at least one seed is needed")
        if spec.nve_gate is not None:
            gate = {"n_starts": 4, "max_drift_meV_per_atom_ps": NVE_GATE_MEV, **spec.nve_gate}
            unknown = set(gate) - {"steps", "n_starts", "max_drift_meV_per_atom_ps"}
            if unknown or not int(gate.get("steps", 0)) >= 40 or not gate["n_starts"] >= 1:
                raise ValueError(
                    "nve_gate needs steps >= 40 (and optionally n_starts >= 1, "
                    f"max_drift_meV_per_atom_ps), got {spec.nve_gate}"
                )
            if not gate["max_drift_meV_per_atom_ps"] > 0:
                raise ValueError("nve_gate: max_drift_meV_per_atom_ps must be > 0")
            spec.nve_gate = gate
        if spec.active is not None:  # its settings are checked now, not after training
            from ase_mlff.agents.active import ActiveSpec

            if "md" in spec.active:
                raise ValueError("active: its MD is the study's md; give it there")
            md = {k: v for k, v in spec.md.items() if k not in ("replicas", "seed")}
            md.setdefault("steps", 2000)
            md.setdefault("dt", PROTOCOLS["aspirin_langevin"].dt)
            act = ActiveSpec(**spec.active, md={"steps": md["steps"], "dt": md["dt"]})
            first = len(variants) * act.replicas_per_round * act.run_fs / 1000.0
            if act.max_replica_ps is not None and first > act.max_replica_ps:
                raise ValueError(
                    f"active: max_replica_ps ({act.max_replica_ps}) is below one round of "
                    f"every variant ({first:g} replica-ps)"
                )
        return spec

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_study_data(spec: dict[str, Any]):
    """The study's dataset, checked before any work: one system (the same atoms in the
    same order in every frame: the clusters, the starts and h(r) need it), energy and
    force labels, and test frames left after ``n_train`` + ``n_val``. Returns it.

    Raises:
        ValueError: naming what is wrong with the data.
    """
    from ase_mlff.data import load_dataset
    from ase_mlff.data.splits import held_out_frames

    name = spec.get("data", "aspirin")
    ds = load_dataset(name)
    if not ds.same_molecule():
        raise ValueError(
            f"{name}: the comparison needs one system, the same atoms in the same order in "
            "every frame (its conformation clusters, MD starts and h(r)); this set mixes "
            f"{len(set(map(int, ds.n_atoms_s)))} atom counts or orders"
        )
    for what, values in (("energies", ds.energy_s), ("forces", ds.forces_nc)):
        if np.isnan(values).any():
            raise ValueError(
                f"{name}: the comparison trains on energies and forces; some frames have no {what}"
            )
    n_train, n_val = int(spec.get("n_train", 950)), int(spec.get("n_val", 50))
    held_out = held_out_frames(name, ds)
    pool = len(ds) if held_out is None else len(ds) - len(held_out)
    if n_train + n_val > pool or (held_out is None and n_train + n_val >= len(ds)):
        raise ValueError(
            f"{name} has {len(ds)} frames ({pool} outside its test set): n_train "
            f"({n_train}) + n_val ({n_val}) does not fit and leave test frames for the "
            "force metrics and the MD starts"
        )
    return ds


# ------------------------------------------------------------------------ one variant


def _load_split(data_dir: Path):
    from ase_mlff.data import Dataset

    return Dataset.load_npz(data_dir / "train.npz"), Dataset.load_npz(data_dir / "val.npz")


def train_variant(
    *, study: dict[str, Any], variant: dict[str, Any], seed: int, data_dir: str, out_dir: str
) -> dict[str, Any]:
    """Train one variant with one seed (run inside a Ray task). Returns and writes
    ``variant_done.json``: the checkpoint, the history and what was done."""
    from ase_mlff.training.config import TrainConfig
    from ase_mlff.training.stage import optimizer_steps

    out, data = Path(out_dir), Path(data_dir)
    if (out / DONE).exists():
        done = read_variant_done(out)
        was = done.get("extra", {}).get("checkpoint")
        if was != variant.get("checkpoint"):
            raise ValueError(
                f"{out} holds variant {done['variant']} fine-tuned from {was}, not from "
                f"{variant.get('checkpoint')}; use another --out"
            )
        return done
    spec = StudySpec.from_dict(study)
    v = VariantSpec(**{k: x for k, x in variant.items() if k != "base_checkpoint"})
    overrides = {**spec.train, **v.train, "seed": seed}
    if spec.gpus_per_job:  # Ray gave this task a GPU
        overrides.setdefault("device", "cuda")
    if v.kind == "sam":
        overrides.setdefault("optimizer", "sam")
    job = _VariantJob(
        spec=spec,
        v=v,
        base_checkpoint=variant.get("base_checkpoint"),
        seed=seed,
        data=data,
        out=out,
        cfg=TrainConfig(**overrides),
    )
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    info: dict[str, Any] = {
        "variant": v.name,
        "kind": v.kind,
        "seed": seed,
        "base": v.base,
        "extra": job.extra,
    }
    if v.kind == "continued":
        info.update(job.continued())
    else:
        stages = job.pretrained() if v.kind == "pretrained" else job.train_once()
        res = stages["finetune" if v.kind == "pretrained" else "train"]
        info.update(
            checkpoint=str(res.best_dir),
            history=res.history,
            stages={
                k: {
                    "best_epoch": s.best_epoch,
                    "epochs_run": s.epochs_run,
                    "optimizer_steps": optimizer_steps(s.history),
                    "stopped_because": s.stopped_because,
                    "best_val": s.best_val,
                }
                for k, s in stages.items()
            },
        )
        if "pretrain" in stages:
            info["pretrain_history"] = stages["pretrain"].history
    info["minutes"] = (time.perf_counter() - t0) / 60
    stored = {**info, "checkpoint": _inside(out, info["checkpoint"])}
    write_json(out / DONE, stored, nan_as_null=False)
    return info


def _inside(vdir: Path, path: str) -> str:
    """``path`` relative to the variant folder ``vdir`` when it lies inside it."""
    p = Path(path).resolve()
    return str(p.relative_to(vdir.resolve())) if p.is_relative_to(vdir.resolve()) else path


def read_variant_done(vdir: str | Path) -> dict[str, Any]:
    """A trained variant's ``variant_done.json``, its checkpoint found in ``vdir``
    wherever the study folder has been moved or copied since: stored relative to the
    variant folder; files written before 2026-12-01 hold the writing run's absolute path,
    re-rooted here at the variant folder's name."""
    vdir = Path(vdir)
    info = json.loads((vdir / DONE).read_text())
    p = Path(info["checkpoint"])
    if not p.is_absolute():
        p = vdir / p
    elif vdir.name in p.parts:
        k = len(p.parts) - 1 - p.parts[::-1].index(vdir.name)
        p = vdir.joinpath(*p.parts[k + 1 :])
    info["checkpoint"] = str(p)
    return info


@dataclass
class _VariantJob:
    """One variant with one seed: its training per kind, every stage through
    :func:`~ase_mlff.training.stage.run_stage`; ``extra`` collects what each kind records
    besides its stages."""

    spec: StudySpec
    v: VariantSpec
    base_checkpoint: str | None
    seed: int
    data: Path
    out: Path
    cfg: Any
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.train, self.val = _load_split(self.data)
        # the model's elements: the study's own list when it gives one (e.g. a pre-trained
        # model's, so scratch and pretrained share the architecture down to the embedding
        # table), else the training data's
        self.model_cfg = {
            **self.spec.model,
            "species": self.spec.model.get("species") or self.train.species,
        }
        self.trainer_kwargs: dict[str, Any] = {}
        if getattr(self.cfg, "probe_every", 0):
            n = getattr(self.cfg, "probe_starts", 4)
            self.trainer_kwargs["probe_images"] = _starts(self.data)[:n]

    def _model(self):
        from ase_mlff.models import build_model

        return build_model(self.model_cfg)

    def train_once(self) -> dict[str, Any]:
        """scratch / sam from fresh weights; reweighted from the base checkpoint with the
        RBP frame weights of paper 002."""
        from ase_mlff.training.stage import run_stage

        train, init_from = self.train, None
        if self.v.kind == "reweighted":
            train, init_from = self._rbp_weighted(), Path(self.base_checkpoint)
        _, res = run_stage(
            self.v.name,
            self._model(),
            train,
            self.val,
            self.cfg,
            self.out / "train",
            init_from=init_from,
            **self.trainer_kwargs,
        )
        return {"train": res}

    def _rbp_weighted(self):
        from ase_mlff.metrics.clusters import ConformationClusters
        from ase_mlff.models.io import load_model
        from ase_mlff.training.sample_weights import rbp_weights

        base_model, _ = load_model(Path(self.base_checkpoint), dtype=torch.float64)
        clusters = ConformationClusters.load(self.data / "clusters.npz")
        w, table = rbp_weights(base_model, self.train, clusters)
        weighted = self.train.subset(np.arange(len(self.train)))
        weighted.weight_s = np.asarray(w, dtype=np.float64)
        self.extra["rbp_table"] = table
        return weighted

    def pretrained(self) -> dict[str, Any]:
        """Pre-train on the variant's pre-training set (5 % held out), then fine-tune; or,
        with a ``checkpoint``, fine-tune that pre-trained model (its own architecture)."""
        from ase_mlff.data import load_dataset
        from ase_mlff.data.splits import holdout_split
        from ase_mlff.training.config import TrainConfig
        from ase_mlff.training.stage import run_stage

        if self.v.checkpoint:
            return self._finetune_checkpoint()
        pt_train, pt_val = holdout_split(load_dataset(self.v.pretrain_data), self.seed)
        pcfg = TrainConfig(**{**self.spec.train, **self.v.pretrain, "seed": self.seed})
        _, pre = run_stage("pretrain", self._model(), pt_train, pt_val, pcfg, self.out / "pretrain")
        _, res = run_stage(
            "finetune",
            self._model(),
            self.train,
            self.val,
            self.cfg,
            self.out / "finetune",
            init_from=pre.best_dir,
            **self.trainer_kwargs,
        )
        return {"pretrain": pre, "finetune": res}

    def _finetune_checkpoint(self) -> dict[str, Any]:
        """Paper 000's protocol: every weight of a model pre-trained on a large set
        fine-tuned on the study's data, its reference energies refitted first (another
        level of theory, :mod:`ase_mlff.training.stage`); freezing and the head's learning
        rate come from the variant's ``train`` (``freeze``, ``head_lr_factor``)."""
        from ase_mlff.agents.training import checkpoint_model
        from ase_mlff.training.stage import run_stage

        path, model = checkpoint_model(self.v.checkpoint, self.train)
        self.extra["checkpoint"] = str(self.v.checkpoint)
        self.extra["architecture"] = dict(model.config)
        _, res = run_stage(
            "finetune",
            model,
            self.train,
            self.val,
            self.cfg,
            self.out / "finetune",
            init_from=path,
            **self.trainer_kwargs,
        )
        return {"finetune": res}

    def continued(self) -> dict[str, Any]:
        """Paper 002's continued learning from the base checkpoint."""
        from ase_mlff.agents.continued import continued_learning
        from ase_mlff.metrics.clusters import ConformationClusters

        clusters = ConformationClusters.load(self.data / "clusters.npz")
        spec, v = self.spec, self.v
        md = {k: spec.md[k] for k in ("dt", "temperature_K", "integrator") if k in spec.md}
        md.update(v.continued.get("md", {}))
        cres = continued_learning(
            self.base_checkpoint,
            self.train,
            self.val,
            reference=spec.reference,
            clusters=clusters,
            starts=_starts(self.data),
            cfg=self.cfg,
            out_dir=self.out / "continued",
            rounds=v.rounds,
            md=md,
            **{k: x for k, x in v.continued.items() if k != "md"},
        )
        self.extra["rounds"] = jsonable(cres.rounds, nan_as_null=False)
        self.extra["stopped_because"] = cres.stopped_because
        return {"checkpoint": str(cres.final_checkpoint), "history": []}


def _starts(data: Path) -> list:
    import ase.io

    return ase.io.read(data / "starts.extxyz", ":")


# ------------------------------------------------------------------------ the agent


@dataclass
class ComparisonResult:
    rows: list[dict[str, Any]]
    table_md: str
    out_dir: Path
    parent_run_id: str
    best: str | None
    registered: dict[str, Any] | None = None
    #: pairwise log-rank tests of the models' t_inst (Holm-corrected), see pairwise_logrank
    logrank: list[dict[str, Any]] = field(default_factory=list)
    #: the active agent's verdict (``StudySpec.active``), as ``verdict.json`` holds it
    verdict: dict[str, Any] | None = None


class ComparisonAgent:
    """Train, evaluate and compare the variants of ``spec`` in ``out_dir`` (see module)."""

    def __init__(
        self,
        spec: StudySpec | dict[str, Any],
        out_dir: str | Path,
        *,
        experiment: str = "comparison",
        tracking_uri: str | None = None,
        dtype: str = "float64",
        device: str = "cpu",
        md_dtype: str | None = None,
    ) -> None:
        self.spec = spec if isinstance(spec, StudySpec) else StudySpec.from_dict(spec)
        #: the MD's precision (the stability study and the active rounds); ``dtype`` is
        #: the force metrics'
        self.md_dtype = md_dtype or dtype
        self.out = Path(out_dir).expanduser().resolve()  # Ray workers get absolute paths
        self.experiment, self.tracking_uri = experiment, tracking_uri
        self.dtype, self.device = dtype, device
        self.logrank: list[dict[str, Any]] = []

    # ----------------------------------------------------------------- data
    def prepare_data(self) -> tuple[Path, Any]:
        """Train/val/test split, start structures and conformation clusters in
        ``<out>/data`` (made once; a resumed study reads them back)."""
        import ase.io

        from ase_mlff.data import Dataset
        from ase_mlff.data.splits import held_out_frames, shipped_split, start_structures
        from ase_mlff.metrics.clusters import ConformationClusters

        d = self.out / "data"
        if (d / "clusters.npz").exists():
            return d, Dataset.load_npz(d / "test.npz")
        d.mkdir(parents=True, exist_ok=True)
        s = self.spec
        ds = check_study_data(s.to_dict())
        sp = shipped_split(s.data, ds, s.n_train, s.n_val, s.seeds[0])
        train, val, test = ds[sp.train], ds[sp.val], ds[sp.test]
        for name, part in (("train", train), ("val", val), ("test", test)):
            part.save_npz(d / f"{name}.npz")
        n_starts = int(s.md.get("replicas", 8))
        if held_out_frames(s.data, ds) is not None:  # a shipped set's held-out trajectories
            starts = start_structures(s.data, n_starts)
        else:  # a user's file: spread over the test frames, never a training frame
            pick = np.linspace(0, len(test) - 1, min(n_starts, len(test))).astype(int)
            starts = [test.to_atoms(int(i), with_labels=False) for i in pick]
        ase.io.write(d / "starts.extxyz", starts)
        n = int(train.n_atoms_s[0])
        ConformationClusters(s.n_clusters, seed=s.seeds[0]).fit(
            train.positions_nc.reshape(len(train), n, 3), train.numbers_n[:n]
        ).save(d / "clusters.npz")
        return d, test

    # ----------------------------------------------------------------- training
    def label(self, variant: str, seed: int) -> str:
        return variant if len(self.spec.seeds) == 1 else f"{variant}-s{seed}"

    def train_all(self, data_dir: Path) -> dict[str, dict[str, Any]]:
        """Every variant × seed; independent ones first and side by side, then the ones
        built on a base. Finished variants are read back, not retrained."""
        from ase_mlff.agents.training import train_variants_parallel

        s = self.spec
        done: dict[str, dict[str, Any]] = {}
        waves = [[v for v in s.variants if v.base is None], [v for v in s.variants if v.base]]
        for wave in waves:
            jobs, labels = [], []
            for v in wave:
                for seed in s.seeds:
                    lab = self.label(v.name, seed)
                    vdir = self.out / "variants" / lab
                    if (vdir / DONE).exists():
                        done[lab] = read_variant_done(vdir)
                        log.info("variant %s already trained: skipped", lab)
                        continue
                    variant = asdict(v)
                    if v.base:
                        variant["base_checkpoint"] = done[self.label(v.base, seed)]["checkpoint"]
                    kwargs = dict(
                        study=s.to_dict(),
                        variant=variant,
                        seed=seed,
                        data_dir=str(data_dir),
                        out_dir=str(vdir),
                    )
                    jobs.append({"name": lab, "fn": train_variant, "kwargs": kwargs})
                    labels.append(lab)
            if not jobs:
                continue
            results = train_variants_parallel(
                jobs, cpus_per_job=s.cpus_per_job, gpus_per_job=s.gpus_per_job
            )
            failed = {}
            for lab, r in zip(labels, results):
                if r["ok"]:
                    done[lab] = r["result"]
                else:
                    failed[lab] = r["error"]
            if failed:
                raise RuntimeError(
                    f"variants failed (finished ones are kept and skipped on re-run): {failed}"
                )
        return done

    # ----------------------------------------------------------------- evaluation
    def md_protocol(self) -> dict[str, Any]:
        """The MD of the study: paper 001's aspirin protocol unless the spec says
        otherwise, with the MD seed (the first training seed unless ``md.seed``)."""
        md = {
            **PROTOCOLS["aspirin_langevin"].integration(),
            "steps": 2000,
            "check_every": 10,
            "record_every": 20,
            "seed": self.spec.seeds[0],
        }
        md.update({k: v for k, v in self.spec.md.items() if k != "replicas"})
        return md

    def active_verdict(self, checkpoints: dict[str, str], tracker, parent):
        """The active agent on the trained models (every seed of a variant is one of its
        models), from the study's start structures, under the study's MD protocol; its
        rounds in ``<out>/active`` (resumed there) and a child MLflow run. None without
        ``spec.active``."""
        import ase.io

        from ase_mlff.agents.active import ActiveComparison, ActiveSpec
        from ase_mlff.models.io import load_model

        s = self.spec
        if not s.active:
            return None
        md = self.md_protocol()
        # past the study's replicas: its trajectories are not run again
        first = int(s.md.get("replicas", 8))
        spec = ActiveSpec(**{"seed": md.pop("seed"), "first_replica": first, **s.active, "md": md})
        dtype = getattr(torch, self.md_dtype)
        models = {
            v.name: [
                load_model(checkpoints[self.label(v.name, seed)], device=self.device, dtype=dtype)[
                    0
                ]
                for seed in s.seeds
            ]
            for v in s.variants
        }
        starts = ase.io.read(self.out / "data" / "starts.extxyz", ":")
        agent = ActiveComparison(
            models,
            starts,
            spec,
            self.out / "active",
            dtype=dtype,
            device=self.device,
            tracker=tracker,
            parent=parent,
        )
        return agent.run()

    def nve_gate(self, checkpoints: dict[str, str]) -> dict[str, dict[str, Any]]:
        """The NVE energy-drift gate of every model (``spec.nve_gate``; {} when off), in
        the comparison's precision (``dtype``: round-off must not pass for drift): per
        label the drift and its 95 % interval in meV/atom/ps and ``nve_gate_pass``.
        Reused from ``<out>/nve_gate/energy_drift.json`` when it holds these models under
        this gate's steps, starts, temperature and time step."""
        from ase_mlff.md.conservation import energy_drift_report

        g = self.spec.nve_gate
        if not g:
            return {}
        path = self.out / "nve_gate" / "energy_drift.json"
        report = json.loads(path.read_text()) if path.exists() else {}
        md = self.md_protocol()
        want = {
            "steps": int(g["steps"]),
            "temperature_K": float(md.get("temperature_K", 500.0)),
            "dt_fs": float(md.get("dt", 0.5)),
        }
        n_starts = min(int(g["n_starts"]), len(self.starts()))
        fits = all(
            {k: r.get(k) for k in want} == want and r.get("n_replicas") == n_starts
            for r in report.values()
        )
        if set(report) != set(checkpoints.values()) or not fits:  # other models or gate
            report = energy_drift_report(
                list(checkpoints.values()),
                self.starts(),
                md,
                int(g["steps"]),
                self.dtype,
                self.device,
                n_starts=int(g["n_starts"]),
                out=path.parent,
            )
        bound = float(g["max_drift_meV_per_atom_ps"])
        out = {}
        for label, ckpt in checkpoints.items():
            r = report[ckpt]
            lo, hi = (1e3 * x for x in r["drift_ci95"])
            mean = 1e3 * r["drift_eV_per_atom_ps"]
            ends = [x for x in (lo, hi) if np.isfinite(x)] or [mean]
            # a replica that blew up (non-finite) fails the gate, whatever the drift
            # fitted on its calm run-up says
            blew_up = any(rep.get("stopped_fs") is not None for rep in r["replicas"])
            within = np.isfinite(mean) and max(map(abs, ends)) <= bound
            out[label] = {
                "nve_drift_meV_per_atom_ps": mean,
                "nve_drift_lo": lo,
                "nve_drift_hi": hi,
                "nve_blew_up": blew_up,
                "nve_gate_pass": bool(within and not blew_up),
            }
        return out

    def starts(self) -> list:
        """The study's MD start structures (``<out>/data/starts.extxyz``)."""
        import ase.io

        return ase.io.read(self.out / "data" / "starts.extxyz", ":")

    def stability(self, checkpoints: dict[str, str]) -> dict[str, dict[str, Any]]:
        """A stability study of every model (reused when ``<out>/stability`` already holds
        exactly these models): per label the survival summary (stable replicas censored at
        the run length), Kaplan–Meier estimate ``km``, survival curve, per-replica t_inst
        and the stable frames. Sets ``self.logrank``, the pairwise log-rank table."""
        import ase.io

        from ase_mlff.agents.study import run_stability_study
        from ase_mlff.metrics.trajectory import load_study

        s = self.spec
        md = self.md_protocol()
        study_dir = self.out / "stability"
        models = [checkpoints[k] for k in checkpoints]
        if _read_study(study_dir, models) is None:  # not run yet, or other models
            starts = ase.io.read(self.out / "data" / "starts.extxyz", ":")
            run_stability_study(
                models,
                starts,
                n_replicas=int(s.md.get("replicas", 8)),
                out_dir=study_dir,
                md=md,
                dtype=self.md_dtype,
                device=self.device,
            )
        from ase_mlff.agents.study import load_study_result, model_dirs

        res = load_study_result(study_dir, models)
        trajs = load_study(study_dir)
        out = {}
        dirs = model_dirs(models)
        label_of = {ckpt: label for label, ckpt in checkpoints.items()}
        for label, ckpt in checkpoints.items():
            mine = [r for r in res.rows if r["model"] == ckpt]
            t = np.array([r["t_inst_fs"] for r in mine], float)
            stable = np.array([r["stable"] for r in mine], bool)
            out[label] = {
                "summary": res.summaries[ckpt],
                "km": res.km[ckpt],
                "curve": res.curves[ckpt],
                "t_inst": np.where(stable, res.total_fs, t),
                "stable": stable,
                "trajectories": trajs.get(dirs[ckpt], []),
            }
        self.logrank = [{**r, "a": label_of[r["a"]], "b": label_of[r["b"]]} for r in res.logrank]
        return out

    def run(self) -> ComparisonResult:
        from ase_mlff.tracking import Tracker

        s = self.spec
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "spec.json").write_text(json.dumps(s.to_dict(), indent=1))
        tracker = Tracker(self.experiment, uri=self.tracking_uri)
        t0 = time.perf_counter()
        with tracker.run(
            f"{s.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            params=s.to_dict(),
            tags={"agent": "comparison", "study": s.name},
        ) as parent:
            data_dir, test = self.prepare_data()
            trained = self.train_all(data_dir)
            labels = [self.label(v.name, seed) for v in s.variants for seed in s.seeds]
            checkpoints = {lab: trained[lab]["checkpoint"] for lab in labels}
            parent.log_metrics({"train_minutes": (time.perf_counter() - t0) / 60})
            evaluation = self.evaluate(checkpoints, test, data_dir)
            stab = self.stability(checkpoints)
            gate = self.nve_gate(checkpoints)
            verdict = self.active_verdict(checkpoints, tracker, parent)
            rows, figures = self.compare(labels, trained, evaluation, stab, test)
            for r in rows:
                r.update(gate.get(r["model"], {}))
            table = comparison_markdown(rows, self.logrank)
            table += force_rank_markdown(self.correlation, len(rows))
            if gate:
                table += nve_gate_markdown(rows, s.nve_gate)
            if verdict is not None:
                table += "\n## The active agent's verdict\n\n" + verdict.markdown()
                table += force_beside_verdict(rows, verdict.ranking)
            (self.out / "comparison.md").write_text(table)
            with open(self.out / "comparison.csv", "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
            fig_dir = self.out / "figures"
            fig_dir.mkdir(exist_ok=True)
            from ase_mlff.metrics.plots import _plt

            plt = _plt()
            for fname, fig in figures.items():
                fig.savefig(fig_dir / fname, dpi=120, bbox_inches="tight")
                parent.log_figure(fig, fname)
                plt.close(fig)
            for f in ("comparison.md", "comparison.csv", "spec.json"):
                parent.log_artifact(self.out / f)
            handles = self.log_children(tracker, parent, labels, trained, evaluation, stab, rows)
            best, registered = self._register(tracker, parent, handles, rows, verdict)
            parent.log_metrics({"total_minutes": (time.perf_counter() - t0) / 60})
            result = ComparisonResult(
                rows,
                table,
                self.out,
                parent.run_id,
                best,
                registered,
                self.logrank,
                None if verdict is None else asdict(verdict),
            )
        write_json(
            self.out / "result.json",
            {
                "rows": rows,
                "best": best,
                "registered": registered,
                "logrank": self.logrank,
                "verdict": result.verdict,
                "parent_run_id": result.parent_run_id,
            },
            nan_as_null=False,
        )
        return result

    def _register(self, tracker, parent, handles, rows, verdict):
        """Register the best model: the active verdict's winner (its best seed by the
        criterion) with the pairs' verdicts as tags, else the best by the criterion.
        Returns ``(best label, registry entry)``."""
        best, criterion = best_by_criterion(rows), CRITERION
        evidence = {}
        if verdict is not None and verdict.winner is not None:
            mine = [r for r in rows if r["variant"] == verdict.winner]
            if any(r.get("nve_gate_pass") is False for r in mine) and not any(
                r.get("nve_gate_pass") for r in mine
            ):  # no seed of the winner passes the NVE gate: it is not registered
                criterion = f"the verdict's winner {verdict.winner} fails the NVE gate; "
                criterion += CRITERION
            else:
                best = best_by_criterion(mine) or best
                criterion = "the active agent's verdict, then " + CRITERION
            evidence = {
                f"evidence_{p['a']}_vs_{p['b']}": f"{p['verdict']}, Holm p={p['p_holm']:.3g}"
                for p in verdict.pairs
            }
            chosen = next((r for r in rows if r["model"] == best), {})
            if "nve_gate_pass" in chosen:
                evidence["nve_gate"] = "pass" if chosen["nve_gate_pass"] else "fail"
        if best is None:
            return None, None
        name = self.spec.register_as or f"{self.spec.name}-best"
        mv = tracker.register_model(
            name,
            handles[best],
            "checkpoint",
            tags={"criterion": criterion, "variant": best, **evidence},
        )
        parent.set_tags({"best_variant": best, "registered_model": f"{name}/{mv.version}"})
        return best, {"name": name, "version": mv.version, "variant": best}

    def evaluate(self, checkpoints: dict[str, str], test, data_dir: Path) -> dict[str, dict]:
        """Paper 002's force metrics of every model on the test set."""
        from ase_mlff.metrics.clusters import ConformationClusters
        from ase_mlff.metrics.report import force_report
        from ase_mlff.models.io import load_model

        clusters = ConformationClusters.load(data_dir / "clusters.npz")
        dtype = getattr(torch, self.dtype)
        out = {}
        for label, ckpt in checkpoints.items():
            model, _ = load_model(ckpt, device=self.device, dtype=dtype)
            res, _, figs = force_report(model, test, clusters, dtype=dtype, device=self.device)
            out[label] = {"metrics": res, "figures": figs}
        return out

    def compare(self, labels, trained, evaluation, stab, test) -> tuple[list[dict], dict]:
        """The comparison rows and the parent run's figures."""
        from ase_mlff.metrics.clusters import radar_figure
        from ase_mlff.metrics.distance_distribution import h_of_r, h_of_r_figure, h_of_r_mae
        from ase_mlff.metrics.plots import (
            force_vs_stability_figure,
            survival_figure,
            t_inst_vs_epoch_figure,
        )
        from ase_mlff.metrics.stability import force_vs_stability

        n = int(test.n_atoms_s[0])
        r_grid, h_ref = h_of_r(test.positions_nc.reshape(len(test), n, 3))
        h_curves = {"reference (test)": h_ref}
        rows = []
        kinds = {v.name: v.kind for v in self.spec.variants}
        for label in labels:
            info, g = trained[label], evaluation[label]["metrics"]["global"]
            st = stab[label]
            row = {
                "model": label,
                "variant": info["variant"],
                "kind": kinds[info["variant"]],
                "seed": info["seed"],
                **{
                    k: g[k]
                    for k in (
                        "forces_mae",
                        "forces_rmse",
                        "forces_max_err",
                        "fnm_mae",
                        "fnm_max_err",
                        "energy_mae_per_atom",
                    )
                },
                **{k: st["summary"][k] for k in SURVIVAL_KEYS},
                "h_r_mae": float("nan"),
                "train_minutes": float(info.get("minutes", float("nan"))),
                **training_budget(info, trained, self.label),
            }
            if st["trajectories"]:
                pos = np.concatenate([t.positions_tnc for t in st["trajectories"]])
                _, h = h_of_r(pos)
                h_curves[label] = h
                row["h_r_mae"] = h_of_r_mae(h, h_ref)
            rows.append(row)
        comp = force_vs_stability(
            {r["model"]: {k: v for k, v in r.items() if isinstance(v, (int, float))} for r in rows}
        )
        self.correlation = comp["correlation"]
        figs = {
            "force_vs_stability.png": force_vs_stability_figure(
                comp, {lab: stab[lab]["t_inst"] for lab in labels}
            ),
            "survival.png": survival_figure({lab: stab[lab]["km"] for lab in labels}),
            "h_r.png": h_of_r_figure(r_grid, h_curves, "h(r) of the stable parts"),
        }
        by_model = {lab: evaluation[lab]["metrics"]["clusters"] for lab in labels}
        if self.spec.n_clusters >= 3:
            figs["radar_forces_mae.png"] = radar_figure(by_model, key="forces_mae")
            figs["radar_forces_max_err.png"] = radar_figure(by_model, key="forces_max_err")
        probed = {
            lab: trained[lab]["history"]
            for lab in labels
            if any("probe_t_inst_mean_fs" in h for h in trained[lab].get("history", []))
        }
        if probed:
            figs["t_inst_vs_epoch.png"] = t_inst_vs_epoch_figure(probed)
        return rows, figs

    def log_children(self, tracker, parent, labels, trained, evaluation, stab, rows):
        """A child run per variant and seed; returns their handles."""
        from ase_mlff.metrics.plots import _plt, learning_curve_figure, survival_figure
        from ase_mlff.metrics.report import flat_metrics

        plt = _plt()
        variants = {v.name: v for v in self.spec.variants}
        handles = {}
        for label, row in zip(labels, rows):
            info = trained[label]
            v = variants[info["variant"]]
            with tracker.run(
                label,
                params={"variant": asdict(v), "seed": info["seed"]},
                tags={"kind": v.kind},
                parent=parent,
            ) as child:
                for h in info.get("history", []):
                    child.log_metrics(
                        {
                            k: x
                            for k, x in h.items()
                            if k != "epoch" and isinstance(x, (int, float))
                        },
                        step=int(h["epoch"]),
                    )
                for rec in info.get("extra", {}).get("rounds") or []:  # continued learning
                    child.log_metrics(
                        {
                            f"round_{k}": x
                            for k, x in rec.items()
                            if isinstance(x, (int, float)) and k != "round"
                        },
                        step=int(rec["round"]),
                    )
                flat = flat_metrics(evaluation[label]["metrics"])
                flat.update({f"md_{k}": x for k, x in stab[label]["summary"].items()})
                flat["h_r_mae"] = row["h_r_mae"]
                child.log_metrics({k: x for k, x in flat.items() if np.isfinite(x)})
                figs = dict(evaluation[label]["figures"])
                figs["survival.png"] = survival_figure({label: stab[label]["km"]})
                if info.get("history"):
                    figs["learning_curve.png"] = learning_curve_figure(info["history"])
                for fname, fig in figs.items():
                    child.log_figure(fig, fname)
                    plt.close(fig)
                child.log_artifact(info["checkpoint"], "checkpoint")
                handles[label] = child
            parent.log_metrics(
                {
                    f"{label}.{k}": x
                    for k, x in row.items()
                    if isinstance(x, (int, float)) and np.isfinite(x)
                }
            )
        return handles


def training_budget(info: dict[str, Any], trained: dict[str, dict], label_of) -> dict[str, Any]:
    """A variant's training budget in optimiser steps, set and reported per stage (issue
    15's fair budgets): ``pretrain_steps`` (pre-training, 0 without), ``train_steps``
    (its own training or fine-tuning; continued learning: summed over its rounds),
    ``base_steps`` (the base variant's, for reweighted and continued) and
    ``time_guard_hit`` (a stage stopped by the wall-clock guard, not its budget: the
    comparison is then not at equal steps)."""
    stages = info.get("stages", {})
    rounds = [r for r in (info.get("extra", {}).get("rounds") or []) if "optimizer_steps" in r]
    own = stages.get("finetune") or stages.get("train") or {}
    out = {
        "pretrain_steps": int(stages.get("pretrain", {}).get("optimizer_steps", 0)),
        "train_steps": int(own.get("optimizer_steps", 0))
        + sum(int(r["optimizer_steps"]) for r in rounds),
        "base_steps": 0,
    }
    stops = [st.get("stopped_because") for st in stages.values()]
    stops += [r.get("train_stopped_because") for r in rounds]
    base = info.get("base")
    if base is not None:
        b = trained.get(label_of(base, info["seed"]), {})
        out["base_steps"] = sum(
            int(st.get("optimizer_steps", 0)) for st in b.get("stages", {}).values()
        )
        stops += [st.get("stopped_because") for st in b.get("stages", {}).values()]
    out["time_guard_hit"] = "time_budget" in stops
    return out


def _read_study(study_dir: Path, models: list[str]) -> list[dict] | None:
    """Rows of ``t_inst.csv`` when the study there holds exactly ``models``, else None."""
    from ase_mlff.agents.study import read_t_inst

    if not (study_dir / "t_inst.csv").exists():
        return None
    rows = read_t_inst(study_dir)
    return rows if {r["model"] for r in rows} == set(models) else None


def best_by_criterion(rows: list[dict]) -> str | None:
    """The model chosen by :data:`CRITERION`."""
    ok = [r for r in rows if np.isfinite(r["forces_mae"])]
    if any("nve_gate_pass" in r for r in ok):  # the NVE gate, when run, excludes (all:
        ok = [r for r in ok if r.get("nve_gate_pass")]  # then nothing is registered)
    if not ok:
        return None
    return max(ok, key=lambda r: (r["fraction_stable"], r["t_inst_mean_fs"], -r["forces_mae"]))[
        "model"
    ]


def nve_gate_markdown(rows: list[dict], gate: dict[str, Any]) -> str:
    """The NVE gate's table: each model's drift with its 95 % interval, pass or fail."""
    bound = gate["max_drift_meV_per_atom_ps"]
    lines = [
        "",
        f"NVE energy-drift gate ({gate['steps']} velocity-Verlet steps from "
        f"{gate['n_starts']} starts; pass: the 95 % interval inside ±{bound:g} meV/atom/ps):",
        "",
        "| model | drift (meV/atom/ps) [95 % CI] | gate |",
        "|---|---|---|",
    ]
    for r in rows:
        if "nve_gate_pass" not in r:
            continue
        ci = format_ci_signed(r["nve_drift_meV_per_atom_ps"], r["nve_drift_lo"], r["nve_drift_hi"])
        lines.append(f"| {r['model']} | {ci} | {'pass' if r['nve_gate_pass'] else 'FAIL'} |")
    return "\n".join(lines) + "\n"


def format_ci_signed(x: float, lo: float, hi: float) -> str:
    def f(v: float) -> str:
        return "—" if not np.isfinite(v) else f"{v:+.3f}"

    return f"{f(x)} [{f(lo)}, {f(hi)}]"


def force_rank_markdown(correlation: dict[str, dict[str, float]], n_models: int) -> str:
    """Does the force error rank stability here? Spearman's ρ of each force metric against
    the mean t_inst (RMST) over the models (paper 003's key observation 1, made with this
    study's evidence; :func:`~ase_mlff.metrics.stability.force_vs_stability`)."""
    names = {"forces_mae": "F-MAE", "forces_max_err": "F max-err", "fnm_mae": "FNM-MAE"}
    parts = [
        f"{names[k]} ρ = {c['spearman_rho']:+.2f} (p = {c['p_value']:.2g})"
        for k, c in correlation.items()
        if k in names and np.isfinite(c["spearman_rho"])
    ]
    if not parts:
        why = (
            f"too few models ({n_models})"
            if n_models < 3
            else "every model had the same RMST or the same force error"
        )
        return f"\nForce error vs stability: no rank correlation ({why}).\n"
    return (
        f"\nForce error vs stability over the {n_models} models, Spearman's rank correlation "
        f"with the RMST (a negative ρ: lower error, longer-lived): {'; '.join(parts)}.\n"
    )


def force_beside_verdict(rows: list[dict], ranking: list[str]) -> str:
    """The force metrics of each variant (mean over its seeds, with the range) in the
    verdict's order: a low force error need not come with a high rank (paper 003)."""
    lines = [
        "",
        "| verdict rank | variant | F-MAE (meV/Å) mean [min, max] over seeds | "
        "F max-err (meV/Å) mean | E-MAE (meV/atom) mean |",
        "| ---: | --- | --- | ---: | ---: |",
    ]
    for k, name in enumerate(ranking, 1):
        mine = [r for r in rows if r["variant"] == name]
        if not mine:
            continue
        f = np.array([r["forces_mae"] for r in mine]) * 1e3
        fmax = np.mean([r["forces_max_err"] for r in mine]) * 1e3
        e = np.mean([r["energy_mae_per_atom"] for r in mine]) * 1e3
        lines.append(
            f"| {k} | {name} | {f.mean():.1f} [{f.min():.1f}, {f.max():.1f}] | {fmax:.1f} | "
            f"{e:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _steps(r: dict) -> str:
    if "train_steps" not in r:
        return "—"
    parts = [f"{r['pretrain_steps']:,}"] if r.get("pretrain_steps") else []
    parts.append(f"{r['train_steps']:,}")
    if r.get("base_steps"):
        parts.append(f"{r['base_steps']:,}")
    return " + ".join(parts)


def comparison_markdown(rows: list[dict], logrank: list[dict] | None = None) -> str:
    """The comparison table; stability as the stable fraction with its Wilson 95 % CI, the
    Kaplan–Meier median t_inst and the restricted mean (RMST up to the run length) with
    95 % CIs ("> run": not reached within the run; "—": not in the row). With ``logrank``
    (rows of :func:`~ase_mlff.metrics.stability.pairwise_logrank`) a table of the pairwise
    log-rank tests follows."""
    from ase_mlff.metrics.stability import format_ci, logrank_markdown

    head = (
        "| model | kind | F-MAE (meV/Å) | F max-err (meV/Å) | FNM-MAE (meV/Å/u) | "
        "E-MAE (meV/atom) | stable [95 % CI] | median t_inst (fs) [95 % CI] | "
        "RMST (fs) [95 % CI] | " + H_R_MAE_LABEL + " | optimiser steps | training (min) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )

    def ci(r: dict, key: str, scale: float = 1.0, fmt: str = ".0f") -> str:
        if not all(k in r for k in (key, f"{key}_lo", f"{key}_hi")):
            return "—"
        vals = [r[k] * scale if r[k] is not None else None for k in (key, f"{key}_lo", f"{key}_hi")]
        return format_ci(*vals, fmt=fmt)

    lines = []
    for r in rows:
        stable = f"{round(r['fraction_stable'] * r['n_replicas'])}/{r['n_replicas']}"
        if "fraction_stable_lo" in r:
            stable += f" [{r['fraction_stable_lo']:.2f}, {r['fraction_stable_hi']:.2f}]"
        rmst = ci(r, "rmst_fs") if "rmst_fs" in r else f"{r['t_inst_mean_fs']:.0f}"
        lines.append(
            f"| {r['model']} | {r['kind']} | {r['forces_mae'] * 1e3:.1f} | "
            f"{r['forces_max_err'] * 1e3:.1f} | {r['fnm_mae'] * 1e3:.2f} | "
            f"{r['energy_mae_per_atom'] * 1e3:.2f} | {stable} | {ci(r, 't_inst_median_fs')} | "
            f"{rmst} | {r['h_r_mae']:.3f} | {_steps(r)} | {r['train_minutes']:.1f} |"
        )
    table = head + "\n".join(lines) + "\n"
    table += (
        "\nOptimiser steps: pre-training + the variant's own training or fine-tuning "
        "(+ its base variant's, for reweighted and continued).\n"
    )
    guarded = [r["model"] for r in rows if r.get("time_guard_hit")]
    if guarded:
        table += (
            f"\n**Not at equal budgets:** the wall-clock guard stopped the training of "
            f"{', '.join(guarded)} before its step budget.\n"
        )
    if logrank:
        table += "\nPairwise log-rank tests of t_inst (Holm-corrected):\n\n"
        table += logrank_markdown(logrank)
    return table
