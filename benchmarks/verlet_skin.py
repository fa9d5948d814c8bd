"""Batched MD with a Verlet-skin neighbour list against rebuilding the graph every step.

For each system it runs the same Langevin MD with ``run_md(skin=0)`` and
``run_md(skin=S)``, side by side in one process, and prints steps/s of both, their ratio,
how many graphs each built, and the largest position difference at the end (the two
follow the same trajectory up to rounding):

- aspirin, R replicas, the shipped PaiNN (cutoff 5 Å), 500 K, 0.5 fs;
- water, 192-atom periodic box, R replicas, a PaiNN of the shipped width (random
  weights, cutoff 5 Å; the graph's cost does not depend on the weights), 300 K, 0.5 fs;
- copper, a 4×4×4 fcc cell (256 atoms), R replicas, the EAM (cutoff 5 Å), 600 K, 2 fs.

    python benchmarks/verlet_skin.py                  # 200 steps, skin 1 Å, 2 threads
    python benchmarks/verlet_skin.py --device cuda --steps 500
"""

from __future__ import annotations

import argparse
import time
from unittest import mock

import numpy as np
import torch
from ase.build import bulk

import ase_mlff.graph.batch as batch_module
from ase_mlff.data import load_dataset
from ase_mlff.md.runner import run_md
from ase_mlff.models import EAM, PaiNN
from ase_mlff.models.io import load_model


def _cases(device: str):
    from ase_mlff.calculators.mlff import resolve_model_path

    aspirin, _ = load_model(resolve_model_path("aspirin-painn"), device=device, dtype=torch.float32)
    water = load_dataset("water")
    torch.manual_seed(0)
    w_model = PaiNN(species=[1, 8], cutoff=5.0, hidden=64, n_interactions=3)
    w_model = w_model.to(device=device, dtype=torch.float32)
    cu = EAM(species=[29], cutoff=5.0).to(device=device, dtype=torch.float32)
    asp = load_dataset("aspirin").to_atoms(0, with_labels=False)
    cells = []
    for k in range(4):
        a = bulk("Cu", "fcc", 3.06, cubic=True) * (4, 4, 4)
        a.rattle(0.02, seed=k)
        cells.append(a)
    return [
        ("aspirin ×64 (21 atoms), PaiNN", aspirin, [asp.copy() for _ in range(64)], 500.0, 0.5),
        (
            "water ×4 (192 atoms), PaiNN",
            w_model,
            [water.to_atoms(k * 50) for k in range(4)],
            300.0,
            0.5,
        ),
        ("copper ×4 (256 atoms), EAM", cu, cells, 600.0, 2.0),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--skin", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"{a.steps} steps, skin {a.skin} Å, {a.threads} threads, {a.device}")
    print(
        "| system | replica-steps/s, rebuilt every step | replica-steps/s, skin | ratio "
        "| graphs built | max |Δx| (Å) |"
    )
    print("|---|---:|---:|---:|---|---:|")
    for name, model, images, temp, dt in _cases(a.device):
        kw = dict(
            steps=a.steps,
            integrator="langevin",
            temperature_K=temp,
            dt=dt,
            detectors=[],
            seed=1,
            record_every=a.steps,
            dtype=torch.float32,
            device=a.device,
        )
        run_md(model, images, **{**kw, "steps": 5})  # warm-up
        rates, builds, runs = [], [], []
        for skin in (0.0, a.skin):
            with mock.patch.object(batch_module, "_graph", wraps=batch_module._graph) as built:
                t0 = time.perf_counter()
                runs.append(run_md(model, images, skin=skin, **kw))
                rates.append(len(images) * a.steps / (time.perf_counter() - t0))
            builds.append(built.call_count)
        dx = max(
            float(np.abs(r0.positions_tn3[-1] - r1.positions_tn3[-1]).max())
            for r0, r1 in zip(runs[0].replicas, runs[1].replicas)
        )
        print(
            f"| {name} | {rates[0]:.0f} | {rates[1]:.0f} | {rates[1] / rates[0]:.2f}× | "
            f"{builds[0]} → {builds[1]} | {dx:.1e} |"
        )


if __name__ == "__main__":
    main()
