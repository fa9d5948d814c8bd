"""How long the metrics suite takes on trajectory-sized inputs (issue: metrics are
vectorized, no per-frame Python loop in the inner work).

Inputs (built from the shipped data, no model needed; the "predictions" are the reference
forces plus Gaussian noise of σ = 0.05 eV/Å, since only the metrics are timed):

- aspirin: ``--aspirin-frames`` (10,000) frames of 21 atoms, the shipped GFN2-xTB frames
  repeated with 0.01 Å noise; clusters fitted on the shipped training trajectories.
- water: ``--water-frames`` (1,000) frames of the shipped 192-atom flexible-TIP3P box.

Every row is timed ``--repeats`` times (best and median printed, in seconds). The 1-min
load average before and after is printed: compare timings only from an idle machine.

    python benchmarks/metrics.py
    python benchmarks/metrics.py --aspirin-frames 2000 --water-frames 200 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def _time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts), float(np.median(ts))


def aspirin_rows(n_frames: int, seed: int):
    from ase_mlff.data import load_dataset
    from ase_mlff.data.io import SHIPPED_SPLITS
    from ase_mlff.metrics import bond_forces as bf
    from ase_mlff.metrics import trajectory as tj
    from ase_mlff.metrics.clusters import ConformationClusters, cluster_metrics, exploration
    from ase_mlff.metrics.distance_distribution import h_of_r
    from ase_mlff.metrics.fes import dihedrals, free_energy_1d, free_energy_2d
    from ase_mlff.metrics.forces import element_metrics, force_metrics

    rng = np.random.default_rng(seed)
    ds = load_dataset("aspirin")
    n = int(ds.n_atoms_s[0])
    pos_all = ds.positions_nc.reshape(len(ds), n, 3)
    f_all = ds.forces_nc.reshape(len(ds), n, 3)
    pick = np.arange(n_frames) % len(ds)
    pos = pos_all[pick] + rng.normal(0, 0.01, (n_frames, n, 3))
    ref_f = f_all[pick]
    pred_f = ref_f + rng.normal(0, 0.05, ref_f.shape)
    numbers = ds.numbers_n[:n]
    numbers_n = np.tile(numbers, n_frames)
    n_atoms_s = np.full(n_frames, n)
    is_test = np.isin(ds.extra_s["traj_id"], SHIPPED_SPLITS["aspirin"]["test_groups"])
    train = pos_all[~is_test]
    clusters = ConformationClusters(3, seed=seed).fit(train, numbers)
    quads = np.array([[0, 5, 10, 7], [5, 6, 12, 11]])  # carboxyl and ester torsions (MD17)
    bonds = bf.covalent_bonds(ds.to_atoms(0))
    near = bf.nearest_frames(pos, 21, n=100)
    rows = {
        "force_metrics (Eqs. 1-4)": lambda: force_metrics(pred_f, ref_f, numbers_n, n_atoms_s),
        "element_metrics (Eqs. 10-13)": lambda: element_metrics(
            pred_f, ref_f, numbers_n, n_atoms_s
        ),
        f"clusters fit ({len(train)} training frames, K=3)": lambda: ConformationClusters(
            3, seed=seed
        ).fit(train, numbers),
        "cluster_metrics + RBP (Eqs. 5-9)": lambda: cluster_metrics(
            clusters, pos, pred_f, ref_f, numbers
        ),
        "exploration (explored/unexplored)": lambda: exploration(clusters, pos, pred_f),
        "h(r)": lambda: h_of_r(pos),
        "RMSD series (aligned)": lambda: tj.rmsd_series(pos, pos[0]),
        "RMSF (aligned, 3 rounds)": lambda: tj.rmsf(pos),
        "contact map": lambda: tj.contact_map(pos),
        "Lindemann index": lambda: tj.lindemann_index(pos),
        "min-distance series": lambda: tj.min_distance_series(pos),
        "FES 1-D + 2-D of two dihedrals": lambda: (
            lambda d: (free_energy_1d(d[:, 0]), free_energy_2d(d[:, 0], d[:, 1]))
        )(dihedrals(pos, quads)),
        "nearest 100 frames (aligned RMSD)": lambda: bf.nearest_frames(pos, 21, n=100),
        "ΔF MAE, 100 frames (Eqs. 7-8)": lambda: bf.delta_force_mae(
            bf.bond_projected_forces(pos[near], pred_f[near], bonds),
            bf.bond_projected_forces(pos[near], ref_f[near], bonds),
        ),
    }
    return f"aspirin, {n_frames} frames x {n} atoms", rows


def water_rows(n_frames: int, seed: int):
    from ase_mlff.data import load_dataset
    from ase_mlff.metrics import trajectory as tj
    from ase_mlff.metrics.diffusion import diffusion_coefficient
    from ase_mlff.metrics.forces import force_metrics
    from ase_mlff.metrics.rdf import rdf_of_frames

    rng = np.random.default_rng(seed)
    ds = load_dataset("water")
    n = int(ds.n_atoms_s[0])
    pick = np.arange(n_frames) % len(ds)
    pos = ds.positions_nc.reshape(len(ds), n, 3)[pick]
    cell = ds.cell_s33[0]
    numbers = ds.numbers_n[:n]
    ref_f = ds.forces_nc.reshape(len(ds), n, 3)[pick]
    pred_f = ref_f + rng.normal(0, 0.05, ref_f.shape)
    oxygens = np.flatnonzero(numbers == 8)
    pairs = [("O", "O"), ("O", "H"), ("H", "H")]
    rows = {
        "force_metrics (Eqs. 1-4)": lambda: force_metrics(
            pred_f, ref_f, np.tile(numbers, n_frames), np.full(n_frames, n)
        ),
        "RDF O-O, O-H, H-H (min image)": lambda: rdf_of_frames(
            pos, pairs, 6.0, numbers=numbers, cell=cell
        ),
        # the same RDF through the neighbour graph, on 1 % of the frames (it is ~100x slower)
        "RDF, graph path, 1 % of the frames": lambda: rdf_of_frames(
            pos[: max(1, n_frames // 100)], pairs, 6.0, numbers=numbers, cell=cell, method="graph"
        ),
        "diffusion (O, all windows)": lambda: diffusion_coefficient(
            pos, 50.0, 50.0 * (n_frames // 2), cell, atoms=oxygens
        ),
        "Lindemann index (min image)": lambda: tj.lindemann_index(pos, cell),
        "min-distance series (min image)": lambda: tj.min_distance_series(pos, cell),
    }
    return f"water, {n_frames} frames x {n} atoms (periodic)", rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--aspirin-frames", type=int, default=10_000)
    p.add_argument("--water-frames", type=int, default=1_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    load0 = os.getloadavg()[0]
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{a.threads} torch threads, numpy {np.__version__}, torch {torch.__version__}; "
        f"load {load0:.2f}"
    )
    results = {}
    for title, rows in (
        aspirin_rows(a.aspirin_frames, a.seed),
        water_rows(a.water_frames, a.seed),
    ):
        print(f"\n{title}\n\n| metric | best (s) | median (s) |\n|---|---:|---:|")
        for name, fn in rows.items():
            best, med = _time(fn, a.repeats)
            results[f"{title}: {name}"] = {"best_s": best, "median_s": med}
            print(f"| {name} | {best:.3f} | {med:.3f} |")
    print(f"\nload average before {load0:.2f}, after {os.getloadavg()[0]:.2f}")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    from ase_mlff import keep_freed_memory

    keep_freed_memory()  # as the recipes: the figures are measured with it
    main()
