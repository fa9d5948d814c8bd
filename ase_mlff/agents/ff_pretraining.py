"""What paper 001's force-field pre-training studies share (aspirin:
:mod:`ase_mlff.agents.aspirin_ffpt`, water: :mod:`ase_mlff.agents.water_ffpt`): their
options, the two variants trained under one MLflow parent run with the same architecture
and the same fine-tuning budget, and the writing of figures, tables and results.

The variants (:func:`train_variants`, every stage through
:func:`ase_mlff.training.stage.run_stage`):

- ``scratch``: the quantum (or bulk) data alone, lr 1e-3;
- ``ffpt``: pre-training on the force-field labels (lr 1e-4), then fine-tuning every
  weight from the best pre-trained checkpoint (lr 1e-4, reference energies refitted).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ase_mlff.data import Dataset
from ase_mlff.metrics.plots import learning_curve_figure
from ase_mlff.models import build_model
from ase_mlff.training.config import TrainConfig
from ase_mlff.training.finetune import paper_schedule
from ase_mlff.training.stage import run_stage

#: the variants that are trained, evaluated and compared
VARIANT_NAMES = ("scratch", "ffpt")
#: paper 001's rattling of the force-field pre-training structures, x + σ·ε (Å)
RATTLE_SIGMA_A = 0.2


@dataclass
class FFPTOptions:
    """The choices of one study (the recipes' command line). ``None`` (and 0 for the
    counts and minutes) takes the profile's value; ``n_train`` ``None`` takes the study's
    default; ``out`` and ``experiment`` ``None`` take the study's name. ``n_test`` (test
    frames evaluated) is read by the water study only."""

    profile: str = "quick"
    model: str = "painn"
    n_pretrain: int | None = None
    n_train: int | None = None
    n_val: int = 50
    replicas: int | None = None
    md_steps: int | None = None
    pretrain_minutes: float | None = None
    finetune_minutes: float | None = None
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    out: Path | None = None
    experiment: str | None = None
    tracking_uri: str | None = None
    n_test: int | None = None


@dataclass
class Settings:
    """An options' values resolved against a profile: pre-training frames, MD replicas
    and steps, and the configurations of the stages ``pretrain``, ``scratch``,
    ``finetune``."""

    n_pretrain: int
    replicas: int
    md_steps: int
    cfgs: dict[str, TrainConfig]


@dataclass
class Variants:
    """The trained variants: best checkpoints (``scratch``, ``ffpt`` and ``pretrained
    only``), per-stage histories, the MLflow child runs and the fine-tuning's extra
    parameters."""

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


def resolve_settings(opts: FFPTOptions, prof: dict[str, Any]) -> Settings:
    """The profile ``prof`` with the options' overrides (pre-training frames, replicas,
    MD steps, the two stages' minutes) and the stage configurations (float32, the options'
    device, seed and threads)."""
    pt_over, ft_over = dict(prof["pretrain"]), dict(prof["finetune"])
    if opts.pretrain_minutes:
        pt_over["max_minutes"] = opts.pretrain_minutes
    if opts.finetune_minutes:
        ft_over["max_minutes"] = opts.finetune_minutes
    base = TrainConfig(device=opts.device, seed=opts.seed, threads=opts.threads, dtype="float32")
    return Settings(
        n_pretrain=opts.n_pretrain or prof["n_pretrain"],
        replicas=opts.replicas or prof["replicas"],
        md_steps=opts.md_steps or prof["md_steps"],
        cfgs=stage_configs(base, pt_over, ft_over),
    )


def study_protocol(
    opts: FFPTOptions,
    settings: Settings,
    model_cfg: dict[str, Any],
    rattle_sigma_A: float,
    sizes: tuple[int, int, int],
    **extra: Any,
) -> dict[str, Any]:
    """What defines an FFPT study (the parent run's parameters): profile, model,
    pre-training frames and rattle, the (train, val, test) ``sizes``, every stage's
    configuration, and the study's own ``extra`` entries."""
    n_train, n_val, n_test = sizes
    return {
        "profile": opts.profile,
        "model": model_cfg,
        "n_pretrain": settings.n_pretrain,
        "rattle_sigma_A": rattle_sigma_A,
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        **{k: c.__dict__ for k, c in settings.cfgs.items()},
        **extra,
    }


def output_folder(opts: FFPTOptions, name: str) -> Path:
    """``opts.out`` (default ``runs/<name>``), created."""
    out = Path("runs") / name if opts.out is None else Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


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


def learning_curve_figures(histories: dict[str, dict[str, list]]) -> dict[str, Any]:
    """``learning_curve_<variant>_<stage>.png`` of every stage with a history."""
    figures = {}
    for name, hist in histories.items():
        for stage, h in hist.items():
            if h:
                figures[f"learning_curve_{name}_{stage}.png"] = learning_curve_figure(h)
    return figures


def save_figures(figures: dict[str, Any], out: Path, parent) -> None:
    """Every figure as ``out/figures/<name>`` (120 dpi) and in the MLflow run ``parent``."""
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    for fname, fig in figures.items():
        fig.savefig(fig_dir / fname, dpi=120)
        parent.log_figure(fig, fname)


def write_outputs(
    out: Path,
    results: dict[str, Any],
    table: str,
    parent,
    t_start: float,
    extra: dict[str, Any] | None = None,
) -> None:
    """``out/comparison.md`` (``table``); ``extra`` and ``total_minutes`` (since the
    ``time.perf_counter()`` value ``t_start``) into ``results``, then ``out/results.json``;
    both files as artifacts of the MLflow run ``parent``."""
    (out / "comparison.md").write_text(table)
    results.update(extra or {})
    results["total_minutes"] = (time.perf_counter() - t_start) / 60
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    parent.log_artifact(out / "comparison.md")
    parent.log_artifact(out / "results.json")


def variant_metrics(res: dict[str, Any]) -> dict[str, float]:
    """A variant's test errors (``test_*``) and its numeric stability statistics
    (``md_*``), the MLflow metrics both studies log."""
    flat = {f"test_{k}": x for k, x in res["test"].items()}
    flat.update({f"md_{k}": x for k, x in res["stability"].items() if isinstance(x, (int, float))})
    return flat


__all__ = [
    "VARIANT_NAMES",
    "FFPTOptions",
    "Settings",
    "Variants",
    "learning_curve_figures",
    "output_folder",
    "resolve_settings",
    "save_figures",
    "stage_configs",
    "study_protocol",
    "train_variants",
    "variant_metrics",
    "write_outputs",
]


# ------------------------------------------------------- the force field of any molecule


@dataclass
class ForceFieldChoice:
    """Where ffpt's classical labels come from: ``kind`` "parameters" (a shipped name or
    a parameter folder, matched to the data's atom order) or "gaff" (parametrised for the
    data's molecule through AmberTools, from ``smiles`` or from its perceived bonds);
    ``atoms``: the data's first frame (its atom order); ``source``: what a cached
    pre-training set must have been made from."""

    kind: str
    atoms: Any
    source: str
    smiles: str | None = None
    net_charge: int | None = None


def resolve_force_field(
    data: str, ff: str | None, smiles: str | None = None, net_charge: int | None = None
) -> ForceFieldChoice:
    """ffpt's force field for ``data``, checked before any work: ``ff`` None takes the
    shipped parameters of a shipped molecule (aspirin) and GAFF otherwise.

    Raises:
        ValueError: a periodic system (GAFF is for molecules), bonds RDKit cannot
            perceive, or parameters of another molecule.
        ParametrizationError: GAFF asked for and AmberTools not installed.
    """
    from ase_mlff.data import load_dataset
    from ase_mlff.forcefields import gaff

    atoms = load_dataset(data).to_atoms(0, with_labels=False)
    if atoms.pbc.any():
        raise ValueError(
            f"ffpt: {data} is periodic; the classical pre-training here is GAFF, for "
            "molecules (for a metal, the EAM pre-training recipe eam_pretraining): "
            "drop ffpt from --variants"
        )
    if ff is None:
        ff = "gaff"
        try:
            gaff.resolve_parameters_dir(str(data))
            ff = str(data)
        except FileNotFoundError:
            pass
    if ff != "gaff":
        path = gaff.resolve_parameters_dir(ff)
        gaff.match_to(gaff.load_parameters(path), atoms)  # another molecule fails here
        return ForceFieldChoice("parameters", atoms, str(path.resolve()))
    gaff._check_tools()
    if smiles:
        _check_smiles(smiles, atoms)
    else:
        gaff.perceive_molecule(atoms, net_charge or 0)
    source = f"gaff:{smiles or 'perceived'}:charge={net_charge or 0}"
    return ForceFieldChoice("gaff", atoms, source, smiles, net_charge)


def _check_smiles(smiles: str, atoms) -> None:
    """The SMILES must be the data's molecule (same formula, hydrogens included)."""
    from rdkit import Chem
    from rdkit.Chem.rdMolDescriptors import CalcMolFormula

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"--smiles {smiles!r} is not a valid SMILES")
    ours = CalcMolFormula(Chem.AddHs(mol)).replace("+", "").replace("-", "")
    from ase.formula import Formula

    if Formula(ours).count() != Formula(atoms.get_chemical_formula()).count():
        raise ValueError(
            f"--smiles {smiles!r} is {ours}, but the data's molecule is "
            f"{atoms.get_chemical_formula()}"
        )


