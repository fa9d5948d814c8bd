"""Paper 001's aspirin study (§2.1, Figs. 1c, 2): GAFF pre-training, then fine-tuning on
the shipped GFN2-xTB data, against the same architecture trained from scratch (the
``aspirin_ffpt`` recipe is its command line).

    from ase_mlff.agents.ff_pretraining import FFPTOptions
    from ase_mlff.agents.aspirin_ffpt import aspirin_ffpt_study
    from ase_mlff.recipes.aspirin_ffpt import PROFILES
    outcome = aspirin_ffpt_study(PROFILES["quick"], FFPTOptions(out=Path("a")))
    print(outcome.table)

The steps, in one MLflow parent run (protocol, GAFF's own test error, comparison table
and figures) with a child run per variant (stage histories, test metrics, t_inst
statistics, scans):

1. GAFF-2.11 relaxed from the GFN2-xTB minimum, frames rattled around it (x + 0.2 Å·ε)
   and labelled by the torch GAFF (:func:`pretraining_data`, cached in ``out``);
2. the variants ``scratch`` and ``ffpt``
   (:func:`ase_mlff.agents.ff_pretraining.train_variants`) on the shipped split
   (:func:`finetune_split`: trajectories 0-3 for training, trajectory 4 the test set);
3. per variant (and the pre-trained model alone): test errors; a Ray stability study
   (:data:`MD_PROTOCOL`, the default detectors); the h(r) MAE of the stable part
   (:func:`stable_positions`); 1-D scans of a methyl C–H stretch and H–C–H closing
   against GFN2-xTB and GAFF (:func:`run_scans`);
4. figures, ``comparison.md`` and ``results.json`` in ``out``.

``profile`` is a dict of the recipe's ``PROFILES``; :class:`~ase_mlff.agents.
ff_pretraining.FFPTOptions` holds the command line's choices (``n_test`` is not used).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ase.io
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
from ase_mlff.agents.specs import make_calculator
from ase_mlff.agents.study import StudyOutcome, StudyResult, run_stability_study
from ase_mlff.data import Dataset, load_dataset
from ase_mlff.data.io import SHIPPED_DIR
from ase_mlff.data.splits import holdout_split, shipped_split, start_structures
from ase_mlff.md.protocol import PROTOCOLS
from ase_mlff.metrics.distance_distribution import (
    H_R_MAE_LABEL,
    h_of_r,
    h_of_r_figure,
    h_of_r_mae,
)
from ase_mlff.metrics.errors import error_metrics
from ase_mlff.metrics.plots import survival_figure
from ase_mlff.metrics.scans import angle_scan, bond_scan, methyl_atoms, scan_energies, scan_figure
from ase_mlff.models.prediction import predict
from ase_mlff.reference.sampling import rattled_dataset

NAME = "aspirin_ffpt"
#: paper 001: 950 training / 50 validation frames
N_TRAIN = 950
#: paper 001, Methods: Langevin, friction 2 ps⁻¹, 0.5 fs; aspirin at 500 K (paper 003)
MD_PROTOCOL = PROTOCOLS["aspirin_langevin"].integration()
CHECK_EVERY, RECORD_EVERY = 10, 20
#: the bond detector's limit (Å), recorded in the protocol
BOND_DELTA_A = 0.5
PRETRAIN_FILE = "pretrain_gaff.npz"
#: the models whose test errors and scans are reported (MD: :data:`VARIANT_NAMES`)
EVALUATED = ("scratch", "ffpt", "pretrained only")

STRETCH_A = np.linspace(0.6, 4.0, 35)
ANGLE_DEG = np.linspace(125.0, 15.0, 23)


@dataclass
class _AspirinStudy:
    """One study's settings and data, and its results so far."""

    opts: FFPTOptions
    prof: dict[str, Any]
    settings: Settings
    out: Path
    experiment: str
    train: Dataset
    val: Dataset
    test: Dataset
    model_cfg: dict[str, Any]
    protocol: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)


def finetune_split(ds: Dataset, n_train: int, n_val: int, seed: int):
    """The shipped aspirin split: training and validation frames from trajectories 0-3,
    the whole trajectory 4 the test set."""
    return shipped_split("aspirin", ds, n_train, n_val, seed)


