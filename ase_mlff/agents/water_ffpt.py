"""Paper 001's liquid-water study (§2.2, Fig. 3): monomer force-field pre-training, then
fine-tuning on bulk water, against the same architecture trained from scratch (the
``water_ffpt`` recipe is its command line).

    from ase_mlff.agents.ff_pretraining import FFPTOptions
    from ase_mlff.agents.water_ffpt import water_ffpt_study
    from ase_mlff.recipes.water_ffpt import PROFILES
    outcome = water_ffpt_study(PROFILES["quick"], FFPTOptions(out=Path("w")))
    print(outcome.table)

The steps, in one MLflow parent run with a child run per variant:

1. flexible-TIP3P monomers rattled (x + 0.2 Å·ε) and labelled by the torch TIP3P monomer
   (:func:`pretraining_data`, cached in ``out``);
2. the variants ``scratch`` and ``ffpt``
   (:func:`ase_mlff.agents.ff_pretraining.train_variants`) on the shipped bulk set's
   training frames (trajectory 0), the test set being trajectory 1;
3. per variant: test force errors; batched Langevin MD (:data:`MD_PROTOCOL`) from test
   frames, stopped by the RDF criterion of paper 003 (:data:`RDF_DELTA`), atom overlap,
   non-finite or exploding forces and temperature bounds; the O–O, O–H, H–H RDF MAE of the
   stable part and the oxygen self-diffusion coefficient;
4. the log-rank tests of t_inst, figures, ``comparison.md`` and ``results.json`` in
   ``out``.

``profile`` is a dict of the recipe's ``PROFILES``; :class:`~ase_mlff.agents.
ff_pretraining.FFPTOptions` holds the command line's choices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ase_mlff.agents.ff_pretraining import (
    RATTLE_SIGMA_A,
    VARIANT_NAMES,
    FFPTOptions,
    Settings,
    Variants,
    learning_curve_figures,
    output_folder,
    resolve_settings,
    save_figures,
    study_protocol,
    train_variants,
    variant_metrics,
    write_outputs,
)
from ase_mlff.agents.study import StudyOutcome
from ase_mlff.data import Dataset, load_dataset
from ase_mlff.data.splits import holdout_split, shipped_split, start_structures
from ase_mlff.md.protocol import PROTOCOLS
from ase_mlff.metrics.diffusion import diffusion_coefficient
from ase_mlff.metrics.errors import error_metrics
from ase_mlff.metrics.rdf import rdf_figure, rdf_mae, rdf_of_frames
from ase_mlff.metrics.stability import (
    format_ci,
    logrank_markdown,
    pairwise_logrank,
    survival_summary,
)
from ase_mlff.models.prediction import predict
from ase_mlff.reference.sampling import rattled_dataset

NAME = "water_ffpt"
#: the paper's 950/50 needs 1,000 frames outside the test trajectory; the shipped set has
#: 800 (2 trajectories x 800 frames, the second held out)
N_TRAIN = 750
MD_PROTOCOL = PROTOCOLS["water_langevin"].integration()
PAIRS = [(8, 8), (8, 1), (1, 1)]
PAIR_NAMES = ["O–O", "O–H", "H–H"]
#: RDF bins: MDsim's width (observable.ipynb: 500 bins on [0, 6] Å for water), up to half
#: the box (:func:`rdf_grid`; paper 003 Eq. 8 integrates over all r that the box allows)
RDF_BIN_WIDTH = 6.0 / 500
RDF_DELTA = 3.0  # paper 003, water
CHECK_EVERY, RECORD_EVERY = 10, 20
PRETRAIN_FILE = "pretrain_tip3p_monomer.npz"
REFERENCE_CURVE = "reference (flexible TIP3P, OpenMM)"


@dataclass
class _WaterStudy:
    """One study's settings and data, and its results so far."""

    opts: FFPTOptions
    prof: dict[str, Any]
    settings: Settings
    out: Path
    experiment: str
    train: Dataset
    val: Dataset
    test: Dataset
    test_eval: Dataset
    model_cfg: dict[str, Any]
    frame_dt: float
    protocol: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Reference:
    """What the MD evaluation compares with: the reference RDFs, the oxygen indices, the
    start structures and the RDF detector's window (in checks)."""

    g_ref: np.ndarray
    oxygens: np.ndarray
    starts: list
    window_checks: int
    grid: tuple[float, int]  # (r_max Å, n_bins) of every RDF


def rdf_grid(cell_33: np.ndarray) -> tuple[float, int]:
    """(r_max, n_bins): half the smallest height of the box (6.21 Å for the shipped water)
    in bins of :data:`RDF_BIN_WIDTH`."""
    from ase_mlff.graph.rdf import half_cell_height

    r_max = float(half_cell_height(torch.as_tensor(np.asarray(cell_33, dtype=np.float64)))[0])
    return r_max, max(1, round(r_max / RDF_BIN_WIDTH))


