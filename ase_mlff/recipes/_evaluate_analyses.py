"""The model analyses and trajectory observables of ``recipes.evaluate`` (kept apart so the
recipe's main file reads as the report's outline)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from ase.data import chemical_symbols

from ase_mlff.data import Dataset, load_dataset

log = logging.getLogger(__name__)


def _frames(ds: Dataset) -> np.ndarray:
    return ds.positions_nc.reshape(len(ds), -1, 3)


def reference_calculator(choice: str, test: Dataset):
    """The reference method for the scans: ``tblite`` (GFN2-xTB) when asked, or with
    ``auto`` when the data were labelled by GFN2-xTB; None otherwise."""
    if choice == "none":
        return None, None
    method = str(test.provenance.get("method", ""))
    if choice == "tblite" or (choice == "auto" and method.upper().startswith("GFN2")):
        from ase_mlff.agents.specs import make_calculator

        return "GFN2-xTB", make_calculator({"name": "tblite"})
    if choice not in ("auto", "tblite"):
        raise ValueError(f"--reference-calculator must be auto, none or tblite, got {choice!r}")
    return None, None


def scan_bonds(spec: str | None, data: str, atoms) -> dict[str, tuple[int, int]]:
    """Bonds to scan: ``--bonds 'i-j,...'``, paper 000's three for aspirin, else the first
    three covalent bonds that are not in a ring (a rigid fragment can move along them)."""
    from ase_mlff.metrics.bond_forces import bond_fragment, covalent_bonds, default_aspirin_bonds

    sym = atoms.get_chemical_symbols()
    if spec:
        out = {}
        for item in spec.split(","):
            try:
                i, j = (int(x) for x in item.strip().split("-"))
                out[f"{sym[i]}{i}-{sym[j]}{j}"] = (i, j)
            except (ValueError, IndexError) as err:
                raise ValueError(
                    f"--bonds takes 0-based atom pairs 'i-j,...' of the {len(sym)} atoms; "
                    f"got {item!r}"
                ) from err
        return out
    if data == "aspirin":
        bonds = default_aspirin_bonds()
        return {k.replace("–", "-").replace("=", "-"): v for k, v in bonds.items()}
    out = {}
    for i, j in covalent_bonds(atoms):
        try:
            bond_fragment(atoms, int(i), int(j))
        except ValueError:
            continue
        out[f"{sym[i]}{i}-{sym[j]}{j}"] = (int(i), int(j))
        if len(out) == 3:
            break
    return out


#: aspirin's two soft torsions (MD17 order, checked against the covalent graph in the
#: tests): the carboxyl group about the ring (C0–C5–C10–O7) and the ester about the ring
#: (C5–C6–O12–C11)
ASPIRIN_DIHEDRALS = {"C0-C5-C10-O7": (0, 5, 10, 7), "C5-C6-O12-C11": (5, 6, 12, 11)}


def fes_dihedrals(spec: str | None, data: str, atoms) -> dict[str, tuple[int, ...]]:
    """Torsions for the free-energy profiles: ``--dihedrals 'a-b-c-d,...'`` (0-based),
    aspirin's two soft torsions by default, none otherwise."""
    if spec:
        sym = atoms.get_chemical_symbols()
        out = {}
        for item in spec.split(","):
            try:
                q = tuple(int(x) for x in item.strip().split("-"))
                if len(q) != 4:
                    raise ValueError
                out["-".join(f"{sym[k]}{k}" for k in q)] = q
            except (ValueError, IndexError) as err:
                raise ValueError(
                    f"--dihedrals takes four 0-based indices of the {len(sym)} atoms per "
                    f"torsion, 'a-b-c-d,...'; got {item!r}"
                ) from err
        return out
    return dict(ASPIRIN_DIHEDRALS) if data == "aspirin" else {}


