"""Neighbour lists of periodic systems: this project's (as it runs: vesin on the CPU; and its
own torch search) against vesin, vesin-torch and matscipy, side by side in one run, and
the pair sets checked equal to matscipy's.

Systems: a frame of the shipped flexible-TIP3P water box (192 atoms, cutoff 5 Å, the
models' cutoff, and 6.21 Å, the RDF range of ``water_ffpt``), the largest shipped silica
polymorph cell (48 atoms) and its rattled 2 × 2 × 4 supercell (768 atoms, about paper
004's 732-atom silica), and a rattled 5,324-atom copper box (cubic fcc 11 × 11 × 11), all
at cutoff 5 Å. Each library builds the full list (both directions of
every pair) with integer cell shifts; every list is compared with ours as a set of
(i, j, shift) before timing. Median of ``--repeats`` calls after one warm-up, round-robin.

    python benchmarks/neighbour_lists.py
    python benchmarks/neighbour_lists.py --device cuda     # vesin-torch and ours on the GPU
"""

from __future__ import annotations

import argparse
import time
import warnings

import ase.io
import numpy as np
import torch
from ase.build import bulk

from ase_mlff.data.io import SHIPPED_DIR, load_dataset
from ase_mlff.graph.neighbours import neighbour_list


def systems() -> list[tuple[str, object, float]]:
    water = load_dataset("water")
    w = water.to_atoms(0, with_labels=False)
    cell = max(ase.io.read(SHIPPED_DIR / "silica_gfn1_polymorphs.xyz", ":"), key=len)
    silica = cell * (2, 2, 4)
    silica.rattle(0.05, seed=0)
    cu = bulk("Cu", "fcc", 3.61, cubic=True) * (11, 11, 11)
    cu.rattle(0.05, seed=0)
    return [
        (f"water ({len(w)} atoms)", w, 5.0),
        (f"water ({len(w)} atoms)", w, 6.21),
        (f"silica cell ({len(cell)} atoms)", cell, 5.0),
        (f"silica 2×2×4 ({len(silica)} atoms)", silica, 5.0),
        (f"Cu fcc ({len(cu)} atoms)", cu, 5.0),
    ]


def ours(atoms, cutoff: float, device: str, torch_search: bool = False):
    """``ase_mlff.graph.neighbour_list`` as the package runs it (vesin for periodic systems
    on the CPU), or with ``torch_search`` its own all-pairs torch search."""
    import ase_mlff.graph.neighbours as nb

    pos = torch.as_tensor(atoms.positions, dtype=torch.float64, device=device)
    cell = torch.as_tensor(atoms.cell[:], dtype=torch.float64, device=device)[None]
    pbc = torch.as_tensor(atoms.pbc, device=device)[None]
    n = len(atoms)
    system = torch.zeros(n, dtype=torch.long, device=device)
    n_atoms = torch.tensor([n], device=device)

    def run():
        default, nb.USE_VESIN = nb.USE_VESIN, not torch_search
        try:
            e, s = neighbour_list(pos, cell, pbc, system, n_atoms, cutoff)
        finally:
            nb.USE_VESIN = default
        return e[0], e[1], s

    return run


def torch_search(atoms, cutoff: float, device: str):
    return ours(atoms, cutoff, device, torch_search=True)


def vesin_numpy(atoms, cutoff: float, device: str):
    from vesin import NeighborList

    nl = NeighborList(cutoff=cutoff, full_list=True)
    pos, cell = atoms.positions, atoms.cell[:]

    def run():
        return nl.compute(pos, cell, periodic=bool(atoms.pbc.all()), quantities="ijS")

    return run


def vesin_torch(atoms, cutoff: float, device: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from vesin_torch import NeighborList
        except ImportError:
            from vesin.torch import NeighborList
    nl = NeighborList(cutoff=cutoff, full_list=True)
    pos = torch.as_tensor(atoms.positions, dtype=torch.float64, device=device)
    cell = torch.as_tensor(atoms.cell[:], dtype=torch.float64, device=device)

    def run():
        return nl.compute(pos, cell, periodic=bool(atoms.pbc.all()), quantities="ijS")

    return run


def matscipy_nl(atoms, cutoff: float, device: str):
    from matscipy.neighbours import neighbour_list as msp

    def run():
        return msp("ijS", atoms, cutoff)

    return run


def pair_set(i, j, s) -> set:
    i, j, s = (np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x) for x in (i, j, s))
    return set(zip(i.tolist(), j.tolist(), map(tuple, s.astype(np.int64).tolist())))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    libs = {
        "ase_mlff": ours,
        "ase_mlff torch search": torch_search,
        "vesin-torch": vesin_torch,
        "vesin (numpy)": vesin_numpy,
        "matscipy": matscipy_nl,
    }
    print(
        f"periodic neighbour lists, full list with shifts, every list checked equal to "
        f"matscipy's; device {args.device} (ours, vesin-torch), {args.threads} threads; median "
        f"of {args.repeats} calls ({args.repeats // 4} above 1,000 atoms, one for the torch "
        "search above 2,000)\n"
    )
    print("| system | cutoff (Å) | pairs | " + " | ".join(f"{k} (ms)" for k in libs) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in libs) + " |")
    for name, atoms, cutoff in systems():
        runs = {k: f(atoms, cutoff, args.device) for k, f in libs.items()}
        reference = pair_set(*runs["matscipy"]())
        for k, run in runs.items():
            got = pair_set(*run())
            if got != reference:
                raise AssertionError(
                    f"{k} disagrees with matscipy on {name}: {len(got ^ reference)} pairs differ"
                )
        repeats = max(3, args.repeats if len(atoms) < 1000 else args.repeats // 4)
        times = {k: [] for k in runs}
        for rep in range(repeats):
            for k, run in runs.items():
                if k == "ase_mlff torch search" and len(atoms) > 2000 and rep > 0:
                    continue  # O(n²) per image: one call says enough
                t0 = time.perf_counter()
                run()
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times[k].append(time.perf_counter() - t0)
        cells = " | ".join(f"{np.median(times[k]) * 1e3:.2f}" for k in runs)
        print(f"| {name} | {cutoff:g} | {len(reference)} | {cells} |")


if __name__ == "__main__":
    main()