def reference_rdf(ds: Dataset, grid: tuple[float, int], stride: int = 4) -> np.ndarray:
    """(P, n_bins) element-pair RDFs of the reference frames (every ``stride``-th, at most
    200), on the grid the RDF detector uses."""
    frames = np.arange(0, len(ds), stride)[:200]
    return rdf_of_frames(ds[frames].to_atoms_list(with_labels=False), PAIRS, *grid)[1]


def rdf_of_positions(pos_tnc: np.ndarray, like, grid: tuple[float, int]) -> np.ndarray:
    """RDFs (P, n_bins) of frames with the numbers and cell of the Atoms ``like``."""
    return rdf_of_frames(
        pos_tnc, PAIRS, *grid, numbers=like.numbers, cell=np.asarray(like.cell[:])
    )[1]


def pretraining_data(out: Path, n_frames: int, seed: int) -> Dataset:
    """Rattled flexible-TIP3P monomers labelled by the torch TIP3P monomer, cached in
    ``out/pretrain_tip3p_monomer.npz`` (a file already there is read as it is)."""
    from ase_mlff.forcefields.water import tip3p_monomer_atoms, tip3p_monomer_potential

    path = out / PRETRAIN_FILE
    if path.exists():
        return Dataset.load_npz(path)
    ds = rattled_dataset(
        tip3p_monomer_atoms(),
        tip3p_monomer_potential(),
        n_frames=n_frames,
        sigma=RATTLE_SIGMA_A,
        seed=seed,
        config_type="tip3p_monomer_rattled",
        reference_name="flexible TIP3P monomer (OpenMM tip3p.xml parameters)",
    )
    ds.save_npz(path)
    return ds


def _prepare(prof: dict[str, Any], opts: FFPTOptions) -> _WaterStudy:
    """The output folder, the shipped split, the evaluated test frames and the settings."""
    settings = resolve_settings(opts, prof)
    out = output_folder(opts, NAME)
    bulk = load_dataset("water")
    n_train = N_TRAIN if opts.n_train is None else opts.n_train
    split = shipped_split("water", bulk, n_train, opts.n_val, opts.seed)
    train, val, test = bulk[split.train], bulk[split.val], bulk[split.test]
    n_test = opts.n_test or prof["n_test"]
    st = _WaterStudy(
        opts=opts,
        prof=prof,
        settings=settings,
        out=out,
        experiment=NAME if opts.experiment is None else opts.experiment,
        train=train,
        val=val,
        test=test,
        test_eval=test if n_test is None else test[np.arange(min(n_test, len(test)))],
        model_cfg={"name": opts.model, **prof["model"], "species": bulk.species},
        frame_dt=float(np.diff(test.extra_s["time_fs"][:2])[0]),
    )
    st.protocol = _protocol(st, bulk.provenance)
    st.results = {"protocol": st.protocol, "variants": {}}
    return st


def _protocol(st: _WaterStudy, bulk_provenance: dict[str, Any]) -> dict[str, Any]:
    """Everything that defines the study: the parent run's parameters."""
    s = st.settings
    return study_protocol(
        st.opts,
        s,
        st.model_cfg,
        RATTLE_SIGMA_A,
        (len(st.train), len(st.val), len(st.test_eval)),
        pretraining_reference="flexible TIP3P monomer (OpenMM tip3p.xml), ase_mlff torch",
        finetuning_reference=bulk_provenance.get("model", "flexible TIP3P bulk, OpenMM PME"),
        md={
            **MD_PROTOCOL,
            "steps": s.md_steps,
            "replicas": s.replicas,
            "rdf_delta": RDF_DELTA,
            "rdf_window_fs": st.prof["rdf_window_fs"],
        },
    )


def _reference(st: _WaterStudy) -> _Reference:
    """The reference RDFs and oxygen self-diffusion of the test trajectory (the latter
    into ``results["reference"]``), the MD starts spread over it, the RDF window."""
    test = st.test
    grid = rdf_grid(test.cell_s33[0])
    g_ref = reference_rdf(test, grid)
    oxygens = np.flatnonzero(test.to_atoms(0).numbers == 8)
    d_ref = diffusion_coefficient(
        test.positions_nc.reshape(len(test), -1, 3),
        st.frame_dt,
        0.25 * len(test) * st.frame_dt,
        test.cell_s33[0],
        oxygens,
    )
    st.results["reference"] = {"D_O_A2_per_fs": d_ref, "D_O_cm2_per_s": d_ref * 0.1}
    return _Reference(
        g_ref=g_ref,
        oxygens=oxygens,
        starts=start_structures("water", st.settings.replicas),
        window_checks=max(1, int(st.prof["rdf_window_fs"] / (CHECK_EVERY * MD_PROTOCOL["dt"]))),
        grid=grid,
    )


