"""Reference data of hydrogen-combustion reaction 9, HO2 → H + O2 (paper 001 Fig. 4):
spin-polarised GFN2-xTB (tblite, doublet) on HO2 MD, the relaxed reaction path along
d(O1–H3) with noise, and H + O2 products; jobs as Ray tasks, resumable, with provenance.

    python -m ase_mlff.recipes.make_combustion_reference \\
        --out ase_mlff/data/shipped/ho2_spgfn2.npz

What each block samples, and why spin polarisation: :mod:`ase_mlff.reference.combustion`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ase_mlff.reference.combustion import CombustionConfig, make_combustion_reference


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    d = CombustionConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--temperatures", type=float, nargs="+", default=list(d.temperatures_K))
    p.add_argument("--md-frames", type=int, default=d.md_frames, help="per temperature")
    p.add_argument("--path-blocks", type=int, default=d.path_blocks)
    p.add_argument("--path-frames", type=int, default=d.path_frames, help="per block")
    p.add_argument("--products-frames", type=int, default=d.products_frames)
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", type=Path, default=Path("reference") / "ho2_spgfn2.npz")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = CombustionConfig(
        temperatures_K=tuple(a.temperatures),
        md_frames=a.md_frames,
        path_blocks=a.path_blocks,
        path_frames=a.path_frames,
        products_frames=a.products_frames,
        seed=a.seed,
        workers=a.workers,
    )
    t0 = time.perf_counter()
    ds = make_combustion_reference(cfg, a.out, command=argv)
    print(f"{ds.summary()}\nwrote {a.out} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    from ase_mlff.recipes.cli import run_recipe

    run_recipe(main)
