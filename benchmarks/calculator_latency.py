"""Latency of one aspirin energy + forces call through the ASE calculators.

Every call moves the atoms to fresh positions (the relaxed aspirin structure plus a new
Gaussian displacement of ``--displacement`` Å), so no calculator can answer from a cache;
a call is ``atoms.get_forces()`` followed by ``atoms.get_potential_energy()``, i.e. what
one MD step asks for. Timed per call: everything the calculator does (for
``MLFFCalculator``: checks, batch and neighbour list, forward, autograd forces, copies
back to numpy).

Rows, for each model: ``MLFFCalculator`` in float32, float32 with a 1 Å Verlet skin (the
batch and graph kept between calls), the same compiled (``compile=True``: compiled, or
loaded from the inductor cache, before timing) and float64; and the GFN2-xTB reference
(tblite) the models are trained on, with each row's speed relative to it. Models: those
named by ``--model`` (shipped name or checkpoint directory, repeatable), by default the
two shipped aspirin PaiNNs (``aspirin-painn``, ``aspirin-painn-fast``) and a randomly
initialised SchNet at the size of ``training_throughput.py`` (weights do not change the
cost).

    python benchmarks/calculator_latency.py
    python benchmarks/calculator_latency.py --threads 1        # the issue-19 bar
    python benchmarks/calculator_latency.py --model runs/painn/best --calls 500
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator

import ase_mlff
from ase_mlff.calculators import MLFFCalculator
from ase_mlff.models import CheckpointError, PaiNN, SchNet

ASPIRIN_XYZ = Path(ase_mlff.__file__).parent / "data" / "shipped" / "aspirin_md17_order.xyz"
ARCHS = {"painn": "PaiNN", "schnet": "SchNet"}


def call_latency(
    atoms: Atoms,
    calc: Calculator,
    n_calls: int,
    n_warmup: int,
    displacement: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Seconds per energy + forces call, each at freshly displaced positions."""
    atoms = atoms.copy()
    base = atoms.positions.copy()
    atoms.calc = calc
    noise = rng.normal(0.0, displacement, size=(n_warmup + n_calls, *base.shape))
    times = np.empty(n_calls)
    for k, d in enumerate(noise):
        atoms.positions = base + d
        t0 = time.perf_counter()
        atoms.get_forces()
        atoms.get_potential_energy()
        if k >= n_warmup:
            times[k - n_warmup] = time.perf_counter() - t0
    return times


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        action="append",
        default=None,
        help="shipped model name or checkpoint dir, repeatable (default: aspirin-painn; "
        "random init where it does not exist)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default: 2)")
    p.add_argument("--calls", type=int, default=200, help="timed calls per row (default: 200)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls first (default: 10)")
    p.add_argument("--displacement", type=float, default=0.01, help="Å, per call (default: 0.01)")
    p.add_argument("--no-xtb", action="store_true", help="skip the GFN2-xTB reference row")
    p.add_argument("--no-compile", action="store_true", help="skip the compiled rows")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    atoms = ase.io.read(ASPIRIN_XYZ)
    names = args.model or ["aspirin-painn", "aspirin-painn-fast"]
    sources: list[tuple[str, object]] = []
    for name in names:
        try:
            MLFFCalculator(name, compile=False)
            sources.append((name, name))
        except (CheckpointError, FileNotFoundError):
            continue
    if not args.model:  # the other architecture, at the size of training_throughput.py
        sources.append(
            ("SchNet (random init)", SchNet(hidden=64, n_filters=64, n_interactions=3, cutoff=5.0))
        )
    if not sources:
        sources.append(("PaiNN (random init)", PaiNN(hidden=64, n_interactions=3, cutoff=5.0)))

    rows: list[tuple[str, str, np.ndarray]] = []
    variants = [("float32", 0.0, False), ("float32", 1.0, False), ("float64", 0.0, False)]
    if not args.no_compile:
        variants.insert(2, ("float32", 1.0, True))
    for label, source in sources:
        for dtype, skin, compiled in variants:
            calc = MLFFCalculator(
                source, device=args.device, dtype=dtype, skin=skin, compile=compiled
            )
            if compiled:  # compile (or load from the cache) before timing
                call_latency(atoms, calc, 3, 0, args.displacement, rng)
                if not calc.potential.compiled:
                    print(f"compilation failed: {calc.potential.fallback_reason}")
            name = (
                label + (f", skin {skin:g} Å" if skin else "") + (", compiled" if compiled else "")
            )
            rows.append(
                (
                    name,
                    dtype,
                    call_latency(atoms, calc, args.calls, args.warmup, args.displacement, rng),
                )
            )
    if not args.no_xtb:
        from tblite.ase import TBLite

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            calc = TBLite(method="GFN2-xTB", verbosity=0)
            rows.append(
                (
                    "GFN2-xTB (tblite)",
                    "float64",
                    call_latency(atoms, calc, args.calls, args.warmup, args.displacement, rng),
                )
            )

    print(
        f"aspirin ({len(atoms)} atoms), energy + forces per call, fresh positions each call "
        f"(σ = {args.displacement} Å); device {args.device}, {args.threads} threads; "
        f"median and p90 of {args.calls} calls after {args.warmup} warm-up; "
        f"torch {torch.__version__}; 1-min load average at the end {os.getloadavg()[0]:.2f}"
    )
    print()
    xtb = next((np.median(t) for name, _, t in rows if name.startswith("GFN2")), None)
    print("| calculator | dtype | median ms | p90 ms | calls/s | xTB time / this |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, dtype, t in rows:
        med, p90 = np.median(t) * 1e3, np.percentile(t, 90) * 1e3
        ratio = f"{xtb / np.median(t):.1f}" if xtb else "–"
        print(f"| {name} | {dtype} | {med:.2f} | {p90:.2f} | {1e3 / med:.0f} | {ratio} |")


if __name__ == "__main__":
    from ase_mlff import keep_freed_memory

    keep_freed_memory()  # as the recipes: the figures are measured with it
    main()