def model_analyses(
    models: dict, test: Dataset, preds: dict, a, molecule: bool = True
) -> tuple[dict, dict, dict]:
    """Latent space, force angles and, for one molecule, bond scans and the ΔF MAE;
    returns (results, comparison figures, per-model figures). ``results["scalars"][model]``
    holds the numbers logged to that model's MLflow run."""
    from ase_mlff.metrics.latent import (
        atom_embeddings,
        latent_analysis,
        latent_figure,
        silhouette_figure,
    )

    res: dict[str, Any] = {"scalars": {n: {} for n in models}}
    figs: dict[str, Any] = {}
    per_model: dict[str, dict] = {n: {} for n in models}

    # --- latent space (paper 000 Figs. 4-5): classes = datasets, or elements with one set
    sources: dict[str, Any] = {a.data: test}
    for extra in a.latent_data or []:
        sources[str(extra)] = load_dataset(extra)
    projections, silhouettes, sil_means, labels = {}, {}, {}, None
    for name, model in models.items():
        if not hasattr(model, "atom_features"):
            log.info("%s has no atom features: no latent-space analysis", name)
            continue
        feats, labs, numbers = atom_embeddings(model, sources, max_frames=a.latent_frames)
        if len(sources) == 1:
            labs = np.array([chemical_symbols[z] for z in numbers])
        la = latent_analysis(feats, labs, methods=("tsne", "umap"), max_points=3000, seed=a.seed)
        projections[name], silhouettes[name] = la["projection"], la["silhouette"]
        sil_means[name] = la["silhouette_mean"]
        labels = la["labels"]
        for method, s in la["silhouette_mean"].items():
            res["scalars"][name][f"latent_silhouette_{method}"] = s
    if projections:
        res["latent"] = {
            "classes": "datasets" if len(sources) > 1 else "elements",
            "silhouette_mean": sil_means,
        }
        figs["latent.png"] = latent_figure(projections, labels, silhouettes=sil_means)
        figs["latent_silhouettes.png"] = silhouette_figure(silhouettes)

    _force_angles(models, test, preds, res, figs)
    if molecule:
        _molecule_analyses(models, test, preds, a, res, figs)
    return res, figs, per_model


