"""Paper 001's hydrogen-combustion test, reaction 9 HO2 → H + O2 (Fig. 4): MLFFs trained
from scratch and by force-field pre-training (Q-Force) then fine-tuning on spin-polarised
GFN2-xTB, judged by well-tempered metadynamics against the same metadynamics run on
spGFN2-xTB itself (the ``combustion_fes`` recipe is its command line).

    from ase_mlff.agents.combustion_fes import combustion_fes_study
    from ase_mlff.recipes.combustion_fes import PROFILES
    outcome = combustion_fes_study(PROFILES["quick"], FFPTOptions(out=Path("c")))

The steps, in one MLflow parent run with a child run per variant:

1. the shipped set (:mod:`ase_mlff.reference.combustion`; the second reaction-path block
   held out as the test set);
2. ``scratch`` and ``ffpt`` (:func:`~ase_mlff.agents.ff_pretraining.train_variants`),
   FFPT pre-trained on Q-Force labels of rattled HO2 and H + O2 (paper 001 Table 1,
   :func:`~ase_mlff.reference.combustion.qforce_pretraining_frames`);
3. per model and for spGFN2-xTB (:class:`~ase_mlff.models.external.CalculatorPotential`),
   one batched run of independent well-tempered walkers from relaxed HO2 with paper 001's
   settings: 300 K, Langevin 0.2 ps⁻¹, 0.2 fs, hills of 5 kJ/mol every 100 steps, width
   0.05 on both CVs — read in PLUMED's length unit, nm, so 0.5 Å — on the CVs d(O1–H3)
   (the paper's order parameter) and d(O2–H3): the H's distances to the two O, so that
   the bias drives the reaction and never the O–O bond, which only the potential can
   break; the bias factor (not stated in the paper) is :data:`BIAS_FACTOR`, and upper
   walls keep H within :data:`WALL_A` of both O (PLUMED UPPER_WALLS);
4. what the walkers reach: the fraction of recorded frames in HO2, H + O2 and the
   unphysical states (O2 broken, d(O1–O2) > :data:`O2_BROKEN_A`; an atom pushed onto
   another, any distance < 0.6 Å), and the first time each walker reached an unphysical state (its
   t_inst). The walkers run on through it, as the paper's scratch metadynamics did, so the
   free energy shows what the model does; only non-finite energies or forces stop them;
5. F(d(O1–H3), d(O2–H3)) of every model from its walkers' hills (mean over walkers),
   its MAE against spGFN2-xTB's over the region the reference populates (F_ref below
   :data:`POPULATED_KJ`), the profile F(r) along r = the H's distance to the nearer O,
   and the reaction free energy ΔF = F(H + O2) − F(HO2);
6. figures (the FES maps, F(r), the CV traces), ``comparison.md``, ``results.json``
   and every walker's PLUMED HILLS file.

Why not d(O1–O2) as the second CV: with hills on it (and γ = 60), all four spGFN2-xTB
walkers of a 100 ps run were pushed apart, O–O beyond 3 Å and up to 9 Å, heated above
3,000 K, and ended in non-finite xTB results at 13.7–23.5 ps: the bias itself broke the
reference's O2, so that a model's broken O2 would have meant nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms, units

from ase_mlff.agents.ff_pretraining import (
    FFPTOptions,
    Settings,
    learning_curve_figures,
    output_folder,
    resolve_settings,
    save_figures,
    study_protocol,
    train_variants,
    write_outputs,
)
from ase_mlff.agents.study import StudyOutcome
from ase_mlff.data import Dataset, load_dataset
from ase_mlff.data.splits import holdout_split, shipped_split
from ase_mlff.md.detectors import ExplodingForces, NonFinite
from ase_mlff.metrics.errors import error_metrics
from ase_mlff.metrics.plots import _plt
from ase_mlff.metrics.stability import survival_summary
from ase_mlff.models.prediction import predict
from ase_mlff.reference.alanine import KJ_PER_EV
from ase_mlff.reference.combustion import H3, O1, O2

NAME = "combustion_fes"
N_TRAIN = 1500
RATTLE_SIGMA_A = 0.1
#: paper 001 Methods: hills of 5 kJ/mol and width 0.05 (nm, PLUMED's unit) every 100
#: steps of 0.2 fs, Langevin 0.2 ps⁻¹, 300 K
HEIGHT_KJ, SIGMA_A, PACE, DT_FS, FRICTION, TEMPERATURE_K = 5.0, 0.5, 100, 0.2, 2e-4, 300.0
#: not in the paper: large enough that the walkers cross D_e ≈ 280 kJ/mol at 300 K
#: (well-tempered sampling ∝ exp(−F/(γ k_B T)); γ k_B T = 75 kJ/mol): the four
#: spGFN2-xTB walkers of a 12 ps test dissociated at 6.0-6.8 ps
BIAS_FACTOR = 30.0
#: the upper walls on d(O1–H3) and d(O2–H3): position (Å) and κ (eV/Å²)
WALL_A, WALL_KAPPA = 4.0, 5.0
#: unphysical: O2 broken beyond this d(O1–O2) (Å; 1.8 × its bond length — hot HO2 made
#: by H + O2 recombining under the weak thermostat reaches 1.93 Å on spGFN2-xTB without
#: breaking); atoms closer than this (Å)
O2_BROKEN_A, CONTACT_A = 2.2, 0.6
#: H bound to an O below this distance (Å): HO2 (either O), else H + O2
BOUND_A = 1.3
#: the FES is compared where the reference F is below this (kJ/mol)
POPULATED_KJ = 100.0
#: the grid of both CVs, d(O1–H3) and d(O2–H3) (Å)
GRID_OH = np.linspace(0.7, 4.6, 79)
KT_KJ = units.kB * TEMPERATURE_K * KJ_PER_EV  # k_B T, kJ/mol


def _h_distances() -> tuple[np.ndarray, np.ndarray]:
    """(r, far) on the map's cells, indexed [d(O2–H3), d(O1–H3)]: the H's distance to
    the nearer and to the farther O."""
    o2h, o1h = np.meshgrid(GRID_OH, GRID_OH, indexing="ij")
    return np.minimum(o1h, o2h), np.maximum(o1h, o2h)


@dataclass
class _Study:
    opts: FFPTOptions
    prof: dict[str, Any]
    settings: Settings
    out: Path
    train: Dataset
    val: Dataset
    test: Dataset
    model_cfg: dict[str, Any]
    start: Atoms
    results: dict[str, Any] = field(default_factory=dict)


def detectors(references, state) -> list:
    """Only broken numbers stop a walker: non-finite values and exploding forces."""
    return [NonFinite(), ExplodingForces(max_force=500.0)]


def make_metadynamics():
    from ase_mlff.md.colvars import Distance
    from ase_mlff.md.metadynamics import Metadynamics

    return Metadynamics(
        [Distance(O1, H3), Distance(O2, H3)],
        sigma=[SIGMA_A, SIGMA_A],
        height=HEIGHT_KJ / KJ_PER_EV,
        pace=PACE,
        temperature_K=TEMPERATURE_K,
        bias_factor=BIAS_FACTOR,
        upper_walls=[(0, WALL_A, WALL_KAPPA), (1, WALL_A, WALL_KAPPA)],
    )


def run_walkers(st: _Study, model: torch.nn.Module, traj_dir: Path, dtype=torch.float32):
    """Independent well-tempered walkers from relaxed HO2, in one batched run (resumed
    from its checkpoint in ``traj_dir``)."""
    from ase_mlff.md.runner import run_md

    metad = make_metadynamics()
    run = run_md(
        model,
        [st.start] * st.settings.replicas,
        steps=st.settings.md_steps,
        dt=DT_FS,
        integrator="langevin",
        temperature_K=TEMPERATURE_K,
        friction=FRICTION,
        seed=st.opts.seed,
        check_every=PACE,
        record_every=PACE,
        metadynamics=metad,
        detector_factory=detectors,
        traj_dir=traj_dir,
        checkpoint_every=PACE * 50,
        dtype=dtype,
    )
    return run, metad


def states(pos_tn3: np.ndarray) -> dict[str, np.ndarray]:
    """Per frame: d_OH (O1–H3), d_O2H (O2–H3), r_H (the nearer of the two), d_OO, and
    the state masks (module doc, step 4)."""
    d = lambda i, j: np.linalg.norm(pos_tn3[:, i] - pos_tn3[:, j], axis=1)  # noqa: E731
    d_oh, d_o2h, d_oo = d(O1, H3), d(O2, H3), d(O1, O2)
    contact = np.minimum(np.minimum(d_oh, d_o2h), d_oo) < CONTACT_A
    broken = (d_oo > O2_BROKEN_A) & ~contact
    bound = np.minimum(d_oh, d_o2h) < BOUND_A
    return {
        "d_OH": d_oh,
        "d_O2H": d_o2h,
        "r_H": np.minimum(d_oh, d_o2h),
        "d_OO": d_oo,
        "HO2": bound & ~broken & ~contact,
        "H + O2": ~bound & ~broken & ~contact,
        "O2 broken": broken,
        "contact": contact,
    }


def walker_outcomes(run) -> dict[str, Any]:
    """Fractions of frames per state over all walkers, and each walker's first time in an
    unphysical state (NaN: never) as a survival summary."""
    total = run.steps * run.dt_fs
    counts = {k: 0 for k in ("HO2", "H + O2", "O2 broken", "contact")}
    t_first, n_frames = [], 0
    traces = [states(r.positions_tn3) for r in run.replicas]
    for r, s in zip(run.replicas, traces):
        n_frames += len(r.positions_tn3)
        for k in counts:
            counts[k] += int(s[k].sum())
        bad = np.flatnonzero(s["O2 broken"] | s["contact"])
        t_first.append(float(r.times_fs[bad[0]]) if len(bad) else float("nan"))
    # broken numbers (a stopped walker) count too; fmin: a NaN (never) loses to a time
    t_first = [float(np.fmin(t, r.t_inst_fs)) for t, r in zip(t_first, run.replicas)]
    stable = [not np.isfinite(t) for t in t_first]
    return {
        "fractions": {k: c / max(n_frames, 1) for k, c in counts.items()},
        "t_unphysical_fs": t_first,
        "survival": survival_summary(t_first, stable, total),
        "reasons": [r.reason for r in run.replicas],
        "traces": traces,  # per walker: the distances and state masks of every frame
    }


def fes_map(metad, n_walkers: int) -> np.ndarray:
    """Mean over walkers of F(d(O1–H3), d(O2–H3)) from the hills, kJ/mol, indexed
    [d(O2–H3), d(O1–H3)] on :data:`GRID_OH`, min 0."""
    o2h, o1h = np.meshgrid(GRID_OH, GRID_OH, indexing="ij")
    pts = np.stack([o1h.ravel(), o2h.ravel()], axis=1)
    maps = [
        metad.free_energy(pts, walker=w).reshape(o1h.shape) * KJ_PER_EV
        for w in range(n_walkers)
    ]
    f = np.mean(maps, axis=0)
    return f - f.min()


def profile_oh(f2d: np.ndarray) -> np.ndarray:
    """F(r) on :data:`GRID_OH`, r = min(d(O1–H3), d(O2–H3)) the H's distance to the
    nearer O: the marginal −kT ln ∬ δ(r − min(a, b)) e^{−F(a, b)/kT} da db, as the sum
    over the map's cells whose r is that grid point, kJ/mol, min 0. HO2 with the H on
    either O is one basin at r ≈ 1 Å; H + O2 is r ≳ 3 Å."""
    from scipy.special import logsumexp

    r, _ = _h_distances()
    k = np.rint((r - GRID_OH[0]) / (GRID_OH[1] - GRID_OH[0])).astype(int).ravel()
    p = -KT_KJ * np.array([logsumexp(-f2d.ravel()[k == i] / KT_KJ) for i in range(len(GRID_OH))])
    return p - p.min()


def fes_errors(f2d: np.ndarray, ref2d: np.ndarray) -> dict[str, float]:
    """MAE of F over the region the reference populates (F_ref < POPULATED_KJ), after
    aligning both by their mean there (a free energy is defined up to a constant); the
    MAE of F(r) (:func:`profile_oh`) over r ≤ the wall (``mae_F_r_kj``); ΔF of the
    reaction (:func:`reaction_free_energy`)."""
    mask = ref2d < POPULATED_KJ
    a, b = f2d[mask], ref2d[mask]
    p, q = profile_oh(f2d), profile_oh(ref2d)
    inside = GRID_OH <= WALL_A
    return {
        "mae_F_kj": float(np.abs((a - a.mean()) - (b - b.mean())).mean()),
        "mae_F_r_kj": float(np.abs(p[inside] - q[inside]).mean()),
        "dF_reaction_kj": reaction_free_energy(f2d),
    }


def reaction_free_energy(f2d: np.ndarray) -> float:
    """ΔF = F(H + O2) − F(HO2), kJ/mol, each state's F = −kT ln Σ e^{−F/kT} over its cells
    of the map: HO2 where the H is within :data:`BOUND_A` of an O; H + O2 where it is at
    least 2.5 Å from both and within the walls (beyond them the walls, not the potential,
    shape F)."""
    from scipy.special import logsumexp

    r, far = _h_distances()
    bound, free = r < BOUND_A, (r >= 2.5) & (far <= WALL_A)
    return float(-KT_KJ * (logsumexp(-f2d[free] / KT_KJ) - logsumexp(-f2d[bound] / KT_KJ)))


def pretraining_data(out: Path, n_frames: int, seed: int) -> Dataset:
    """Q-Force frames (rattled HO2 and H + O2, σ = :data:`RATTLE_SIGMA_A`), cached."""
    from ase_mlff.reference.combustion import qforce_pretraining_frames

    path = out / "pretrain_qforce.npz"
    if path.exists():
        ds = Dataset.load_npz(path)
        if len(ds) == n_frames and ds.provenance.get("seed") == seed:
            return ds
    ds = qforce_pretraining_frames(n_frames, RATTLE_SIGMA_A, seed)
    ds.save_npz(path)
    return ds


def _prepare(prof: dict[str, Any], opts: FFPTOptions) -> _Study:
    from ase_mlff.reference.combustion import ho2_guess, relaxed, spgfn2

    ds = load_dataset("combustion")
    n_train = N_TRAIN if opts.n_train is None else opts.n_train
    split = shipped_split("combustion", ds, n_train, opts.n_val, opts.seed)
    st = _Study(
        opts=opts,
        prof=prof,
        settings=resolve_settings(opts, prof),
        out=output_folder(opts, NAME),
        train=ds[split.train],
        val=ds[split.val],
        test=ds[split.test],
        model_cfg={"name": opts.model, **prof["model"], "species": ds.species},
        start=relaxed(ho2_guess(), spgfn2()),
    )
    metad = {
        "height_kj": HEIGHT_KJ,
        "sigma_A": SIGMA_A,
        "bias_factor": BIAS_FACTOR,
        "pace_steps": PACE,
        "dt_fs": DT_FS,
        "walker_ps": st.settings.md_steps * DT_FS / 1000.0,
        "temperature_K": TEMPERATURE_K,
        "friction_per_fs": FRICTION,
        "cvs": ["d(O1-H3)", "d(O2-H3)"],
        "upper_walls": {"cvs": "both", "at_A": WALL_A, "kappa_eV_per_A2": WALL_KAPPA},
        "o2_broken_above_A": O2_BROKEN_A,
    }
    sizes = (len(st.train), len(st.val), len(st.test))
    protocol = study_protocol(
        opts, st.settings, st.model_cfg, RATTLE_SIGMA_A, sizes, metadynamics=metad
    )
    st.results = {"protocol": protocol, "models": {}}
    return st


def evaluate(st: _Study, name: str, model: torch.nn.Module, dtype=torch.float32) -> dict[str, Any]:
    """Test errors (models only), the walkers, their outcomes and the FES map."""
    res: dict[str, Any] = {}
    if name != "spGFN2-xTB":
        pr = predict(model, st.test, batch_size=256, dtype=dtype)
        res["test"] = error_metrics(pr["energy"], pr["forces"], st.test)
    t0 = time.perf_counter()
    md_dir = st.out / f"md_{name.replace(' ', '_')}"
    run, metad = run_walkers(st, model, md_dir, dtype=dtype)
    res["md_seconds"] = time.perf_counter() - t0
    res.update(walker_outcomes(run))
    n = 0 if metad.centers is None else int(metad.centers.shape[0])
    for w in range(n):
        metad.write_hills(md_dir / f"HILLS.{w}", walker=w)
    res["fes_map"] = fes_map(metad, n) if n else None
    res["times_fs"] = [r.times_fs for r in run.replicas]
    return res


def figures(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``fes.png``: F(d(O1–H3), d(O2–H3)) of every model; ``fes_oh.png``: F(r) along
    the H's distance to the nearer O; ``traces.png``: each walker's r and d(O1–O2)
    against time."""
    plt = _plt()
    names = [k for k, r in results.items() if r.get("fes_map") is not None]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        cs = ax.contourf(GRID_OH, GRID_OH, np.minimum(results[name]["fes_map"], 300.0), 20)
        ax.set(title=name, xlabel="d(O1–H3) (Å)", ylabel="d(O2–H3) (Å)")
        fig.colorbar(cs, ax=ax, label="F (kJ/mol)")
    fig.tight_layout()
    fig2, ax2 = plt.subplots(figsize=(5, 3.4))
    for name in names:
        ax2.plot(GRID_OH, profile_oh(results[name]["fes_map"]), label=name)
    ax2.axvline(WALL_A, color="grey", ls=":", label="wall")
    ax2.set(xlabel="r = min d(O–H3) (Å)", ylabel="F (kJ/mol)")
    ax2.legend(fontsize=8)
    fig2.tight_layout()
    fig3, ax3 = plt.subplots(2, len(results), figsize=(3.6 * len(results), 4.4), squeeze=False)
    for k, (name, r) in enumerate(results.items()):
        for tr, t in zip(r["traces"], r["times_fs"]):
            ax3[0, k].plot(t / 1000, tr["r_H"], lw=0.6)
            ax3[1, k].plot(t / 1000, tr["d_OO"], lw=0.6)
        ax3[0, k].set(title=name, ylabel="min d(O–H3) (Å)")
        ax3[1, k].axhline(O2_BROKEN_A, color="r", ls=":")
        ax3[1, k].set(xlabel="t (ps)", ylabel="d(O1–O2) (Å)")
    fig3.tight_layout()
    return {"fes.png": fig, "fes_oh.png": fig2, "traces.png": fig3}


