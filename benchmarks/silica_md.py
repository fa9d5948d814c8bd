"""MD step time of the eam_pretraining recipe's models on silica (paper 004 protocol).

``--starts`` (24) test structures of the shipped silica set plus the five relaxed
polymorphs (the quick profile's NVT batch has the four with a reference MD), 2,000 K,
2 fs, NVT Langevin and NPT Berendsen, with paper 004's detectors; PaiNN 32×2 (cutoff
5 Å), the EAM and their hybrid, freshly initialised (the step time does not depend on
the weights). Prints ms per step for float32 and float64 after ``--warmup`` steps, and
the 1-min load average: compare on an idle machine.

    python benchmarks/silica_md.py
    python benchmarks/silica_md.py --steps 20 --starts 8
"""

from __future__ import annotations

import argparse
import os
import time
from functools import partial

import torch

from ase_mlff.agents.eam_pretraining import MD_PROTOCOLS, relaxed_polymorphs
from ase_mlff.data.splits import split_silica
from ase_mlff.md.detectors import materials_detectors
from ase_mlff.md.runner import run_md
from ase_mlff.models import EAM, HybridPotential, build_model
from ase_mlff.recipes.eam_pretraining import PROFILES


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--starts", type=int, default=24)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    a = p.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}; torch threads {torch.get_num_threads()}")
    _, _, test, _ = split_silica("silica", 0.1, 30, None, 0)
    images = [test.to_atoms(i, with_labels=False) for i in range(a.starts)] + relaxed_polymorphs()
    n_atoms = sum(len(x) for x in images)
    torch.manual_seed(0)
    prof = PROFILES["quick"]
    painn = build_model({**prof["model"], "species": [8, 14]})
    eam = EAM(species=[8, 14], cutoff=prof["eam"]["cutoff"])
    models = {"painn": painn, "eam": eam, "hybrid": HybridPotential(painn, eam)}
    print(f"{len(images)} replicas, {n_atoms} atoms")
    print(f"{'model':8s} {'dtype':8s} {'ensemble':8s} {'ms/step':>8s}")
    for name, model in models.items():
        for dtype in (torch.float32, torch.float64):
            m = model.to(dtype)
            for ens in ("NVT", "NPT"):
                kw = dict(
                    seed=0,
                    check_every=10,
                    record_every=10,
                    detectors=None,
                    detector_factory=partial(materials_detectors, window=1000),
                    dtype=dtype,
                    **MD_PROTOCOLS[ens],
                )
                run_md(m, images, steps=a.warmup, **kw)
                t0 = time.perf_counter()
                run_md(m, images, steps=a.steps, **kw)
                ms = (time.perf_counter() - t0) / a.steps * 1e3
                print(f"{name:8s} {str(dtype)[6:]:8s} {ens:8s} {ms:8.1f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    from ase_mlff import keep_freed_memory

    keep_freed_memory()  # as the recipes: the figures are measured with it
    main()