def classical_pretraining_data(
    path: Path, ff: ForceFieldChoice, workdir: Path, n_frames: int, seed: int
) -> Dataset:
    """Rattled structures of the molecule (x + 0.2 Å·ε about its force-field minimum,
    paper 001) labelled by the force field, cached in ``path`` (made again only for
    another size, seed or force field). GAFF parameters made for the molecule are kept in
    ``workdir/parameters``."""
    from ase_mlff.forcefields import gaff
    from ase_mlff.reference.sampling import rattled_dataset

    if path.exists():
        ds = Dataset.load_npz(path)
        prov = ds.provenance
        if (len(ds), prov.get("seed"), prov.get("ff_source")) == (n_frames, seed, ff.source):
            return ds
    params_dir = Path(ff.source) if ff.kind == "parameters" else workdir / "parameters"
    stamp = params_dir / "ff_source.txt"  # what the parameters there were made from
    made_from = stamp.read_text() if stamp.exists() else None
    if ff.kind == "gaff" and not (
        (params_dir / "molecule.json").exists() and made_from == ff.source
    ):
        formula = ff.atoms.get_chemical_formula()
        made = gaff.parametrize_structure(ff.atoms, workdir, ff.smiles, ff.net_charge, formula)
        made.save(params_dir)
        stamp.write_text(ff.source)
    params = gaff.load_parameters(params_dir)
    if ff.kind == "parameters":  # into the data's atom order
        params = gaff.match_to(params, ff.atoms)
        params_dir = workdir / "parameters_matched"
        params.save(params_dir)
    relaxed = gaff.relaxed_geometry(params_dir, atoms=ff.atoms)
    ds = rattled_dataset(
        relaxed,
        gaff.gaff_potential(params_dir),
        n_frames=n_frames,
        sigma=RATTLE_SIGMA_A,
        seed=seed,
        config_type="gaff_rattled",
        reference_name=f"GAFF-{gaff.GAFF_VERSION}/AM1-BCC ({params.name})",
        provenance={
            "gaff_parameters": params.provenance,
            "relaxed_energy_eV": relaxed.info["energy"],
            "ff_source": ff.source,
        },
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_npz(path)
    return ds
