"""Paper 004's analyses of a silica study: Table 1 (unphysical trajectories), RDFs of the
relaxed polymorphs' NVT runs against the reference MD, force angles (Fig. B.1) and the
Markdown tables of a study's results.

    counts = count_unphysical(fired)                 # Table 1, one ensemble, one model
    r, g = polymorph_rdfs(reference_frames(md_ref, names), r_max=5.0, n_bins=100)
    angles = force_angle_sets({"hybrid": hybrid, "baseline": mlip}, fitted_eam, test)
    print(tables(results))

Table 2 (energy, force and stress errors) is :func:`ase_mlff.metrics.errors.efs_errors`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ase_mlff.data.dataset import Dataset
from ase_mlff.metrics.bond_forces import force_angles
from ase_mlff.metrics.plots import _plt
from ase_mlff.metrics.rdf import rdf_of_frames
from ase_mlff.models.hybrid import part_forces
from ase_mlff.models.prediction import iter_predictions, predict

#: the element pairs of the RDFs and minimum distances, and their names
PAIRS = [("Si", "O"), ("O", "O"), ("Si", "Si")]
PAIR_NAMES = ["Si–O", "O–O", "Si–Si"]
#: the stop reasons of :func:`ase_mlff.md.detectors.materials_detectors` counted apart
_NAMED_REASONS = ("atom_overlap", "lindemann")


def count_unphysical(fired: list[dict[str, float] | str | None]) -> dict[str, int]:
    """Table 1's columns for one model and ensemble, each criterion counted on its own as
    paper 004 does: ``fired`` holds per replica its failed criteria ({criterion: onset fs},
    ``ReplicaResult.fired_fs`` of a run with ``stop_on_failure=False``), or just its stop
    reason (None: ran to the end). Columns: trajectories in which atom overlap, the
    Lindemann criterion and any other check fired; ``unphysical``: in which any fired
    (so a replica can count in several criterion columns, once in ``unphysical``)."""
    sets = [set() if f is None else {f} if isinstance(f, str) else set(f) for f in fired]
    return {
        "atom_overlap": sum("atom_overlap" in f for f in sets),
        "lindemann": sum("lindemann" in f for f in sets),
        "other": sum(bool(f - set(_NAMED_REASONS)) for f in sets),
        "unphysical": sum(bool(f) for f in sets),
        "n": len(sets),
    }


def polymorph_rdfs(
    frames_by_polymorph: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    r_max: float,
    n_bins: int,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(r, (P, n_bins)) element-pair RDFs of :data:`PAIRS` averaged over polymorphs, each
    weighted equally; ``frames_by_polymorph``: name -> (positions (T, N, 3), numbers (N,),
    cell (3, 3)). ``(None, None)`` when no polymorph has a frame."""
    gs, r = [], None
    for pos, numbers, cell in frames_by_polymorph.values():
        if len(pos) == 0:
            continue
        r, g = rdf_of_frames(pos, PAIRS, r_max, n_bins, numbers=numbers, cell=cell)
        gs.append(g)
    if not gs:
        return None, None
    return r, np.mean(gs, axis=0)


def reference_frames(md_ref: Dataset, names: list[str]) -> dict[str, tuple]:
    """The reference NVT frames of each polymorph (shipped set: ``source`` ids named in the
    provenance), as (positions (T, N, 3), numbers, cell); empty for other data."""
    sources = md_ref.provenance.get("sources", {})
    out = {}
    for name in names:
        ids = [int(k) for k, d in sources.items() if d == f"{name} NVT 2000 K"]
        frames = np.flatnonzero(np.isin(md_ref.extra_s.get("source", []), ids))
        if len(frames) == 0:
            continue
        sub = md_ref[frames]
        n = int(sub.n_atoms_s[0])
        out[name] = (sub.positions_nc.reshape(len(sub), n, 3), sub.numbers_n[:n], sub.cell_s33[0])
    return out


def _hybrid_part_forces(model, test: Dataset) -> dict[str, np.ndarray]:
    """The hybrid's EAM and MLIP force parts on every atom of ``test`` (float64, 16 frames
    a batch)."""
    parts: dict[str, list] = {"eam": [], "mlip": []}
    chunks = iter_predictions(model, test, batch_size=16, dtype=torch.float64, evaluate=part_forces)
    for _, _, out in chunks:
        for k in parts:
            parts[k].append(out[k])
    return {k: np.concatenate(v) for k, v in parts.items()}


