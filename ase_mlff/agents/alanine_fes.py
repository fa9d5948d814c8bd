"""Paper 003's alanine-dipeptide free-energy test (§4, Fig. 5): MLFFs trained on an
implicitly solvated classical force field, then well-tempered metadynamics on φ/ψ from
six minima, judged by F(φ), F(ψ) against the force field's own (the ``alanine_fes``
recipe is its command line).

    from ase_mlff.agents.alanine_fes import alanine_fes_study
    from ase_mlff.agents.ff_pretraining import FFPTOptions
    from ase_mlff.recipes.alanine_fes import PROFILES
    outcome = alanine_fes_study(PROFILES["quick"], FFPTOptions(out=Path("a")))

The steps, in one MLflow parent run with a child run per variant:

1. the shipped set (:mod:`ase_mlff.reference.alanine`: AMBER ff14SB + GBn2, OpenMM
   metadynamics and MD frames) split by trajectory, and its reference F(φ, ψ);
2. the variants ``scratch`` and ``ffpt`` (:func:`ase_mlff.agents.ff_pretraining.
   train_variants`), FFPT pre-trained on frames rattled around the six minima
   (x + σε) and labelled by the same force field through OpenMM;
3. per variant, one batched run of six independent well-tempered metadynamics walkers
   (:class:`~ase_mlff.md.metadynamics.Metadynamics` on
   :class:`~ase_mlff.md.colvars.Dihedral` φ and ψ, hills of 1.2 kJ/mol, σ = 0.35 rad,
   bias factor 6), one from each of the six lowest minima of the reference F(φ, ψ), with
   the default stability detectors on: which starts fail, and when;
4. per stable walker F(φ, ψ) from its hills, the marginals F(φ), F(ψ) and paper 003's
   MAE_{F(φ)} = ∫_{−π}^{π} |F(φ) − F̂(φ)| dφ (Eqs. 6-7, kJ/mol·rad, as MDsim's
   ``mae(..., 6.28)``), also as a mean |ΔF| in kJ/mol; the walkers' mean F too;
5. figures (Ramachandran plots of the visited φ/ψ on the reference F, F(φ) and F(ψ)
   curves), ``comparison.md``, ``results.json`` and every walker's PLUMED HILLS file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ase_mlff.agents.ff_pretraining import (
    VARIANT_NAMES,
    FFPTOptions,
    Settings,
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
from ase_mlff.data.io import SHIPPED_DATASETS, SHIPPED_DIR
from ase_mlff.data.sampling import rattle
from ase_mlff.data.splits import holdout_split, shipped_split
from ase_mlff.metrics.errors import error_metrics
from ase_mlff.metrics.plots import _plt
from ase_mlff.metrics.stability import survival_summary
from ase_mlff.models.prediction import predict
from ase_mlff.reference.alanine import (
    KJ_PER_EV,
    alanine_dipeptide,
    dihedrals,
    load_reference_fes,
    marginal,
)

NAME = "alanine_fes"
N_TRAIN = 1500
RATTLE_SIGMA_A = 0.05
#: paper 003's metadynamics (MDsim's PLUMED input): hills, widths, bias factor
HEIGHT_KJ, SIGMA_RAD, BIAS_FACTOR = 1.2, 0.35, 6.0
TEMPERATURE_K = 300.0
N_MINIMA = 6
PRETRAIN_FILE = "pretrain_amber14_gbn2_rattled.npz"


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
    fes: dict[str, np.ndarray]
    phi: tuple[int, ...]
    psi: tuple[int, ...]
    results: dict[str, Any] = field(default_factory=dict)


def fes_minima(f_2d: np.ndarray, grid: np.ndarray, n: int = N_MINIMA, radius: int = 3):
    """Up to ``n`` local minima (φ, ψ) of a periodic F indexed [ψ, φ], lowest first: grid
    points that are the minimum of their (2·radius + 1)² periodic neighbourhood."""
    from scipy.ndimage import minimum_filter

    if abs(grid[-1] - grid[0] - 2 * np.pi) < 1e-9:  # −π and π both on the grid: one point
        f_2d, grid = f_2d[:-1, :-1], grid[:-1]
    low = minimum_filter(f_2d, size=2 * radius + 1, mode="wrap")
    ii, jj = np.nonzero(f_2d == low)
    order = np.argsort(f_2d[ii, jj])[:n]
    return [(float(grid[jj[k]]), float(grid[ii[k]])) for k in order]


def minima_starts(ds: Dataset, minima: list[tuple[float, float]]) -> list:
    """The frame of ``ds`` nearest (periodic distance in φ/ψ) to each minimum, as Atoms."""
    phi, psi = ds.extra_s["phi"], ds.extra_s["psi"]
    starts = []
    for p0, s0 in minima:
        dp = np.angle(np.exp(1j * (phi - p0)))
        ds_ = np.angle(np.exp(1j * (psi - s0)))
        k = int(np.argmin(dp * dp + ds_ * ds_))
        atoms = ds.to_atoms(k, with_labels=False)
        atoms.info.update(target_phi=p0, target_psi=s0, phi=float(phi[k]), psi=float(psi[k]))
        starts.append(atoms)
    return starts


def pretraining_data(out: Path, starts: list, n_frames: int, seed: int) -> Dataset:
    """Frames rattled around ``starts`` (x + σε, σ = :data:`RATTLE_SIGMA_A`), labelled by
    the reference force field through OpenMM; cached in ``out``."""
    from ase_mlff.calculators.openmm import openmm_energies_forces

    path = out / PRETRAIN_FILE
    if path.exists():
        return Dataset.load_npz(path)
    system = alanine_dipeptide("gbn2")[0]
    pos = np.concatenate([p for _, p in rattle(starts, n_frames, RATTLE_SIGMA_A, seed)])
    energy, forces = openmm_energies_forces(system, pos, platform="Reference")
    ds = Dataset.from_frames(
        starts[0],
        pos,
        energy,
        forces,
        "rattled",
        provenance={
            "method": "AMBER ff14SB + implicit/gbn2.xml (OpenMM Reference platform)",
            "sampling": f"rattled x + {RATTLE_SIGMA_A} A * N(0, 1) around the six minima",
            "seed": seed,
        },
    )
    ds.save_npz(path)
    return ds


def _prepare(prof: dict[str, Any], opts: FFPTOptions) -> _Study:
    ds = load_dataset("alanine")
    n_train = N_TRAIN if opts.n_train is None else opts.n_train
    split = shipped_split("alanine", ds, n_train, opts.n_val, opts.seed)
    _, _, _, phi, psi = alanine_dipeptide("gbn2")
    st = _Study(
        opts=opts,
        prof=prof,
        settings=resolve_settings(opts, prof),
        out=output_folder(opts, NAME),
        train=ds[split.train],
        val=ds[split.val],
        test=ds[split.test],
        model_cfg={"name": opts.model, **prof["model"], "species": ds.species},
        fes=load_reference_fes(SHIPPED_DIR / SHIPPED_DATASETS["alanine"]),
        phi=phi,
        psi=psi,
    )
    st.results = {"protocol": _protocol(st), "variants": {}}
    return st


def _protocol(st: _Study) -> dict[str, Any]:
    s, p = st.settings, st.prof
    metadynamics = {
        "height_kj": HEIGHT_KJ,
        "sigma_rad": SIGMA_RAD,
        "bias_factor": BIAS_FACTOR,
        "pace_fs": p["pace_steps"] * p["dt_fs"],
        "walker_ps": s.md_steps * p["dt_fs"] / 1000.0,
        "dt_fs": p["dt_fs"],
        "temperature_K": TEMPERATURE_K,
        "friction_per_fs": p["friction"],
    }
    sizes = (len(st.train), len(st.val), len(st.test))
    return study_protocol(
        st.opts, s, st.model_cfg, RATTLE_SIGMA_A, sizes, metadynamics=metadynamics
    )


def run_walkers(st: _Study, model: torch.nn.Module, starts: list, traj_dir: Path):
    """Six independent well-tempered walkers from ``starts`` in one batched run."""
    from ase_mlff.md.colvars import Dihedral
    from ase_mlff.md.metadynamics import Metadynamics
    from ase_mlff.md.runner import run_md

    p = st.prof
    metad = Metadynamics(
        [Dihedral(*st.phi), Dihedral(*st.psi)],
        sigma=[SIGMA_RAD, SIGMA_RAD],
        height=HEIGHT_KJ / KJ_PER_EV,
        pace=p["pace_steps"],
        temperature_K=TEMPERATURE_K,
        bias_factor=BIAS_FACTOR,
    )
    run = run_md(
        model,
        starts,
        steps=st.settings.md_steps,
        dt=p["dt_fs"],
        integrator="langevin",
        temperature_K=TEMPERATURE_K,
        friction=p["friction"],
        seed=st.opts.seed,
        check_every=p["pace_steps"],
        record_every=p["pace_steps"],
        metadynamics=metad,
        traj_dir=traj_dir,
        checkpoint_every=p["pace_steps"] * 20,
        dtype=torch.float32,
    )
    return run, metad


def walker_fes(st: _Study, run, metad) -> dict[str, Any]:
    """Per stable walker: F(φ, ψ) from its hills on the reference grid, marginals, MAE
    (paper 003 Eqs. 6-7: integral over [−π, π), and mean |ΔF|), plus the walkers' mean."""
    g = st.fes["grid_rad"]
    psi_g, phi_g = np.meshgrid(g, g, indexing="ij")
    points = np.stack([phi_g.ravel(), psi_g.ravel()], axis=1)
    ref = {"phi": st.fes["fes_phi_kj"], "psi": st.fes["fes_psi_kj"]}
    stable = [k for k, r in enumerate(run.replicas) if r.stable]
    n_walkers = 0 if metad.centers is None else int(metad.centers.shape[0])
    if len(stable) != n_walkers:  # the hills follow the replicas that stayed in the batch
        raise ValueError(
            f"{n_walkers} walkers hold hills but {len(stable)} replicas stayed stable: "
            "run the walkers with stop_on_failure=True"
        )
    out: dict[str, Any] = {"walkers": {}, "curves": {}}
    f2ds = []
    for w, k in enumerate(stable):  # the hills of the replicas that remain, in order
        f2d = metad.free_energy(points, walker=w).reshape(len(g), len(g)) * KJ_PER_EV
        f2ds.append(f2d)
        out["walkers"][k] = fes_errors(f2d, ref, g)
    if f2ds:
        mean2d = np.mean([f - f.min() for f in f2ds], axis=0)
        out["mean"] = fes_errors(mean2d, ref, g)
        out["curves"] = {
            cv: marginal(mean2d, ax, TEMPERATURE_K) for cv, ax in (("phi", 0), ("psi", 1))
        }
    return out