def comparison_table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| model | test F-MAE (meV/Å) | walkers without an unphysical state | frames HO2 / H + O2 "
        "/ O2 broken / contact | MAE F (kJ/mol) | MAE F(r) (kJ/mol) | ΔF reaction (kJ/mol) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        f = r["fractions"]
        s = r["survival"]
        e = r.get("fes_errors", {})
        nan = float("nan")
        fmae = f"{1000 * r['test']['forces_mae']:.1f}" if "test" in r else "—"
        lines.append(
            f"| {name} | {fmae} | {s['n_replicas'] - s['n_unstable']}/{s['n_replicas']} | "
            f"{f['HO2']:.2f} / {f['H + O2']:.2f} / {f['O2 broken']:.2f} / {f['contact']:.2f} | "
            f"{e.get('mae_F_kj', nan):.1f} | {e.get('mae_F_r_kj', nan):.1f} | "
            f"{e.get('dF_reaction_kj', nan):.1f} |"
        )
    return "\n".join(lines) + "\n"


def _metric(state: str) -> str:
    """A state's name as an MLflow metric name ("H + O2" -> "H_plus_O2")."""
    return state.replace(" + ", "_plus_").replace(" ", "_")


def combustion_fes_study(prof: dict[str, Any], opts: FFPTOptions) -> StudyOutcome:
    """The study of the module doc with profile ``prof``; a rerun in the same
    ``opts.out`` skips finished training stages and resumes the metadynamics."""
    from ase_mlff.models.external import CalculatorPotential
    from ase_mlff.models.io import load_model
    from ase_mlff.reference.combustion import spgfn2
    from ase_mlff.tracking import Tracker

    t_start = time.perf_counter()
    st = _prepare(prof, opts)
    tracker = Tracker(opts.experiment or NAME, uri=opts.tracking_uri)
    with tracker.run(
        f"{NAME}-{time.strftime('%Y%m%d-%H%M%S')}",
        params=st.results["protocol"],
        tags={"recipe": NAME, "paper": "001"},
    ) as parent:
        pt = pretraining_data(st.out, st.settings.n_pretrain, opts.seed)
        v = train_variants(
            st.model_cfg,
            holdout_split(pt, opts.seed),
            (st.train, st.val),
            st.settings.cfgs,
            st.out,
            tracker,
            parent,
        )
        res = {
            "spGFN2-xTB": evaluate(
                st, "spGFN2-xTB", CalculatorPotential(spgfn2, "spGFN2-xTB"), torch.float64
            )
        }
        for name in ("scratch", "ffpt"):
            model, _ = load_model(v.checkpoints[name], dtype=torch.float32)
            res[name] = evaluate(st, name, model)
        ref = res["spGFN2-xTB"]["fes_map"]
        for name, r in res.items():
            if r["fes_map"] is not None and ref is not None:
                r["fes_errors"] = fes_errors(r["fes_map"], ref)
            flat = {f"frac_{_metric(k)}": x for k, x in r["fractions"].items()}
            flat.update({f"fes_{k}": x for k, x in r.get("fes_errors", {}).items()})
            flat.update({f"test_{k}": x for k, x in r.get("test", {}).items()})
            if name in v.handles:
                v.handles[name].log_metrics(flat)
            parent.log_metrics({f"{name}.{k}": x for k, x in flat.items() if np.isfinite(x)})
        save_figures({**figures(res), **learning_curve_figures(v.histories)}, st.out, parent)
        table = comparison_table(res)
        st.results["models"] = {
            k: {x: y for x, y in r.items() if x not in ("traces", "times_fs", "fes_map")}
            for k, r in res.items()
        }
        np.savez_compressed(
            st.out / "fes_maps.npz",
            grid_o1h=GRID_OH,
            grid_o2h=GRID_OH,
            **{
                k.replace(" ", "_"): r["fes_map"]
                for k, r in res.items()
                if r["fes_map"] is not None
            },
        )
        write_outputs(st.out, st.results, table, parent, t_start)
    return StudyOutcome(st.results, table, st.out, tracker.uri)


__all__ = [
    "NAME",
    "combustion_fes_study",
    "comparison_table",
    "fes_errors",
    "states",
    "walker_outcomes",
]
