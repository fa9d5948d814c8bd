"""GFN2-xTB reference sets for paper 000's pre-training on a large, diverse set, offline:

* ``--set diverse``: the 419 small CHNO molecules of the shipped SMILES list, each
  relaxed and sampled by normal modes at 300/1000/2000 K, a short 1000 K MD and stretched
  bonds (:mod:`ase_mlff.reference.diverse`); the pre-training set of ``organic-painn``;
* ``--set md17``: the eight MD17 molecules in MD17 atom order, Langevin MD at 500 K
  (:mod:`ase_mlff.reference.md17`); unseen classes for the pre-trained model and the
  latent analysis.

Jobs run as Ray tasks (local, or the cluster at RAY_ADDRESS), resumable: run the same
command again after an interruption and the finished jobs are reused.

    python -m ase_mlff.recipes.make_diverse_reference --set diverse \\
        --out ase_mlff/data/shipped/organic_gfn2.npz --workers 2
    python -m ase_mlff.recipes.make_diverse_reference --set md17 \\
        --out ase_mlff/data/shipped/md17_gfn2_500K.npz --workers 2
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ase_mlff.reference.diverse import SMILES_FILE, DiverseConfig, make_diverse_reference


def _parser() -> argparse.ArgumentParser:
    d = DiverseConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--set", choices=("diverse", "md17"), default="diverse")
    p.add_argument("--out", type=Path, default=None, help="npz to write")
    p.add_argument("--workers", type=int, default=d.workers, help="jobs at once")
    p.add_argument("--seed", type=int, default=d.seed)
    g = p.add_argument_group("diverse set")
    g.add_argument("--smiles", type=Path, default=SMILES_FILE, help="SMILES list (format: "
                   "SMILES<TAB>tag<TAB>name)")
    g.add_argument("--max-molecules", type=int, default=None, help="the first N of the list")
    g.add_argument("--molecules-per-job", type=int, default=d.molecules_per_job)
    g.add_argument("--nms-frames", type=int, default=d.nms_frames, help="per temperature")
    g.add_argument("--md-frames", type=int, default=d.md_frames)
    g.add_argument("--stretch-frames", type=int, default=d.stretch_frames)
    m = p.add_argument_group("md17 set")
    m.add_argument("--frames", type=int, default=1000, help="frames per molecule")
    m.add_argument("--molecules", nargs="+", default=None, help="a subset of the eight")
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    a = _parser().parse_args(argv)
    other = (
        ("--frames", "--molecules")
        if a.set == "diverse"
        else ("--smiles", "--max-molecules", "--molecules-per-job", "--nms-frames",
              "--md-frames", "--stretch-frames")
    )
    ignored = [f for f in other if any(x == f or x.startswith(f + "=") for x in argv)]
    if ignored:
        raise ValueError(f"{', '.join(ignored)} would be ignored: not options of --set {a.set}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    if a.set == "diverse":
        cfg = DiverseConfig(
            smiles_file=str(Path(a.smiles).absolute()),
            max_molecules=a.max_molecules,
            molecules_per_job=a.molecules_per_job,
            nms_frames=a.nms_frames,
            md_frames=a.md_frames,
            stretch_frames=a.stretch_frames,
            seed=a.seed,
            workers=a.workers,
        )
        out = a.out or Path("reference") / "organic_gfn2.npz"
        ds = make_diverse_reference(cfg, out, command=argv)
    else:
        from ase_mlff.reference.md17 import MD17_MOLECULES, MD17SetConfig, make_md17_reference

        cfg = MD17SetConfig(
            molecules=tuple(a.molecules or MD17_MOLECULES),
            frames_per_trajectory=a.frames,
            seed=a.seed,
            workers=a.workers,
        )
        out = a.out or Path("reference") / "md17_gfn2_500K.npz"
        ds = make_md17_reference(cfg, out, command=argv)
    print(f"{ds.summary()}\nwrote {out} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    from ase_mlff.recipes.cli import run_recipe

    run_recipe(main)
