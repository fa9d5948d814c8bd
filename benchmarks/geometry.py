"""The shared geometry against its peers, side by side in one run.

    python benchmarks/geometry.py [--device cpu|cuda] [--repeat 5]

1. Minimum image of many difference vectors in one cell: ``ase_mlff.graph.geometry``
   (numpy front and torch) against ``ase.geometry.find_mic``, cubic and triclinic cells.
2. What a detector check costs: all pair distances of a batch of periodic replicas
   (Lindemann-style), ``minimum_image_torch`` over the batch against ASE's
   ``get_distances(mic=True)`` system by system.
3. Bond perception of one aspirin frame: ``perceive_bonds`` against MDAnalysis'
   ``DefaultGuesser.guess_bonds`` (when installed).

Prints median wall times (ms) and the ratio peer / ours; the maximum difference of the
results is printed beside them, so a fast wrong answer shows.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from ase.cell import Cell
from ase.geometry import find_mic, get_distances

from ase_mlff.graph.geometry import minimum_image, minimum_image_torch, perceive_bonds


def timed(fn, repeat: int) -> tuple[float, object]:
    """Median wall time of ``fn`` in ms; CUDA work is waited for (kernels launch async)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    out = fn()  # warm-up (and the result)
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times)), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rng = np.random.default_rng(0)
    dev = torch.device(a.device)
    cells = {
        "cubic 12.4 Å": np.eye(3) * 12.43,
        "triclinic (α-quartz-like)": Cell.fromcellpar([4.9, 4.9, 5.4, 90, 90, 120]).array,
        "skewed": np.array([[3.0, 0, 0], [10.3, 2.5, 0], [5.7, 3.2, 4.0]]),
    }
    print(f"device {a.device}, torch threads {torch.get_num_threads()}, repeat {a.repeat}")
    print("\n1. minimum image of 100,000 vectors in one cell (ms)")
    print("| cell | ase find_mic | ours (numpy) | ours (torch) | find_mic / numpy | max |Δd| (Å) |")
    print("|---|---|---|---|---|---|")
    v = rng.uniform(-20, 20, (100_000, 3))
    for name, cell in cells.items():
        t_ase, (vec_ase, _) = timed(lambda c=cell: find_mic(v, c, pbc=True), a.repeat)
        t_np, vec = timed(lambda c=cell: minimum_image(v, c), a.repeat)
        vt = torch.as_tensor(v, device=dev)
        ct = torch.as_tensor(cell, device=dev)
        pb = torch.ones(3, dtype=torch.bool, device=dev)
        t_t, _ = timed(lambda vt=vt, ct=ct, pb=pb: minimum_image_torch(vt, ct, pb), a.repeat)
        diff = np.abs(np.linalg.norm(vec, axis=1) - np.linalg.norm(vec_ase, axis=1)).max()
        print(
            f"| {name} | {t_ase:.1f} | {t_np:.1f} | {t_t:.1f} | {t_ase / t_np:.2f} | {diff:.1e} |"
        )

    print("\n2. all pair distances of a batch of periodic replicas, one detector check (ms)")
    print("| batch | ase get_distances per system | ours, batched torch | ratio | max |Δd| (Å) |")
    print("|---|---|---|---|---|")
    for n_sys, n_atoms, cell in [
        (29, 24, cells["triclinic (α-quartz-like)"] * 2),
        (8, 192, cells["cubic 12.4 Å"]),
    ]:
        pos = rng.uniform(0, 1, (n_sys, n_atoms, 3)) @ cell
        i, j = np.triu_indices(n_atoms, 1)

        def ase_all(pos=pos, cell=cell, i=i, j=j):
            return np.concatenate([get_distances(p, cell=cell, pbc=True)[1][i, j] for p in pos])

        vec = torch.as_tensor((pos[:, j] - pos[:, i]).reshape(-1, 3), device=dev)
        cells_t = torch.as_tensor(np.broadcast_to(cell, (n_sys, 3, 3)).copy(), device=dev)
        pbc_t = torch.ones(n_sys, 3, dtype=torch.bool, device=dev)
        sys_p = torch.arange(n_sys, device=dev).repeat_interleave(len(i))

        def ours(vec=vec, cells_t=cells_t, pbc_t=pbc_t, sys_p=sys_p):
            return minimum_image_torch(vec, cells_t, pbc_t, sys_p).norm(dim=1)

        t_ase, d_ase = timed(ase_all, a.repeat)
        t_ours, d = timed(ours, a.repeat)
        diff = float(np.abs(d.cpu().numpy() - d_ase).max())
        print(
            f"| {n_sys} × {n_atoms} atoms ({len(i) * n_sys:,} pairs) | {t_ase:.1f} | "
            f"{t_ours:.1f} | {t_ase / t_ours:.2f} | {diff:.1e} |"
        )

    print("\n3. bond perception of one aspirin frame (ms)")
    from ase_mlff.data import load_dataset

    atoms = load_dataset("aspirin").to_atoms(0, with_labels=False)
    t_ours, bonds = timed(lambda: perceive_bonds(atoms), max(a.repeat, 20))
    line = f"| ours (covalent radii × 1.3) | {t_ours:.2f} | {len(bonds)} bonds |"
    try:
        import warnings

        import MDAnalysis as mda
        from ase.data import chemical_symbols
        from MDAnalysis.guesser.default_guesser import DefaultGuesser

        warnings.filterwarnings("ignore", module="MDAnalysis")
        u = mda.Universe.empty(len(atoms), trajectory=True)
        u.add_TopologyAttr("types", [chemical_symbols[z] for z in atoms.numbers])
        g = DefaultGuesser(u)
        t_mda, mb = timed(lambda: g.guess_bonds(u.atoms, atoms.positions), max(a.repeat, 20))
        peer = f"| MDAnalysis guess_bonds (vdW × 0.55) | {t_mda:.2f} | {len(mb)} bonds |"
    except ImportError:
        peer = "| MDAnalysis | not installed | |"
    print("| method | ms | result |\n|---|---|---|")
    print(line)
    print(peer)


if __name__ == "__main__":
    from ase_mlff import keep_freed_memory

    keep_freed_memory()  # as the recipes: the figures are measured with it
    main()