def _run_md(st: _WaterStudy, model: torch.nn.Module, ref: _Reference):
    """Batched Langevin MD of ``model`` from the starts with the water detectors."""
    from ase_mlff.md.detectors import (
        AtomOverlap,
        ExplodingForces,
        NonFinite,
        RDFDeviation,
        TemperatureBounds,
    )
    from ase_mlff.md.runner import run_md

    return run_md(
        model,
        ref.starts,
        steps=st.settings.md_steps,
        seed=st.opts.seed,
        check_every=CHECK_EVERY,
        record_every=RECORD_EVERY,
        progress=False,
        detectors=None,
        detector_factory=lambda images, state: [
            NonFinite(),
            AtomOverlap(state),
            ExplodingForces(),
            TemperatureBounds(),
            RDFDeviation(PAIRS, ref.g_ref, ref.grid[0], ref.window_checks, RDF_DELTA),
        ],
        **MD_PROTOCOL,
    )


def _stable_observables(res: dict[str, Any], pos: list, ref: _Reference) -> np.ndarray:
    """The mean RDFs of the stable parts ``pos`` (returned) and their MAE per pair into
    ``res``, and, with at least 3 frames each, the oxygen self-diffusion coefficient over
    windows of half the shortest stable span, all of them averaged."""
    like = ref.starts[0]
    g = np.mean([rdf_of_positions(p_, like, ref.grid) for p_ in pos], axis=0)
    res["rdf_mae"] = dict(zip(PAIR_NAMES, map(float, rdf_mae(g, ref.g_ref, ref.grid[0]))))
    res["rdf_grid"] = {"r_max_A": ref.grid[0], "n_bins": ref.grid[1]}
    span = min(len(p_) for p_ in pos)
    if span >= 3:  # windows of half the stable span, all of them averaged
        frame_fs = RECORD_EVERY * MD_PROTOCOL["dt"]
        window = ((span - 1) // 2) * frame_fs
        ds = [
            diffusion_coefficient(p_, frame_fs, window, np.asarray(like.cell[:]), ref.oxygens)
            for p_ in pos
        ]
        res["D_O_A2_per_fs"] = float(np.mean(ds))
        res["D_window_fs"] = window
    return g


def _evaluate_variant(
    st: _WaterStudy, checkpoint: Path, ref: _Reference
) -> tuple[dict[str, Any], np.ndarray | None]:
    """One variant's test errors, MD stability (survival statistics) and observables of
    the stable part; returns them and its mean RDFs (None without stored frames)."""
    from ase_mlff.models.io import load_model

    model, _ = load_model(checkpoint, dtype=torch.float64)
    pr = predict(model, st.test_eval, batch_size=8, dtype=torch.float64)
    res: dict[str, Any] = {"test": error_metrics(pr["energy"], pr["forces"], st.test_eval)}
    t0 = time.perf_counter()
    run = _run_md(st, model, ref)
    res["md_seconds"] = time.perf_counter() - t0
    t_inst = [x.t_inst_fs for x in run.replicas]
    stable = [x.stable for x in run.replicas]
    res["stability"] = {
        # right-censored survival statistics (Wilson, KM median, RMST with CIs)
        **survival_summary(t_inst, stable, run.steps * run.dt_fs),
        "t_inst_fs": t_inst,
        "reasons": [x.reason for x in run.replicas],
    }
    pos = [x.positions_tn3 for x in run.replicas if len(x.positions_tn3) > 1]
    g = _stable_observables(res, pos, ref) if pos else None
    return res, g


def _log_variant(name: str, res: dict[str, Any], v: Variants, parent) -> None:
    """A variant's metrics into its child run (with its checkpoint) and the parent run."""
    flat = variant_metrics(res)
    flat.update({f"rdf_mae_{k.replace('–', '')}": x for k, x in res.get("rdf_mae", {}).items()})
    if "D_O_A2_per_fs" in res:
        flat["D_O_A2_per_fs"] = res["D_O_A2_per_fs"]
    v.handles[name].log_metrics(flat)
    v.handles[name].log_artifact(v.checkpoints[name], "checkpoint")
    parent.log_metrics({f"{name}.{k}": x for k, x in flat.items()})


def _evaluate(st: _WaterStudy, v: Variants, parent) -> dict[str, np.ndarray]:
    """Every variant evaluated and logged; returns the RDF curves, the reference first."""
    ref = _reference(st)
    curves = {REFERENCE_CURVE: ref.g_ref}
    for name in VARIANT_NAMES:
        res, g = _evaluate_variant(st, v.checkpoints[name], ref)
        if g is not None:
            curves[name] = g
        st.results["variants"][name] = res
        _log_variant(name, res, v, parent)
    return curves


def _figures(
    curves: dict[str, np.ndarray], histories: dict[str, dict], grid: tuple[float, int]
) -> dict[str, Any]:
    """``rdf.png`` (a panel per pair) and the learning curves."""
    r_max, n_bins = grid
    r = (np.arange(n_bins) + 0.5) * r_max / n_bins
    panels = {n: {m: g[k] for m, g in curves.items()} for k, n in enumerate(PAIR_NAMES)}
    return {"rdf.png": rdf_figure(r, panels), **learning_curve_figures(histories)}


def _logrank(st: _WaterStudy) -> Any:
    """Pairwise log-rank tests of the variants' t_inst, censored at the run length."""
    variants = st.results["variants"]
    return pairwise_logrank(
        {
            n: (
                variants[n]["stability"]["t_inst_fs"],
                [r is None for r in variants[n]["stability"]["reasons"]],
            )
            for n in VARIANT_NAMES
        },
        st.settings.md_steps * MD_PROTOCOL["dt"],
    )


def comparison_table(results: dict[str, Any]) -> str:
    """The Markdown table of the variants and the reference, with the log-rank tests."""
    d_ref = results["reference"]["D_O_A2_per_fs"]
    lines = [
        "| model | test F-MAE (meV/Å) | stable replicas [Wilson 95 % CI] | "
        "mean t_inst = RMST (ps) [95 % CI] | RDF MAE O–O / O–H / H–H | D_O (1e-5 cm²/s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in results["variants"].items():
        s = v["stability"]
        m = v.get("rdf_mae", {})
        rdf_s = " / ".join(f"{m[n]:.2f}" for n in PAIR_NAMES) if m else "—"
        d = v.get("D_O_A2_per_fs")
        lines.append(
            f"| {name} | {v['test']['forces_mae'] * 1e3:.1f} | "
            f"{round(s['fraction_stable'] * s['n_replicas'])}/{s['n_replicas']} "
            f"[{s['fraction_stable_lo']:.2f}, {s['fraction_stable_hi']:.2f}] | "
            f"{format_ci(s['rmst_fs'] / 1e3, s['rmst_fs_lo'] / 1e3, s['rmst_fs_hi'] / 1e3, '.2f')}"
            f" | {rdf_s} | "
            f"{'—' if d is None else f'{d * 1e4:.2f}'} |"
        )
    lines.append(f"| reference | 0 | — | — | 0 | {d_ref * 1e4:.2f} |")
    table = "\n".join(lines) + "\n"
    if results.get("logrank"):
        table += "\nLog-rank tests of t_inst:\n\n" + logrank_markdown(results["logrank"])
    return table


def water_ffpt_study(prof: dict[str, Any], opts: FFPTOptions) -> StudyOutcome:
    """Paper 001's water study with the profile ``prof`` (the module doc's steps), one
    MLflow parent run (``opts.experiment`` in ``opts.tracking_uri``) with a child run per
    variant. A rerun in the same ``opts.out`` re-reads the pre-training set and skips
    finished training stages."""
    from ase_mlff.tracking import Tracker

    t_start = time.perf_counter()
    st = _prepare(prof, opts)
    tracker = Tracker(st.experiment, uri=opts.tracking_uri)
    with tracker.run(
        f"water_ffpt-{time.strftime('%Y%m%d-%H%M%S')}",
        params=st.protocol,
        tags={"recipe": "water_ffpt", "paper": "001"},
    ) as parent:
        pt_data = pretraining_data(st.out, st.settings.n_pretrain, opts.seed)
        parent.log_dict(pt_data.provenance, "pretrain_data_provenance.json")
        v = train_variants(
            st.model_cfg,
            holdout_split(pt_data, opts.seed),
            (st.train, st.val),
            st.settings.cfgs,
            st.out,
            tracker,
            parent,
        )
        curves = _evaluate(st, v, parent)
        grid = rdf_grid(st.test.cell_s33[0])
        st.results["rdf_grid"] = {"r_max_A": grid[0], "n_bins": grid[1]}
        save_figures(_figures(curves, v.histories, grid), st.out, parent)
        st.results["logrank"] = _logrank(st)
        table = comparison_table(st.results)
        write_outputs(st.out, st.results, table, parent, t_start)
    return StudyOutcome(st.results, table, st.out, tracker.uri)


__all__ = [
    "MD_PROTOCOL",
    "N_TRAIN",
    "PAIRS",
    "PAIR_NAMES",
    "RDF_DELTA",
    "RDF_BIN_WIDTH",
    "comparison_table",
    "pretraining_data",
    "rdf_grid",
    "rdf_of_positions",
    "reference_rdf",
    "water_ffpt_study",
]