def pretraining_data(out: Path, n_frames: int, seed: int) -> tuple[Dataset, dict[str, Any]]:
    """GAFF-labelled rattled aspirin, cached in ``out/pretrain_gaff.npz``."""
    from ase_mlff.forcefields.gaff import gaff_potential, load_parameters, relaxed_geometry

    path = out / PRETRAIN_FILE
    if path.exists():
        ds = Dataset.load_npz(path)
        if len(ds) == n_frames and ds.provenance.get("seed") == seed:
            return ds, ds.provenance
    relaxed = relaxed_geometry("aspirin")
    params = load_parameters("aspirin")
    ds = rattled_dataset(
        relaxed,
        gaff_potential("aspirin"),
        n_frames=n_frames,
        sigma=RATTLE_SIGMA_A,
        seed=seed,
        config_type="gaff_rattled",
        reference_name="GAFF-2.11/AM1-BCC (ase_mlff torch, shipped aspirin parameters)",
        provenance={
            "gaff_parameters": params.provenance,
            "relaxed_energy_eV": relaxed.info["energy"],
        },
    )
    ds.save_npz(path)
    return ds, ds.provenance


def stable_positions(rows: list[dict], model: str) -> np.ndarray:
    """Stored positions of the stable part of every replica of ``model`` (F, N, 3)."""
    from ase_mlff.md.storage import read_replica

    frames = []
    for r in rows:
        if r["model"] != model:
            continue
        for a in read_replica(r["traj_dir"], int(r["replica_id"])):
            if r["stable"] or a.info["time_fs"] < r["t_inst_fs"]:
                frames.append(a.positions)
    return np.array(frames)


def run_scans(models: dict[str, Any], start) -> dict[str, Any]:
    """C–H stretch and H–C–H closing for every potential; energies relative to the start."""
    c, hs = methyl_atoms(start)
    r0 = start.get_distance(c, hs[0])
    theta0 = start.get_angle(hs[1], c, hs[0])
    stretch = bond_scan(start, c, hs[0], [r0, *STRETCH_A])
    bend = angle_scan(start, hs[1], c, hs[0], [theta0, *ANGLE_DEG])
    res: dict[str, Any] = {"stretch_A": STRETCH_A.tolist(), "angle_deg": ANGLE_DEG.tolist()}
    curves_s, curves_b = {}, {}
    for name, ref in models.items():
        es = scan_energies(ref, stretch)
        eb = scan_energies(ref, bend)
        curves_s[name] = es[1:] - es[0]
        curves_b[name] = eb[1:] - eb[0]
        res[name] = {
            "stretch_eV": curves_s[name].tolist(),
            "bend_eV": curves_b[name].tolist(),
            # > 0: some scan point lies below the minimum-region start, a hole
            "stretch_hole_eV": float(max(0.0, -curves_s[name].min())),
            "bend_hole_eV": float(max(0.0, -curves_b[name].min())),
            "dissociation_eV": float(curves_s[name][-1]),
            "bend_at_15deg_eV": float(curves_b[name][-1]),
        }
    res["figures"] = {
        "scan_ch_stretch.png": scan_figure(
            STRETCH_A, curves_s, "C–H distance (Å)", "methyl C–H stretched"
        ),
        "scan_hch_angle.png": scan_figure(
            ANGLE_DEG, curves_b, "H–C–H angle (°)", "methyl H–C–H closed"
        ),
    }
    return res


def _prepare(prof: dict[str, Any], opts: FFPTOptions) -> _AspirinStudy:
    """The output folder, the shipped split and the settings."""
    settings = resolve_settings(opts, prof)
    out = output_folder(opts, NAME)
    qm = load_dataset("aspirin")
    n_train = N_TRAIN if opts.n_train is None else opts.n_train
    split = finetune_split(qm, n_train, opts.n_val, opts.seed)
    st = _AspirinStudy(
        opts=opts,
        prof=prof,
        settings=settings,
        out=out,
        experiment=NAME if opts.experiment is None else opts.experiment,
        train=qm[split.train],
        val=qm[split.val],
        test=qm[split.test],
        model_cfg={"name": opts.model, **prof["model"], "species": qm.species},
    )
    st.protocol = _protocol(st)
    st.results = {"protocol": st.protocol, "variants": {}}
    return st


def _protocol(st: _AspirinStudy) -> dict[str, Any]:
    """Everything that defines the study: the parent run's parameters."""
    s = st.settings
    sizes = (len(st.train), len(st.val), len(st.test))
    md = {**MD_PROTOCOL, "steps": s.md_steps, "replicas": s.replicas, "bond_delta_A": BOND_DELTA_A}
    return study_protocol(st.opts, s, st.model_cfg, RATTLE_SIGMA_A, sizes, md=md)


