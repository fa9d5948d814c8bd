"""The model analyses and trajectory observables of ``recipes.evaluate`` (kept apart so the
recipe's main file reads as the report's outline)."""

from __future__ import annotations

import logging
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
        from ase_mlff.calculators.registry import make_calculator

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
            i, j = (int(x) for x in item.strip().split("-"))
            out[f"{sym[i]}{i}-{sym[j]}{j}"] = (i, j)
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


def model_analyses(models: dict, test: Dataset, preds: dict, a) -> tuple[dict, dict, dict]:
    """Latent space, bond scans, ΔF MAE and force angles; returns (results, comparison
    figures, per-model figures). ``results["scalars"][model]`` holds the numbers logged to
    that model's MLflow run."""
    from ase_mlff.metrics import bond_forces as bf
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

    # --- force angles (paper 004 Fig. B.1): model vs reference, first model vs the others
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
    return res, figs, per_model


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
    d = ana["delta_f"]
    lines += [
        f"ΔF MAE over the {d['n_frames']} test frames nearest frame {d['reference_frame']} "
        f"({d['n_bonds']} bonds):",
        "",
    ]
    lines += [f"- {n}: {v * 1e3:.1f} meV/Å" for n, v in d["mae"].items()]
    lines += ["", "Force angles:", "", "| pair | median (°) | > 90° |", "|---|---|---|"]
    for k, v in ana["force_angles"].items():
        lines.append(f"| {k} | {v['median_deg']:.2f} | {100 * v['fraction_above_90']:.2f} % |")
    return "\n".join(lines) + "\n"