def _molecule_analyses(models: dict, test: Dataset, preds: dict, a, res: dict, figs: dict):
    from ase_mlff.metrics import bond_forces as bf

    # --- bond scans (paper 000 Eq. 6, Fig. 6)
    ref = min(a.reference_frame, len(test) - 1)
    start = test.to_atoms(ref, with_labels=False)
    ref_name, ref_calc = reference_calculator(a.reference_calculator, test)
    scans: dict[str, dict[str, dict[str, float]]] = {}
    for bond, (i, j) in scan_bonds(a.bonds, a.data, start).items():
        _, images = bf.fragment_bond_scan(start, i, j)
        potentials = dict(models)
        if ref_calc is not None:
            potentials[ref_name] = ref_calc
        profiles = {
            n: bf.bond_force_profile(p, images, i, j, device=a.device)
            for n, p in potentials.items()
        }
        scans[bond] = {
            n: {
                "roughness": bf.roughness(p["r"], p["df_dr"]),
                "mean_df_dr": float(np.mean(p["df_dr"])),
                "f_par_at_r0": float(p["f_par"][len(p["f_par"]) // 2]),
            }
            for n, p in profiles.items()
        }
        for n in models:
            res["scalars"][n][f"scan_{bond}_roughness"] = scans[bond][n]["roughness"]
        figs[f"bond_scan_{bond}.png"] = bf.bond_scan_figure(profiles, f"{bond}, ±5 % of r0")
    res["bond_scans"] = scans

    # --- ΔF MAE over the configurations nearest the reference frame (paper 000 Eqs. 7-8)
    pos = _frames(test)
    n_near = min(a.n_nearest, len(test))
    idx = bf.nearest_frames(pos, ref, n=n_near)
    bonds = bf.covalent_bonds(start)
    ref_f = test.forces_nc.reshape(len(test), -1, 3)
    ref_b = bf.bond_projected_forces(pos[idx], ref_f[idx], bonds)
    matrices, dmae = {}, {}
    for name in models:
        pf = preds[name]["forces"].reshape(len(test), -1, 3)
        matrices[name], dmae[name] = bf.delta_force_mae(
            bf.bond_projected_forces(pos[idx], pf[idx], bonds), ref_b
        )
        res["scalars"][name]["delta_f_mae"] = dmae[name]
    res["delta_f"] = {"reference_frame": ref, "n_frames": n_near, "n_bonds": len(bonds)}
    res["delta_f"]["mae"] = dmae
    figs["delta_f_mae.png"] = bf.delta_force_figure(matrices)


def _force_angles(models: dict, test: Dataset, preds: dict, res: dict, figs: dict):
    """Paper 004 Fig. B.1: angles between each model's and the reference forces, and
    between the first model's and each other model's."""
    from ase_mlff.metrics import bond_forces as bf

    angles = {}
    for name in models:
        angles[f"{name} vs reference"] = bf.force_angles(preds[name]["forces"], test.forces_nc)
    names = list(models)
    for other in names[1:]:
        angles[f"{names[0]} vs {other}"] = bf.force_angles(
            preds[names[0]]["forces"], preds[other]["forces"]
        )
    res["force_angles"] = {
        k: {
            "median_deg": float(np.median(v)),
            "mean_deg": float(np.mean(v)),
            "fraction_above_90": float(np.mean(v > 90.0)),
        }
        for k, v in angles.items()
    }
    for name in models:
        fa = res["force_angles"][f"{name} vs reference"]
        res["scalars"][name]["force_angle_median_deg"] = fa["median_deg"]
    figs["force_angles.png"] = bf.force_angle_figure(angles)


def analyses_markdown(ana: dict) -> str:
    lines = ["## Model analyses (papers 000, 004)", ""]
    if "latent" in ana:
        lines += [f"Latent space, classes = {ana['latent']['classes']}; mean silhouette:", ""]
        lines += ["| model | t-SNE | UMAP |", "|---|---|---|"]
        for n, s in ana["latent"]["silhouette_mean"].items():
            lines.append(
                f"| {n} | {s.get('tsne', float('nan')):.3f} | {s.get('umap', float('nan')):.3f} |"
            )
        lines.append("")
    if ana.get("bond_scans"):
        bonds = list(ana["bond_scans"])
        lines += ["Bond scans (±5 % of r0): roughness of dF∥/dr (eV/Å²):", ""]
        lines += ["| potential | " + " | ".join(bonds) + " |", "|---" * (len(bonds) + 1) + "|"]
        for n in ana["bond_scans"][bonds[0]]:
            cells = [f"{ana['bond_scans'][b][n]['roughness']:.3g}" for b in bonds]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append("")
    if "delta_f" in ana:
        d = ana["delta_f"]
        lines += [
            f"ΔF MAE over the {d['n_frames']} test frames nearest frame "
            f"{d['reference_frame']} ({d['n_bonds']} bonds):",
            "",
        ]
        lines += [f"- {n}: {v * 1e3:.1f} meV/Å" for n, v in d["mae"].items()]
        lines.append("")
    lines += ["Force angles:", "", "| pair | median (°) | > 90° |", "|---|---|---|"]
    for k, v in ana["force_angles"].items():
        lines.append(f"| {k} | {v['median_deg']:.2f} | {100 * v['fraction_above_90']:.2f} % |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ stability study


def _same_model(a: str, b: str) -> bool:
    """The same checkpoint under two spellings (a shipped name, relative or absolute
    paths); a study row whose checkpoint no longer exists matches only by its string."""
    from ase_mlff.calculators.mlff import resolve_model_path
    from ase_mlff.models.io import CheckpointError

    if a == b:
        return True
    try:
        return resolve_model_path(a).resolve() == resolve_model_path(b).resolve()
    except CheckpointError:
        return False


def study_rows(stability_dir: Path, specs: list[str], names: dict[str, str]) -> dict:
    """``{model name: {"rows": [...], "dir": model directory name}}`` from ``t_inst.csv``."""
    from ase_mlff.agents.study import read_t_inst

    rows = read_t_inst(stability_dir)
    found = {}
    for spec in specs:
        mine = [r for r in rows if _same_model(spec, r["model"])]
        if not mine:
            log.warning("model %s is not in the study %s", spec, stability_dir)
            continue
        found[names[spec]] = {"rows": mine, "dir": Path(mine[0]["traj_dir"]).parent.name}
    if not found:
        raise ValueError(f"none of the models {specs} is in the study {stability_dir}")
    return found


def stability_report(
    stability_dir: Path, specs: list[str], models: dict, test: Dataset, clusters, a, forces
) -> tuple[dict, dict]:
    """Trajectory observables over the stable part of every replica and the force metrics
    vs t_inst comparison (paper 003 Fig. 3); ``forces`` maps model name -> its global test
    force metrics."""
    import json

    from ase_mlff.agents.study import load_study_result, model_dirs
    from ase_mlff.metrics import trajectory as tj
    from ase_mlff.metrics.plots import force_vs_stability_figure, survival_figure
    from ase_mlff.metrics.stability import (
        force_vs_stability,
        force_vs_stability_table,
    )

    summary = json.loads((Path(stability_dir) / "summary.json").read_text())
    study = study_rows(stability_dir, specs, model_dirs(specs))
    result = load_study_result(stability_dir)
    total_fs = result.total_fs
    trajs = tj.load_study(stability_dir, models=[s["dir"] for s in study.values()])
    periodic = bool(np.any(test.pbc_s3))
    ref_pos = _frames(test) if test.same_molecule() else None
    res: dict[str, Any] = {"total_fs": total_fs, "models": {}}
    figs: dict[str, Any] = {}
    curves, t_by_model, by_model_traj = {}, {}, {}
    if not periodic and ref_pos is not None:
        from ase_mlff.metrics.distance_distribution import h_of_r, h_of_r_figure, h_of_r_mae

        r_grid, h_ref = h_of_r(ref_pos)
        h_curves = {"reference (test)": h_ref}
        ref_map = tj.contact_map(ref_pos)
    for name, info in study.items():
        rows = info["rows"]
        t = np.array([r["t_inst_fs"] for r in rows], float)
        stable = np.array([r["stable"] for r in rows], bool)
        m: dict[str, Any] = dict(result.summaries[rows[0]["model"]])
        curves[name] = result.km[rows[0]["model"]]
        t_by_model[name] = np.where(stable, total_fs, t)
        runs = trajs.get(info["dir"], [])
        by_model_traj[name] = runs
        m["stable_frames"] = int(sum(len(r) for r in runs))
        if not runs:
            res["models"][name] = m
            continue
        pos = np.concatenate([r.positions_tnc for r in runs])
        m["lindemann_global"] = float(
            np.mean([tj.lindemann_index(r.positions_tnc, r.cell_33, r.pbc_3)[1] for r in runs])
        )
        m["min_distance_min_A"] = float(
            min(tj.min_distance_series(r.positions_tnc, r.cell_33, r.pbc_3).min() for r in runs)
        )
        m["temperature_mean_K"] = float(np.mean(np.concatenate([r.temperature_t for r in runs])))
        drift = [
            tj.energy_drift(r.time_fs_t, r.total_energy_t, r.n_atoms)["drift_eV_per_ps_per_atom"]
            for r in runs
            if len(r) > 2
        ]
        if drift:
            m["energy_drift_eV_per_ps_per_atom"] = float(np.mean(drift))
        if not periodic and ref_pos is not None:
            _, h = h_of_r(pos)
            h_curves[name] = h
            m["h_r_mae"] = h_of_r_mae(h, h_ref)
            cmap = tj.contact_map(pos)
            m["contact_map_mae_A"] = tj.contact_map_mae(cmap, ref_map)
            figs[f"contact_map_{name}.png"] = tj.contact_map_figure(
                cmap, ref_map, title=f"{name} (lower) vs reference (upper)"
            )
            m["rmsd_final_mean_A"] = float(
                np.mean([tj.rmsd_series(r.positions_tnc, r.positions_tnc[0])[-1] for r in runs])
            )
        if clusters is not None:
            template = test.to_atoms(0, with_labels=False)
            m.update(_exploration(clusters, models[name], pos, template, a))
        res["models"][name] = m
    figs["survival.png"] = survival_figure(curves)
    if not periodic and ref_pos is not None:
        temperature = float(summary.get("md", {}).get("temperature_K", 300.0))
        quads = fes_dihedrals(a.dihedrals, a.data, test.to_atoms(0, with_labels=False))
        if quads:
            res["fes"] = _free_energies(quads, ref_pos, by_model_traj, temperature, res, figs)
    with_frames = {n: r for n, r in by_model_traj.items() if r}
    if with_frames:
        # RMSD to one structure for all replicas: the clusters' mean training structure
        reference = clusters.reference_ if clusters is not None else None
        figs["md_observables.png"] = tj.observables_figure(with_frames, reference_nc=reference)
    if not periodic and ref_pos is not None:
        figs["h_r.png"] = h_of_r_figure(r_grid, h_curves, "h(r) of the stable parts")
        rmsf = {
            n: np.mean([tj.rmsf(r.positions_tnc) for r in runs], axis=0)
            for n, runs in with_frames.items()
        }
        if rmsf:
            figs["rmsf.png"] = tj.rmsf_figure(rmsf)
        if clusters is not None and with_frames:
            from ase_mlff.metrics.clusters import clusters_figure

            visited = {
                n: np.concatenate([r.positions_tnc for r in runs])[::5]
                for n, runs in with_frames.items()
            }
            figs["clusters_md.png"] = clusters_figure(clusters, ref_pos, other=visited)
    else:
        figs.update(_periodic_observables(with_frames, test, res, a))
    table_in = {n: {**forces[n], **res["models"][n]} for n in res["models"]}
    comp = force_vs_stability(table_in)
    res["correlation"] = comp["correlation"]
    res["table"] = force_vs_stability_table(comp)
    figs["force_vs_stability.png"] = force_vs_stability_figure(comp, t_by_model)
    return res, figs


def _free_energies(quads, ref_pos, by_model_traj, temperature, res, figs) -> dict:
    """F(φ) = −kT ln p(φ) of each torsion over the stable frames against the reference
    test frames, MAE_F (paper 003 Eqs. 5-7), the share of reference bins never visited,
    and the 2-D surface of the first two torsions."""
    from ase_mlff.metrics.fes import (
        dihedrals,
        fes2d_figure,
        fes_figure,
        fes_mae,
        fes_unvisited_fraction,
        free_energy_1d,
        free_energy_2d,
    )
    from ase_mlff.metrics.plots import _plt

    names, q = list(quads), np.array(list(quads.values()))
    bins = 36
    width = 2 * np.pi / bins
    ref_phi = dihedrals(ref_pos, q)
    phis = {
        n: dihedrals(np.concatenate([r.positions_tnc for r in runs]), q)
        for n, runs in by_model_traj.items()
        if runs
    }
    plt = _plt()
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.4), squeeze=False)
    out: dict[str, Any] = {"temperature_K": temperature, "bins": bins}
    for k, name in enumerate(names):
        x, f_ref = free_energy_1d(ref_phi[:, k], bins, temperature_K=temperature)
        curves = {"reference (test)": f_ref}
        for model, phi in phis.items():
            _, f = free_energy_1d(phi[:, k], bins, temperature_K=temperature)
            curves[model] = f
            res["models"][model][f"fes_mae_{name}_eV_rad"] = fes_mae(f, f_ref, width)
            res["models"][model][f"fes_unvisited_{name}"] = fes_unvisited_fraction(f, f_ref)
        fes_figure(x, curves, xlabel=f"{name} (rad)", title=f"F({name})", ax=axes[0, k])
    fig.tight_layout()
    figs["fes_1d.png"] = fig
    if len(names) >= 2:
        surfaces = {}
        x, y, surfaces["reference (test)"] = free_energy_2d(
            ref_phi[:, 0], ref_phi[:, 1], bins, temperature_K=temperature
        )
        for model, phi in phis.items():
            surfaces[model] = free_energy_2d(phi[:, 0], phi[:, 1], bins, temperature_K=temperature)[
                2
            ]
        figs["fes_2d.png"] = fes2d_figure(x, y, surfaces, f"{names[0]} (rad)", f"{names[1]} (rad)")
    out["dihedrals"] = {n: list(map(int, v)) for n, v in quads.items()}
    return out


def _exploration(clusters, model, pos: np.ndarray, template, a, max_frames: int = 500) -> dict:
    """Explored/unexplored share of the visited frames (all of them) and the mean force
    norm of the model in each region (at most ``max_frames`` frames evaluated)."""
    from ase_mlff.metrics.clusters import exploration
    from ase_mlff.models.prediction import predict_frames

    ex = exploration(clusters, pos)
    out = {"explored_fraction": ex["explored_fraction"]}
    pick = np.linspace(0, len(pos) - 1, min(max_frames, len(pos))).astype(int)
    _, forces = predict_frames(model, template, pos[pick], dtype=a.dtype, device=a.device)
    exf = exploration(clusters, pos[pick], forces)
    out["mean_force_norm_explored"] = exf["mean_force_norm_explored"]
    out["mean_force_norm_unexplored"] = exf["mean_force_norm_unexplored"]
    return out


def _periodic_observables(with_frames: dict, test: Dataset, res: dict, a) -> dict:
    """Element-pair RDFs against the test frames (paper 003 Appendix A) and self-diffusion
    of each element from the MSD over all windows of half the shortest stable run."""
    from ase_mlff.metrics.diffusion import diffusion_coefficient
    from ase_mlff.metrics.rdf import rdf_figure, rdf_mae, rdf_of_frames

    figs: dict[str, Any] = {}
    elements = sorted(set(test.numbers_n.tolist()))
    pairs = [(x, y) for k, x in enumerate(elements) for y in elements[k:]]
    cell = test.cell_s33[0]
    heights = np.abs(np.linalg.det(cell)) / np.linalg.norm(
        np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1
    )
    r_max = float(min(6.0, 0.5 * heights.min()))
    r, g_ref = rdf_of_frames(test.to_atoms_list(with_labels=False), pairs, r_max)
    curves = {}
    for name, runs in with_frames.items():
        atoms = [x for tr in runs for x in tr.to_atoms()]
        _, g = rdf_of_frames(atoms, pairs, r_max)
        maes = rdf_mae(g, g_ref, r_max)
        for (x, y), v in zip(pairs, np.atleast_1d(maes)):
            res["models"][name][f"rdf_mae_{chemical_symbols[x]}{chemical_symbols[y]}"] = float(v)
        curves[name] = g
        for z in elements:
            sel = np.flatnonzero(runs[0].numbers_n == z)
            ds = []
            for tr in runs:
                if len(tr) < 4:
                    continue
                dt = float(np.median(np.diff(tr.time_fs_t)))
                window = dt * (len(tr) // 2)
                ds.append(
                    diffusion_coefficient(tr.positions_tnc, dt, window, tr.cell_33, atoms=sel)
                )
            if ds:  # Å²/fs -> cm²/s
                res["models"][name][f"diffusion_{chemical_symbols[z]}_cm2_s"] = 0.1 * float(
                    np.mean(ds)
                )
    panels = {
        f"{chemical_symbols[x]}-{chemical_symbols[y]}": {
            "reference (test)": g_ref[k],
            **{n: g[k] for n, g in curves.items()},
        }
        for k, (x, y) in enumerate(pairs)
    }
    figs["rdf.png"] = rdf_figure(r, panels, title="g(r) of the stable parts")
    return figs


def stability_markdown(st: dict) -> str:
    lines = [
        f"## Stability study ({st['total_fs'] / 1000:.2f} ps per replica)",
        "",
        "Force metrics beside stability, models sorted by force MAE (paper 003 Fig. 3):",
        "",
        st["table"],
        "Trajectory observables over the stable parts:",
        "",
    ]
    keys = sorted({k for m in st["models"].values() for k in m} - {"n_replicas"})
    lines += ["| quantity | " + " | ".join(st["models"]) + " |"]
    lines += ["|---" * (len(st["models"]) + 1) + "|"]
    for k in keys:
        cells = [
            f"{m[k]:.4g}" if isinstance(m.get(k), (int, float)) else "—"
            for m in st["models"].values()
        ]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