def _pretraining(st: _AspirinStudy, parent) -> Dataset:
    """Step 1: the GAFF pre-training set, its time and provenance logged to ``parent``."""
    t0 = time.perf_counter()
    pt_data, pt_prov = pretraining_data(st.out, st.settings.n_pretrain, st.opts.seed)
    parent.log_metrics({"pretrain_data_seconds": time.perf_counter() - t0})
    parent.log_dict(pt_prov, "pretrain_data_provenance.json")
    return pt_data


def _gaff_test(st: _AspirinStudy, parent) -> torch.nn.Module:
    """The teacher's own test errors (``results["gaff_test"]``, ``gaff_test_*`` metrics);
    returns the torch GAFF."""
    from ase_mlff.forcefields.gaff import gaff_potential

    gaff = gaff_potential("aspirin")
    p_gaff = predict(gaff, st.test, batch_size=1200, dtype=torch.float64)
    gaff_err = error_metrics(p_gaff["energy"], p_gaff["forces"], st.test)
    parent.log_metrics({f"gaff_test_{k}": v for k, v in gaff_err.items()})
    st.results["gaff_test"] = gaff_err
    return gaff


def _test_errors(st: _AspirinStudy, checkpoints: dict[str, Path]) -> dict[str, Any]:
    """Every checkpoint loaded (float64, returned) and the test errors of the
    :data:`EVALUATED` models into ``results["variants"]``."""
    from ase_mlff.models.io import load_model

    models = {k: load_model(p, dtype=torch.float64)[0] for k, p in checkpoints.items()}
    for name in EVALUATED:
        pr = predict(models[name], st.test, batch_size=64, dtype=torch.float64)
        st.results["variants"].setdefault(name, {})["test"] = error_metrics(
            pr["energy"], pr["forces"], st.test
        )
    return models


def _stability(st: _AspirinStudy, checkpoints: dict[str, Path]) -> tuple[StudyResult, float]:
    """The Ray stability study of the variants from the shipped starts; with its seconds."""
    t0 = time.perf_counter()
    study = run_stability_study(
        [str(checkpoints[n]) for n in VARIANT_NAMES],
        start_structures("aspirin", st.settings.replicas),
        n_replicas=st.settings.replicas,
        out_dir=st.out / "stability",
        md={
            **MD_PROTOCOL,
            "steps": st.settings.md_steps,
            "seed": st.opts.seed,
            "check_every": CHECK_EVERY,
            "record_every": RECORD_EVERY,
        },
    )
    return study, time.perf_counter() - t0


def _stable_h_of_r(
    st: _AspirinStudy, study: StudyResult, checkpoints: dict[str, Path]
) -> dict[str, Any]:
    """Each variant's survival statistics, h(r) MAE of its stable frames and their number
    into ``results["variants"]``; returns the ``h_r.png`` figure."""
    test = st.test
    r_grid, h_ref = h_of_r(test.positions_nc.reshape(len(test), -1, 3))
    h_curves = {"GFN2-xTB reference": h_ref}
    for name in VARIANT_NAMES:
        key = str(checkpoints[name])
        v = st.results["variants"][name]
        v["stability"] = study.summaries[key]
        pos = stable_positions(study.rows, key)
        if len(pos):
            _, h = h_of_r(pos)
            h_curves[name] = h
            v["h_r_mae"] = h_of_r_mae(h, h_ref)
        v["stable_frames"] = len(pos)
    return {"h_r.png": h_of_r_figure(r_grid, h_curves, "aspirin, 500 K")}


def _scans(st: _AspirinStudy, models: dict[str, Any], gaff) -> dict[str, Any]:
    """The scans of GFN2-xTB (tblite), GAFF and the :data:`EVALUATED` models from the
    shipped minimum into ``results``; returns their figures."""
    start = ase.io.read(SHIPPED_DIR / "aspirin_md17_order.xyz")
    scans = run_scans(
        {
            "GFN2-xTB": make_calculator({"name": "tblite"}),
            "GAFF-2.11": gaff,
            **{name: models[name] for name in EVALUATED},
        },
        start,
    )
    figures = scans.pop("figures")
    for name in EVALUATED:
        st.results["variants"][name]["scan"] = {
            k: v for k, v in scans[name].items() if isinstance(v, float)
        }
    st.results["scans"] = scans
    return figures


def _log_variants(st: _AspirinStudy, v: Variants, parent) -> None:
    """The variants' metrics into the parent run and their child runs (with checkpoints)."""
    for name in VARIANT_NAMES:
        res = st.results["variants"][name]
        flat = variant_metrics(res)
        if "h_r_mae" in res:
            flat["h_r_mae"] = res["h_r_mae"]
        flat.update({f"scan_{k}": x for k, x in res["scan"].items() if isinstance(x, float)})
        parent.log_metrics({f"{name}.{k}": x for k, x in flat.items()})
        # the child runs finished training; their evaluation is logged to them too
        v.handles[name].log_metrics(flat)
        v.handles[name].log_artifact(v.checkpoints[name], "checkpoint")


