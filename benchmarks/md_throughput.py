"""Aggregate MD throughput of the batched engine against ASE stepping one system at a time.

For R aspirin replicas it times, side by side in one run:

- batched MD: ``langevin_baoab_step`` on all R replicas (graph rebuilt every step) with the
  default detectors every ``--check-every`` steps; aggregate steps/s = R · steps / time;
- pure model: one forward + autograd-forces call of the same model on the same R-replica
  batch (graph prebuilt): the ceiling of any MD engine for this model;
- ASE: ``ase.md.langevin.Langevin`` stepping one aspirin through ``MLFFCalculator``
  (aggregate for R systems one after another is the same steps/s).

It prints achieved/ASE, achieved/pure and the overhead of integrator + graph + detectors
as a fraction of the step, and the peak resident memory after the largest R.

    python benchmarks/md_throughput.py                       # R = 1, 8, 64, 256
    python benchmarks/md_throughput.py --device cuda --replicas 64 256 1024
"""

from __future__ import annotations

import argparse
import resource
import time

import ase.io
import numpy as np
import torch
from ase import units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from ase_mlff.calculators import MLFFCalculator
from ase_mlff.calculators.mlff import shipped_models
from ase_mlff.data.io import SHIPPED_DIR
from ase_mlff.md import default_detectors, init_state, langevin_baoab_step
from ase_mlff.models import PaiNN, compute_properties
from ase_mlff.utils import DTYPES


def _model(name: str, dtype: torch.dtype, device: str):
    if name in shipped_models():
        calc = MLFFCalculator(name, device=device, dtype=dtype)
        return calc.model, name
    torch.manual_seed(0)
    m = PaiNN(species=[1, 6, 8]).to(device=device, dtype=dtype).eval()
    return m, "PaiNN (random init, 64 features)"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_batched(model, atoms, r: int, steps: int, check_every: int, device: str, dtype):
    state = init_state(
        model,
        [atoms.copy() for _ in range(r)],
        temperature_K=500,
        seed=0,
        dtype=dtype,
        device=device,
    )
    dets = default_detectors([atoms] * r, state)
    for _ in range(3):  # warm-up
        state = langevin_baoab_step(state, model, dt=0.5, temperature_K=500)
    _sync(device)
    t0 = time.perf_counter()
    for k in range(steps):
        state = langevin_baoab_step(state, model, dt=0.5, temperature_K=500)
        if (k + 1) % check_every == 0:
            for d in dets:
                d(state)
    _sync(device)
    step_s = (time.perf_counter() - t0) / steps
    # pure model evaluation on the same batch (graph prebuilt)
    batch = state.batch
    for _ in range(2):
        compute_properties(model, batch)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        compute_properties(model, batch)
    _sync(device)
    eval_s = (time.perf_counter() - t0) / steps
    return step_s, eval_s


def time_ase(model, atoms, steps: int, device: str, dtype) -> float:
    a = atoms.copy()
    a.calc = MLFFCalculator(model, device=device, dtype=dtype)
    MaxwellBoltzmannDistribution(a, temperature_K=500, rng=np.random.default_rng(0))
    dyn = Langevin(
        a,
        0.5 * units.fs,
        temperature_K=500,
        friction=0.01 / units.fs,
        rng=np.random.default_rng(1),
        fixcm=False,
    )
    dyn.run(3)
    t0 = time.perf_counter()
    dyn.run(steps)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="aspirin-painn", help="shipped name or checkpoint")
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 8, 64, 256])
    p.add_argument("--steps", type=int, default=20, help="timed MD steps per R")
    p.add_argument("--ase-steps", type=int, default=50)
    p.add_argument("--check-every", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    atoms = ase.io.read(SHIPPED_DIR / "aspirin_md17_order.xyz")
    model, label = _model(args.model, dtype, args.device)
    ase_s = time_ase(model, atoms, args.ase_steps, args.device, dtype)
    print(
        f"model: {label}; {args.dtype}; device {args.device}; {args.threads} threads; "
        f"torch {torch.__version__}"
    )
    print(
        f"ASE Langevin + MLFFCalculator, one aspirin: {ase_s * 1e3:.2f} ms/step = "
        f"{1 / ase_s:.0f} steps/s\n"
    )
    print(
        "| R | ms/step | aggregate steps/s | pure model steps/s | vs ASE | vs pure model "
        "| overhead |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in args.replicas:
        step_s, eval_s = time_batched(
            model, atoms, r, args.steps, args.check_every, args.device, dtype
        )
        agg, pure = r / step_s, r / eval_s
        print(
            f"| {r} | {step_s * 1e3:.1f} | {agg:.0f} | {pure:.0f} | {agg * ase_s:.1f}x | "
            f"{agg / pure:.2f} | {100 * (step_s - eval_s) / step_s:.0f} % |"
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\npeak resident memory of the process (after R = {max(args.replicas)}): {peak_mb:.0f} MB"
    )


if __name__ == "__main__":
    from ase_mlff import keep_freed_memory

    keep_freed_memory()  # as the recipes: the figures are measured with it
    main()