def fes_errors(f2d: np.ndarray, ref: dict[str, np.ndarray], grid: np.ndarray) -> dict[str, float]:
    """Errors of the marginals of ``f2d`` (kJ/mol, [ψ, φ]) against ``ref`` ("phi", "psi"):
    paper 003's MAE_F = ∫_{−π}^{π} |F − F̂| dφ (kJ/mol·rad; the grid's last point, π, is
    the first one again and is left out) and the mean |ΔF| (kJ/mol)."""
    d = float(grid[1] - grid[0])
    res = {}
    for cv, ax in (("phi", 0), ("psi", 1)):
        err = np.abs(marginal(f2d, ax, TEMPERATURE_K) - ref[cv])[:-1]  # [−π, π): one end
        res[f"mae_F_{cv}_kj_rad"] = float(err.sum() * d)
        res[f"mean_abs_dF_{cv}_kj"] = float(err.mean())
    return res


def _evaluate_variant(st: _Study, name: str, checkpoint: Path, starts: list) -> tuple[dict, Any]:
    from ase_mlff.models.io import load_model

    model, _ = load_model(checkpoint, dtype=torch.float32)
    pr = predict(model, st.test, batch_size=64, dtype=torch.float32)
    res: dict[str, Any] = {"test": error_metrics(pr["energy"], pr["forces"], st.test)}
    t0 = time.perf_counter()
    run, metad = run_walkers(st, model, starts, st.out / f"md_{name}")
    res["md_seconds"] = time.perf_counter() - t0
    total = run.steps * run.dt_fs
    res["stability"] = {
        **survival_summary(
            [r.t_inst_fs for r in run.replicas], [r.stable for r in run.replicas], total
        ),
        "reasons": [r.reason for r in run.replicas],
    }
    fes = walker_fes(st, run, metad)
    res["fes"] = {k: v for k, v in fes.items() if k != "curves"}
    for w, k in enumerate(k for k, r in enumerate(run.replicas) if r.stable):
        metad.write_hills(st.out / f"md_{name}" / f"HILLS.{k}", walker=w)
    visited = [
        (dihedrals(r.positions_tn3, st.phi), dihedrals(r.positions_tn3, st.psi))
        for r in run.replicas
        if len(r.positions_tn3)
    ]
    return res, {"curves": fes["curves"], "visited": visited}


