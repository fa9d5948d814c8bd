"""Reference data for a material: periodic silica (SiO2) labelled with GFN1-xTB (tblite).

    python -m ase_mlff.recipes.make_silica_reference \
        --out ase_mlff/data/shipped/silica_gfn1.npz --workers 2

Energies, forces *and stress* of 24-48-atom periodic cells, sampled the way the GAP-22
silica set of paper 004 is (crystalline, distorted, liquid and melt-quenched silica), from
five polymorphs (:mod:`ase_mlff.data.silica`):

1. ``relax``: each polymorph relaxed with GFN1-xTB (FIRE on positions and cell through
   :class:`ase.filters.FrechetCellFilter`, fmax 0.05 eV/Å), every ``--relax-stride``-th
   step kept;
2. ``strained``: ``--strained`` copies of each relaxed cell with a random symmetric strain
   (normal ≤ 5 %, shear ≤ 3 %) and Gaussian rattling σ ~ U(0.01, 0.06) Å;
3. ``md_2000K``: NVT Langevin MD at 2,000 K, 2 fs (paper 004's silica MD protocol), from
   the relaxed quartz, α- and β-cristobalite and β-tridymite cells: ``--md-equilibration``
   steps, then a frame every ``--md-stride`` steps; these runs are also the reference
   ensemble for RDFs;
4. ``melt_quench``: the relaxed β-cristobalite cell melted at ``--melt-temperature`` K,
   then quenched linearly to 300 K (fixed volume), a frame every ``--md-stride`` steps.

Every job is a Ray task (one OpenMP thread, ``--workers`` at once) and writes its frames
to ``<out>.parts/<job>.tmp.xyz``, renamed to ``<job>.xyz`` when the job has finished, so
a rerun skips finished jobs and keeps their frames. Frames where the SCC does not
converge are skipped.

Split: frames are grouped in blocks of ``--block`` consecutive frames of one job (so MD
frames a few fs apart never straddle train and test); ``--test-blocks`` blocks drawn at
random are the test set. They are numbered first: ``traj_id`` 0 … test_blocks−1, the
shipped split ``SHIPPED_SPLITS["silica"]``.

GFN1-xTB, not DFT: it puts quartz at 2.29 g/cm³ (experiment 2.65; GFN2-xTB 2.57 but five
times slower here), so the cells are relaxed with it first and every sample is drawn
around its own minimum. The method and versions are in ``<out>.provenance.json``. The
library code is :mod:`ase_mlff.reference.silica`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

from ase_mlff.reference.silica import SHIPPED_FILE, SilicaConfig, make_silica_reference


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    d = SilicaConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("reference") / SHIPPED_FILE.name)
    p.add_argument("--workers", type=int, default=2)
    for f, v in asdict(d).items():
        if f != "method":
            p.add_argument("--" + f.replace("_", "-"), type=type(v), default=v)
    p.add_argument("--method", default=d.method, choices=["GFN1-xTB", "GFN2-xTB"])
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = SilicaConfig(**{f: getattr(a, f) for f in asdict(d)})
    t0 = time.perf_counter()
    ds = make_silica_reference(cfg, a.out, a.workers, command=argv)
    print(f"{ds.summary()}\nwrote {a.out} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    from ase_mlff.recipes.cli import run_recipe

    run_recipe(main)
