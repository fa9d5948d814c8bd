"""MD speed of every shipped model: the table of docs/models.md (accuracy beside speed).

For each shipped model (``ase_mlff.calculators.mlff.shipped_models``), in one run:

- **ASE MD**: ``ase.md.langevin.Langevin`` (500 K, 0.5 fs) on one aspirin through
  ``MLFFCalculator(dtype="float32", skin=1.0)``, eager and ``compile=True`` (compiled,
  or loaded from the cache, before timing), on ``--ase-threads`` threads (default 1);
- **batched MD**: ``run_md`` on R aspirin replicas (default 64), Langevin 500 K, 0.5 fs,
  default detectors and recording on, 1 Å skin, eager and compiled, on ``--threads``
  threads (default 2): aggregate replica-steps per second;

and the model's held-out force MAE from its ``model.json``.

    python benchmarks/shipped_models.py
    python benchmarks/shipped_models.py --device cuda --replicas 256
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import ase.io
import numpy as np
import torch
from ase import units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from ase_mlff.calculators import MLFFCalculator
from ase_mlff.calculators.mlff import resolve_model_path, shipped_models
from ase_mlff.data.io import SHIPPED_DIR
from ase_mlff.md.runner import run_md


def ase_steps_per_s(name: str, atoms, compiled: bool, device: str, steps: int) -> float:
    a = atoms.copy()
    a.calc = MLFFCalculator(name, device=device, dtype="float32", skin=1.0, compile=compiled)
    MaxwellBoltzmannDistribution(a, temperature_K=500, rng=np.random.default_rng(0))
    dyn = Langevin(
        a, 0.5 * units.fs, temperature_K=500, friction=0.01 / units.fs, rng=np.random.default_rng(1)
    )
    dyn.run(20)  # compiles (or loads) here when compiled
    t0 = time.perf_counter()
    dyn.run(steps)
    return steps / (time.perf_counter() - t0)


def batched_steps_per_s(name: str, atoms, r: int, device: str, steps: int, compiled: bool) -> float:
    model = MLFFCalculator(name, device=device, dtype="float32", compile=False).model
    kw = dict(dtype=torch.float32, device=device, skin=1.0, compile=compiled, seed=0)
    for warm in (2, 3):  # compile at two sizes, so that the batch size is symbolic
        run_md(model, [atoms.copy() for _ in range(warm)], steps=10, **kw)
    t0 = time.perf_counter()
    run_md(model, [atoms.copy() for _ in range(r)], steps=steps, **kw)
    return r * steps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--replicas", type=int, default=64)
    p.add_argument("--steps", type=int, default=200, help="batched MD steps")
    p.add_argument("--ase-steps", type=int, default=500)
    p.add_argument("--ase-threads", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    atoms = ase.io.read(SHIPPED_DIR / "aspirin_md17_order.xyz")
    rows = []
    for name in shipped_models():
        meta = json.loads((resolve_model_path(name) / "model.json").read_text())
        mae = meta.get("test_metrics", {}).get("forces_mae", float("nan")) * 1e3
        torch.set_num_threads(args.ase_threads)
        eager = ase_steps_per_s(name, atoms, False, args.device, args.ase_steps)
        compiled = ase_steps_per_s(name, atoms, True, args.device, args.ase_steps)
        torch.set_num_threads(args.threads)
        batched = [
            batched_steps_per_s(name, atoms, args.replicas, args.device, args.steps, c)
            for c in (False, True)
        ]
        rows.append((name, mae, eager, compiled, *batched))
    print(
        f"aspirin, float32, 1 Å skin, device {args.device}; ASE MD on {args.ase_threads} "
        f"thread(s), batched MD (R = {args.replicas}, detectors and recording on) on "
        f"{args.threads}; torch {torch.__version__}\n"
    )
    print(
        "| model | test force MAE (meV/Å) | ASE MD steps/s, eager | ASE MD steps/s, compiled "
        "| batched MD replica-steps/s, eager | batched MD replica-steps/s, compiled |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, mae, eager, compiled, b_eager, b_compiled in rows:
        print(
            f"| `{name}` | {mae:.1f} | {eager:.0f} | {compiled:.0f} | {b_eager:.0f} "
            f"| {b_compiled:.0f} |"
        )


if __name__ == "__main__":
    from ase_mlff import keep_freed_memory

    keep_freed_memory()  # as the recipes: the figures are measured with it
    main()