def force_angle_sets(models: dict[str, Any], eam, test: Dataset) -> dict[str, np.ndarray]:
    """Fig. B.1, per atom of ``test`` (degrees): the ``hybrid``'s EAM part vs its MLIP part;
    the fitted ``eam`` vs each other MLIP."""
    out: dict[str, np.ndarray] = {}
    f_eam = predict(eam, test, batch_size=16, dtype=torch.float64)["forces"]
    for name, model in models.items():
        if name == "hybrid":
            parts = _hybrid_part_forces(model, test)
            out["hybrid: EAM part vs MLIP part"] = force_angles(parts["eam"], parts["mlip"])
        else:
            f = predict(model, test, batch_size=16, dtype=torch.float64)["forces"]
            out[f"{name} vs fitted EAM"] = force_angles(f_eam, f)
    return out


def unphysical_figure(table: dict[str, dict[str, dict[str, int]]]):
    """Bars of Table 1: overlap / Lindemann / other / any per variant, side by side (each
    criterion counted on its own), one panel per ensemble; ``table``: variant -> ensemble
    -> :func:`count_unphysical`."""
    plt = _plt()
    ensembles = sorted({e for v in table.values() for e in v})
    fig, axes = plt.subplots(1, len(ensembles), figsize=(5.0 * len(ensembles), 3.4), squeeze=False)
    names = list(table)
    x = np.arange(len(names))
    columns = (
        ("atom_overlap", "atom overlap"),
        ("lindemann", "Lindemann"),
        ("other", "other"),
        ("unphysical", "any"),
    )
    width = 0.8 / len(columns)
    for ax, ens in zip(axes[0], ensembles):
        for k, (key, label) in enumerate(columns):
            h = np.array([table[n].get(ens, {}).get(key, 0) for n in names], dtype=float)
            ax.bar(x + (k - (len(columns) - 1) / 2) * width, h, width, label=label)
        n = max((table[v].get(ens, {}).get("n", 0) for v in names), default=0)
        ax.set(title=f"{ens}: unphysical trajectories (of {n})", ylabel="trajectories")
        ax.set_xticks(x, names, rotation=15)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _unphysical_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "**Table 1** — trajectories flagged (of the replicas started from test structures), "
        "each criterion counted on its own; a trajectory can count in several columns",
        "",
        "| setup | ensemble | atom overlap | Lindemann | other | any | stable |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in results["variants"].items():
        for ens, c in v.get("md", {}).items():
            lines.append(
                f"| {name} | {ens} | {c['atom_overlap']} | {c['lindemann']} | {c['other']} | "
                f"{c['unphysical']} | {c['n'] - c['unphysical']}/{c['n']} |"
            )
    return lines


def _error_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "**Table 2** — test-set errors",
        "",
        "| setup | energy MAE (meV/atom) | force MAE (meV/Å) | stress MAE (GPa) |",
        "|---|---|---|---|",
    ]
    for name, v in results["variants"].items():
        if "test" not in v:
            lines.append(f"| {name} | failed: {str(v.get('error', '?'))[:60]} | | |")
            continue
        t = v["test"]
        lines.append(
            f"| {name} | {t['energy_mae_meV_atom']:.2f} | {t['forces_mae_meV_A']:.1f} | "
            f"{t['stress_mae_GPa']:.3f} |"
        )
    return lines


def _rdf_and_angle_tables(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    rdf_rows = [(n, v["rdf_mae"]) for n, v in results["variants"].items() if "rdf_mae" in v]
    if rdf_rows:
        lines += ["", "**RDF MAE** (∫|g − g_ref| dr, NVT 2,000 K from the relaxed polymorphs)", ""]
        lines += [
            "| setup | " + " | ".join(PAIR_NAMES) + " |",
            "|---" * (len(PAIR_NAMES) + 1) + "|",
        ]
        for n, m in rdf_rows:
            lines.append(f"| {n} | " + " | ".join(f"{m[p]:.3f}" for p in PAIR_NAMES) + " |")
    if results.get("force_angles"):
        lines += ["", "**Force angles** (Fig. B.1), degrees", "", "| pair | median | > 90° |"]
        lines.append("|---|---|---|")
        for k, s in results["force_angles"].items():
            lines.append(f"| {k} | {s['median']:.1f} | {100 * s['frac_above_90']:.1f} % |")
    return lines


def tables(results: dict[str, Any]) -> str:
    """Markdown of a study's ``results`` (``variants``: name -> ``test`` errors, ``md``
    counts per ensemble, ``rdf_mae``; ``force_angles``): Table 1 (unphysical counts),
    Table 2 (EFS MAE), RDF MAE, force angles."""
    lines = _unphysical_table(results) + _error_table(results) + _rdf_and_angle_tables(results)
    return "\n".join(lines) + "\n"
