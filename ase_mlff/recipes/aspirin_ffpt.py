"""Force-field pre-training for aspirin (paper 001, §2.1 and Figs. 1c, 2): scratch vs
GAFF-pretrained + fine-tuned, on the shipped GFN2-xTB aspirin data.

    python -m ase_mlff.recipes.aspirin_ffpt --profile quick      # < 30 min on 2 CPU cores
    python -m ase_mlff.recipes.aspirin_ffpt --profile paper      # the paper's sizes (GPU)
    python -m ase_mlff.recipes.aspirin_ffpt --model schnet --n-pretrain 50000

Steps:

1. GAFF-2.11 (shipped parameters, MD17 atom order) relaxed from the GFN2-xTB minimum;
   ``--n-pretrain`` frames rattled around it (x + 0.2 Å·ε, no rescaling) and labelled in
   one batched pass by the torch GAFF; stored as ``pretrain_gaff.npz``.
2. Fine-tuning data: 950 train / 50 validation frames of the shipped GFN2-xTB set
   (trajectories 0-3); the test set is the whole held-out trajectory 4.
3. Variants, same architecture and the same fine-tuning budget (epochs and minutes):
   ``scratch`` (lr 1e-3) and ``ffpt`` (pre-train on GAFF at lr 1e-4, then fine-tune every
   weight at lr 1e-4 with the per-element reference energies refitted).
4. Each model: test force/energy errors, MD stability (``--replicas`` Langevin
   trajectories at 500 K, 0.5 fs, friction 2 ps⁻¹ as paper 001; stopped when a bond
   deviates by > 0.5 Å), h(r) MAE of the stable part against the reference trajectory,
   and 1-D scans: a methyl C–H bond stretched to dissociation and an H–C–H angle closed,
   against GFN2-xTB (tblite) and GAFF.

MLflow: one parent run (protocol, GAFF's own test error, comparison table and figures)
and a child run per variant (stage histories, test metrics, t_inst statistics, scans).
An interrupted recipe resumes: finished stages are not trained again.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
import torch

from ase_mlff.data import Dataset, load_dataset
from ase_mlff.data.io import SHIPPED_DIR
from ase_mlff.data.splits import holdout_split, shipped_split, start_structures
from ase_mlff.md.protocol import PROTOCOLS
from ase_mlff.metrics.distance_distribution import h_of_r, h_of_r_figure, h_of_r_mae
from ase_mlff.metrics.errors import error_metrics
from ase_mlff.metrics.plots import learning_curve_figure
from ase_mlff.metrics.scans import angle_scan, bond_scan, methyl_atoms, scan_energies, scan_figure
from ase_mlff.models.prediction import predict
from ase_mlff.recipes._ff_pretraining import add_arguments, settings_from_arguments, train_variants
from ase_mlff.reference.sampling import rattled_dataset

log = logging.getLogger(__name__)

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "n_pretrain": 20_000,
        "model": {"hidden": 48, "n_interactions": 3},
        "pretrain": {"epochs": 6, "batch_size": 32, "max_minutes": 5.0},
        "finetune": {"epochs": 60, "batch_size": 16, "max_minutes": 4.0},
        "md_steps": 2000,
        "replicas": 16,
    },
    "paper": {
        "n_pretrain": 100_000,
        "model": {"hidden": 128, "n_interactions": 3},
        "pretrain": {"epochs": 500, "batch_size": 32, "lr_patience": 50},
        "finetune": {"epochs": 2000, "batch_size": 8, "lr_patience": 50},
        "md_steps": 600_000,
        "replicas": 16,
    },
}

#: paper 001, Methods: Langevin, friction 2 ps⁻¹, 0.5 fs; aspirin at 500 K (paper 003)
MD_PROTOCOL = PROTOCOLS["aspirin_langevin"].integration()

STRETCH_A = np.linspace(0.6, 4.0, 35)
ANGLE_DEG = np.linspace(125.0, 15.0, 23)


def finetune_split(ds: Dataset, n_train: int, n_val: int, seed: int):
    return shipped_split("aspirin", ds, n_train, n_val, seed)


def pretraining_data(out: Path, n_frames: int, seed: int) -> tuple[Dataset, dict[str, Any]]:
    """GAFF-labelled rattled aspirin, cached in ``out/pretrain_gaff.npz``."""
    from ase_mlff.forcefields.gaff import gaff_potential, load_parameters, relaxed_geometry

    path = out / "pretrain_gaff.npz"
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
        sigma=0.2,
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_arguments(p, "aspirin_ffpt", PROFILES, n_train=950)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    prof = PROFILES[a.profile]
    n_pre, replicas, md_steps, cfgs = settings_from_arguments(a, prof)

    from ase_mlff.agents import run_stability_study
    from ase_mlff.agents.specs import make_calculator
    from ase_mlff.forcefields.gaff import gaff_potential
    from ase_mlff.metrics.plots import survival_figure
    from ase_mlff.tracking import Tracker

    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    qm = load_dataset("aspirin")
    split = finetune_split(qm, a.n_train, a.n_val, a.seed)
    train, val, test = qm[split.train], qm[split.val], qm[split.test]
    model_cfg = {"name": a.model, **prof["model"], "species": qm.species}
    tracker = Tracker(a.experiment, uri=a.tracking_uri)
    protocol = {
        "profile": a.profile,
        "model": model_cfg,
        "n_pretrain": n_pre,
        "rattle_sigma_A": 0.2,
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
        **{k: c.__dict__ for k, c in cfgs.items()},
        "md": {**MD_PROTOCOL, "steps": md_steps, "replicas": replicas, "bond_delta_A": 0.5},
    }
    results: dict[str, Any] = {"protocol": protocol, "variants": {}}
    with tracker.run(
        f"aspirin_ffpt-{time.strftime('%Y%m%d-%H%M%S')}",
        params=protocol,
        tags={"recipe": "aspirin_ffpt", "paper": "001"},
    ) as parent:
        # ---------------------------------------------------------- 1. GAFF pre-training data
        t0 = time.perf_counter()
        pt_data, pt_prov = pretraining_data(out, n_pre, a.seed)
        parent.log_metrics({"pretrain_data_seconds": time.perf_counter() - t0})
        parent.log_dict(pt_prov, "pretrain_data_provenance.json")
        gaff = gaff_potential("aspirin")
        p_gaff = predict(gaff, test, batch_size=1200, dtype=torch.float64)
        gaff_err = error_metrics(p_gaff["energy"], p_gaff["forces"], test)
        parent.log_metrics({f"gaff_test_{k}": v for k, v in gaff_err.items()})
        results["gaff_test"] = gaff_err
        pt_train, pt_val = holdout_split(pt_data, a.seed)

        # ---------------------------------------------------------- 2-3. the variants
        v = train_variants(model_cfg, (pt_train, pt_val), (train, val), cfgs, out, tracker, parent)
        checkpoints, histories, handles = v.checkpoints, v.histories, v.handles

        # ---------------------------------------------------------- 4. evaluation
        from ase_mlff.models.io import load_model

        models = {k: load_model(v, dtype=torch.float64)[0] for k, v in checkpoints.items()}
        for name in ("scratch", "ffpt", "pretrained only"):
            pr = predict(models[name], test, batch_size=64, dtype=torch.float64)
            results["variants"].setdefault(name, {})["test"] = error_metrics(
                pr["energy"], pr["forces"], test
            )
        t0 = time.perf_counter()
        study = run_stability_study(
            [str(checkpoints["scratch"]), str(checkpoints["ffpt"])],
            start_structures("aspirin", replicas),
            n_replicas=replicas,
            out_dir=out / "stability",
            md={
                **MD_PROTOCOL,
                "steps": md_steps,
                "seed": a.seed,
                "check_every": 10,
                "record_every": 20,
            },
        )
        md_seconds = time.perf_counter() - t0
        r_grid, h_ref = h_of_r(test.positions_nc.reshape(len(test), -1, 3))
        h_curves = {"GFN2-xTB reference": h_ref}
        for name in ("scratch", "ffpt"):
            key = str(checkpoints[name])
            v = results["variants"][name]
            v["stability"] = study.summaries[key]
            pos = stable_positions(study.rows, key)
            if len(pos):
                _, h = h_of_r(pos)
                h_curves[name] = h
                v["h_r_mae"] = h_of_r_mae(h, h_ref)
            v["stable_frames"] = len(pos)
        start = ase.io.read(SHIPPED_DIR / "aspirin_md17_order.xyz")
        scans = run_scans(
            {
                "GFN2-xTB": make_calculator({"name": "tblite"}),
                "GAFF-2.11": gaff,
                "scratch": models["scratch"],
                "ffpt": models["ffpt"],
                "pretrained only": models["pretrained only"],
            },
            start,
        )
        figures = scans.pop("figures")
        for name in ("scratch", "ffpt", "pretrained only"):
            results["variants"][name]["scan"] = {
                k: v for k, v in scans[name].items() if isinstance(v, float)
            }
        results["scans"] = scans
        figures["survival.png"] = survival_figure(
            {n: study.km[str(checkpoints[n])] for n in ("scratch", "ffpt")}
        )
        figures["h_r.png"] = h_of_r_figure(r_grid, h_curves, "aspirin, 500 K")
        for name, hist in histories.items():
            for stage, h in hist.items():
                if h:
                    figures[f"learning_curve_{name}_{stage}.png"] = learning_curve_figure(h)
        fig_dir = out / "figures"
        fig_dir.mkdir(exist_ok=True)
        for fname, fig in figures.items():
            fig.savefig(fig_dir / fname, dpi=120)
            parent.log_figure(fig, fname)

        # ---------------------------------------------------------- tables
        table = comparison_table(results)
        (out / "comparison.md").write_text(table)
        results["md_seconds"] = md_seconds
        results["total_minutes"] = (time.perf_counter() - t_start) / 60
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        parent.log_artifact(out / "comparison.md")
        parent.log_artifact(out / "results.json")
        parent.log_metrics({"total_minutes": results["total_minutes"]})
        for name in ("scratch", "ffpt"):
            v = results["variants"][name]
            flat = {f"test_{k}": x for k, x in v["test"].items()}
            flat.update(
                {f"md_{k}": x for k, x in v["stability"].items() if isinstance(x, (int, float))}
            )
            if "h_r_mae" in v:
                flat["h_r_mae"] = v["h_r_mae"]
            flat.update({f"scan_{k}": x for k, x in v["scan"].items() if isinstance(x, float)})
            parent.log_metrics({f"{name}.{k}": x for k, x in flat.items()})
            # the child runs finished training; their evaluation is logged to them too
            handles[name].log_metrics(flat)
            handles[name].log_artifact(checkpoints[name], "checkpoint")
    print(table)
    print(f"results in {out}; MLflow store: {tracker.uri}")
    return results


def comparison_table(results: dict[str, Any]) -> str:
    g = results["gaff_test"]
    lines = [
        "| model | test F-MAE (meV/Å) | test E-MAE (meV/atom) | stable replicas | "
        "t_inst mean (fs) | h(r) MAE | C–H stretch hole (eV) | H–C–H hole (eV) | "
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


if __name__ == "__main__":
    main()