def comparison_table(results: dict[str, Any]) -> str:
    """The Markdown table of the models, the teacher and the reference."""
    g = results["gaff_test"]
    lines = [
        "| model | test F-MAE (meV/Å) | test E-MAE (meV/atom) | stable replicas | "
        "t_inst mean (fs) | " + H_R_MAE_LABEL + " | C–H stretch hole (eV) | H–C–H hole (eV) | "
        "E(C–H 4 Å) (eV) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in results["variants"].items():
        t, s, sc = v["test"], v.get("stability", {}), v.get("scan", {})
        stable = f"{round(s['fraction_stable'] * s['n_replicas'])}/{s['n_replicas']}" if s else "—"
        lines.append(
            f"| {name} | {t['forces_mae'] * 1e3:.1f} | {t['energy_mae_per_atom'] * 1e3:.2f} | "
            f"{stable} | {s.get('t_inst_mean_fs', float('nan')):.0f} | "
            f"{v.get('h_r_mae', float('nan')):.3f} | "
            f"{sc.get('stretch_hole_eV', float('nan')):.2f} | "
            f"{sc.get('bend_hole_eV', float('nan')):.2f} | "
            f"{sc.get('dissociation_eV', float('nan')):.2f} |"
        )
    gs = results["scans"]
    lines.append(
        f"| GAFF-2.11 (teacher) | {g['forces_mae'] * 1e3:.1f} | — | — | — | — | "
        f"{gs['GAFF-2.11']['stretch_hole_eV']:.2f} | {gs['GAFF-2.11']['bend_hole_eV']:.2f} | "
        f"{gs['GAFF-2.11']['dissociation_eV']:.2f} |"
    )
    lines.append(
        f"| GFN2-xTB (reference) | 0 | 0 | — | — | 0 | {gs['GFN2-xTB']['stretch_hole_eV']:.2f} | "
        f"{gs['GFN2-xTB']['bend_hole_eV']:.2f} | {gs['GFN2-xTB']['dissociation_eV']:.2f} |"
    )
    return "\n".join(lines) + "\n"


def aspirin_ffpt_study(prof: dict[str, Any], opts: FFPTOptions) -> StudyOutcome:
    """Paper 001's aspirin study with the profile ``prof`` (the module doc's steps), one
    MLflow parent run (``opts.experiment`` in ``opts.tracking_uri``) with a child run per
    variant. A rerun in the same ``opts.out`` re-reads the pre-training set (same size and
    seed) and skips finished training stages."""
    from ase_mlff.tracking import Tracker

    t_start = time.perf_counter()
    st = _prepare(prof, opts)
    tracker = Tracker(st.experiment, uri=opts.tracking_uri)
    with tracker.run(
        f"aspirin_ffpt-{time.strftime('%Y%m%d-%H%M%S')}",
        params=st.protocol,
        tags={"recipe": "aspirin_ffpt", "paper": "001"},
    ) as parent:
        pt_data = _pretraining(st, parent)
        gaff = _gaff_test(st, parent)
        pt_split = holdout_split(pt_data, opts.seed)
        v = train_variants(
            st.model_cfg, pt_split, (st.train, st.val), st.settings.cfgs, st.out, tracker, parent
        )
        models = _test_errors(st, v.checkpoints)
        study, md_seconds = _stability(st, v.checkpoints)
        h_figure = _stable_h_of_r(st, study, v.checkpoints)
        figures = _scans(st, models, gaff)
        figures["survival.png"] = survival_figure(
            {n: study.km[str(v.checkpoints[n])] for n in VARIANT_NAMES}
        )
        figures.update(h_figure)
        figures.update(learning_curve_figures(v.histories))
        save_figures(figures, st.out, parent)
        table = comparison_table(st.results)
        write_outputs(st.out, st.results, table, parent, t_start, {"md_seconds": md_seconds})
        parent.log_metrics({"total_minutes": st.results["total_minutes"]})
        _log_variants(st, v, parent)
    return StudyOutcome(st.results, table, st.out, tracker.uri)


__all__ = [
    "ANGLE_DEG",
    "EVALUATED",
    "MD_PROTOCOL",
    "N_TRAIN",
    "STRETCH_A",
    "aspirin_ffpt_study",
    "comparison_table",
    "finetune_split",
    "pretraining_data",
    "run_scans",
    "stable_positions",
]