def figures(st: _Study, extras: dict[str, dict]) -> dict[str, Any]:
    """``fes.png``: F(φ), F(ψ) of the reference and each variant's walker mean;
    ``ramachandran.png``: the visited φ/ψ of each variant on the reference F."""
    plt = _plt()
    g = np.degrees(st.fes["grid_rad"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, cv, label in zip(axes, ("phi", "psi"), ("φ", "ψ")):
        ax.plot(g, st.fes[f"fes_{cv}_kj"], "k--", label="AMBER ff14SB + GBn2 (OpenMM)")
        for name, ex in extras.items():
            if ex["curves"]:
                ax.plot(g, ex["curves"][cv], label=name)
        ax.set(xlabel=f"{label} (°)", ylabel=f"F({label}) (kJ/mol)", xlim=(-180, 180))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig2, axes2 = plt.subplots(1, len(extras), figsize=(4.2 * len(extras), 3.8), squeeze=False)
    f2d = st.fes["fes_kj_psi_phi"]
    for ax, (name, ex) in zip(axes2[0], extras.items()):
        ax.contourf(g, g, np.minimum(f2d, 40.0), levels=20, cmap="viridis")
        for phi, psi in ex["visited"]:
            ax.plot(np.degrees(phi), np.degrees(psi), ".", ms=1.5, color="w", alpha=0.5)
        ax.set(title=name, xlabel="φ (°)", ylabel="ψ (°)", xlim=(-180, 180), ylim=(-180, 180))
    fig2.tight_layout()
    return {"fes.png": fig, "ramachandran.png": fig2}


def comparison_table(results: dict[str, Any]) -> str:
    lines = [
        "| model | test F-MAE (meV/Å) | walkers stable | MAE F(φ) (kJ/mol·rad) | MAE F(ψ) "
        "(kJ/mol·rad) | mean \\|ΔF(φ)\\| / \\|ΔF(ψ)\\| (kJ/mol) |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in results["variants"].items():
        m = v["fes"].get("mean", {})
        nan, n = float("nan"), v["stability"]["n_replicas"]
        lines.append(
            f"| {name} | {1000 * v['test']['forces_mae']:.1f} | "
            f"{n - v['stability']['n_unstable']}/{n} | "
            f"{m.get('mae_F_phi_kj_rad', nan):.2f} | {m.get('mae_F_psi_kj_rad', nan):.2f} | "
            f"{m.get('mean_abs_dF_phi_kj', nan):.2f} / {m.get('mean_abs_dF_psi_kj', nan):.2f} |"
        )
    return "\n".join(lines) + "\n"


def alanine_fes_study(prof: dict[str, Any], opts: FFPTOptions) -> StudyOutcome:
    """The study of the module doc with profile ``prof``; a rerun in the same
    ``opts.out`` skips finished training stages and finished MD."""
    from ase_mlff.tracking import Tracker

    t_start = time.perf_counter()
    st = _prepare(prof, opts)
    minima = fes_minima(st.fes["fes_kj_psi_phi"], st.fes["grid_rad"], n=st.settings.replicas)
    starts = minima_starts(st.train, minima)
    st.results["minima_deg"] = [tuple(np.degrees(m).round(1)) for m in minima]
    tracker = Tracker(opts.experiment or NAME, uri=opts.tracking_uri)
    with tracker.run(
        f"{NAME}-{time.strftime('%Y%m%d-%H%M%S')}",
        params=st.results["protocol"],
        tags={"recipe": NAME, "paper": "003"},
    ) as parent:
        pt = pretraining_data(st.out, starts, st.settings.n_pretrain, opts.seed)
        v = train_variants(
            st.model_cfg,
            holdout_split(pt, opts.seed),
            (st.train, st.val),
            st.settings.cfgs,
            st.out,
            tracker,
            parent,
        )
        extras = {}
        for name in VARIANT_NAMES:
            res, extras[name] = _evaluate_variant(st, name, v.checkpoints[name], starts)
            st.results["variants"][name] = res
            flat = variant_metrics(res)
            flat.update({f"fes_{k}": x for k, x in res["fes"].get("mean", {}).items()})
            v.handles[name].log_metrics(flat)
            parent.log_metrics({f"{name}.{k}": x for k, x in flat.items()})
        save_figures({**figures(st, extras), **learning_curve_figures(v.histories)}, st.out, parent)
        table = comparison_table(st.results)
        write_outputs(st.out, st.results, table, parent, t_start)
    return StudyOutcome(st.results, table, st.out, tracker.uri)


__all__ = [
    "NAME",
    "alanine_fes_study",
    "comparison_table",
    "fes_errors",
    "fes_minima",
    "minima_starts",
    "pretraining_data",
    "walker_fes",
]
