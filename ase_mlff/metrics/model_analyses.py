"""Model analyses of the evaluation report (papers 000 and 004): the latent space of atom
features with silhouettes, bond scans and the roughness of dF∥/dr, the ΔF MAE around a
reference frame, and the angles between force fields.

    from ase_mlff.metrics.model_analyses import AnalysisOptions, model_analyses
    res, figs, per_model = model_analyses(models, test, preds, AnalysisOptions(data="aspirin"))

Used by ``python -m ase_mlff.recipes.evaluate``; every analysis is one of the metric
modules (:mod:`~ase_mlff.metrics.latent`, :mod:`~ase_mlff.metrics.bond_forces`), this
module chooses what to run and collects the numbers and figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase.data import chemical_symbols

from ase_mlff.data import Dataset, load_dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalysisOptions:
    """What the analyses run on (the evaluation recipe's flags of the same names).

    ``data``: the test set's name (``aspirin`` selects paper 000's three bonds and the two
    soft torsions); ``latent_data``: further datasets as latent classes (else the classes
    are elements), ``latent_frames`` frames of each, ``latent_pool`` a sample per
    ``"atom"`` or per ``"frame"`` (:func:`~ase_mlff.metrics.latent.atom_embeddings`);
    ``bonds``/``dihedrals``: ``'i-j,...'``
    and ``'a-b-c-d,...'`` (0-based) instead of the defaults; ``reference_frame`` and
    ``n_nearest``: the centre and size of the ΔF MAE neighbourhood (paper 000);
    ``seed`` of the projections; ``device``/``dtype`` of model evaluations.
    """

    data: str = ""
    latent_data: tuple[str, ...] = ()
    latent_frames: int = 40
    latent_pool: str = "atom"
    bonds: str | None = None
    dihedrals: str | None = None
    reference_frame: int = 21
    n_nearest: int = 100
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float64"


def positions_by_frame(ds: Dataset) -> np.ndarray:
    """(S, N, 3) positions of a dataset of one molecule."""
    return ds.positions_nc.reshape(len(ds), -1, 3)


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


def latent_classes(name: str, exclude: str = "") -> dict[str, Dataset]:
    """The latent classes one dataset contributes: one per molecule for a set that labels
    its frames by molecule (the MD17 eight: ``extra_s["molecule"]`` with the names in
    ``provenance["molecules"]``; ``exclude`` drops the test set's own molecule), else the
    whole set as one class."""
    ds = load_dataset(name)
    names = ds.provenance.get("molecules")
    if "molecule" not in ds.extra_s or not isinstance(names, dict):
        return {name: ds}
    out = {}
    for mol, idx in sorted(names.items(), key=lambda kv: kv[1]):
        frames = np.flatnonzero(ds.extra_s["molecule"] == idx)
        if len(frames) and mol != exclude:
            out[mol] = ds[frames]
    return out


def embeddable(sources: dict[str, Dataset], models: dict) -> dict[str, Dataset]:
    """Each latent class cut to the frames every model can embed: a model with an element
    table (``species``) has no embedding for another element (e.g. an aspirin model and
    uracil's N); a class left without frames is dropped, with a log line."""
    tables = [set(m.species) for m in models.values() if getattr(m, "species", None)]
    if not tables:
        return sources
    allowed = np.array(sorted(set.intersection(*tables)))
    out = {}
    for name, ds in sources.items():
        ok = np.isin(ds.numbers_n, allowed)
        frame_ok = np.logical_and.reduceat(ok, ds.ptr_s[:-1]) if len(ds) else ok[:0]
        if frame_ok.all():
            out[name] = ds
        elif frame_ok.any():
            out[name] = ds[np.flatnonzero(frame_ok)]
            log.info(
                "latent class %s: %d frames with other elements left out",
                name,
                int((~frame_ok).sum()),
            )
        else:
            log.info(
                "latent class %s left out: the models have no embedding for its elements", name
            )
    return out


def model_analyses(
    models: dict,
    test: Dataset,
    preds: dict,
    opts: AnalysisOptions,
    molecule: bool = True,
    reference: tuple[str, Any] | None = None,
) -> tuple[dict, dict, dict]:
    """Latent space, force angles and, for one molecule, bond scans and the ΔF MAE;
    ``preds[name]`` holds each model's test-set predictions, ``reference`` an optional
    (name, ASE calculator) of the reference method for the bond scans. Returns (results,
    comparison figures, per-model figures); ``results["scalars"][model]`` holds the
    numbers logged to that model's MLflow run."""
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
    sources: dict[str, Any] = {opts.data: test}
    for extra in opts.latent_data or []:
        sources.update(latent_classes(str(extra), exclude=opts.data))
    sources = embeddable(sources, models)
    if len(sources) == 1 and opts.latent_pool == "frame":
        raise ValueError(
            "latent_pool='frame' needs at least two latent classes; only "
            f"{next(iter(sources))!r} is left (the other datasets were the test set itself or "
            "hold elements the models cannot embed)"
        )
    projections, silhouettes, sil_means, labels = {}, {}, {}, None
    for name, model in models.items():
        if not hasattr(model, "atom_features"):
            log.info("%s has no atom features: no latent-space analysis", name)
            continue
        feats, labs, numbers = atom_embeddings(
            model, sources, max_frames=opts.latent_frames, pool=opts.latent_pool
        )
        if len(sources) == 1:
            labs = np.array([chemical_symbols[z] for z in numbers])
        la = latent_analysis(feats, labs, methods=("tsne", "umap"), max_points=3000, seed=opts.seed)
        projections[name], silhouettes[name] = la["projection"], la["silhouette"]
        sil_means[name] = la["silhouette_mean"]
        labels = la["labels"]
        for method, s in la["silhouette_mean"].items():
            res["scalars"][name][f"latent_silhouette_{method}"] = s
    if projections:
        res["latent"] = {
            "classes": "datasets" if len(sources) > 1 else "elements",
            "samples": opts.latent_pool,
            "silhouette_mean": sil_means,
        }
        figs["latent.png"] = latent_figure(projections, labels, silhouettes=sil_means)
        figs["latent_silhouettes.png"] = silhouette_figure(silhouettes)

    force_angle_analysis(models, test, preds, res, figs)
    if molecule:
        molecule_analyses(models, test, preds, opts, res, figs, reference)
    return res, figs, per_model


def molecule_analyses(
    models: dict,
    test: Dataset,
    preds: dict,
    opts: AnalysisOptions,
    res: dict,
    figs: dict,
    reference: tuple[str, Any] | None = None,
) -> None:
    """Bond scans (paper 000 Eq. 6, Fig. 6) and the ΔF MAE around ``opts.reference_frame``
    (Eqs. 7-8), written into ``res`` and ``figs``."""
    from ase_mlff.metrics import bond_forces as bf

    # --- bond scans (paper 000 Eq. 6, Fig. 6)
    ref = min(opts.reference_frame, len(test) - 1)
    start = test.to_atoms(ref, with_labels=False)
    ref_name, ref_calc = reference if reference is not None else (None, None)
    scans: dict[str, dict[str, dict[str, float]]] = {}
    for bond, (i, j) in scan_bonds(opts.bonds, opts.data, start).items():
        _, images = bf.fragment_bond_scan(start, i, j)
        potentials = dict(models)
        if ref_calc is not None:
            potentials[ref_name] = ref_calc
        profiles = {
            n: bf.bond_force_profile(p, images, i, j, device=opts.device)
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
    pos = positions_by_frame(test)
    n_near = min(opts.n_nearest, len(test))
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


def force_angle_analysis(models: dict, test: Dataset, preds: dict, res: dict, figs: dict):
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
