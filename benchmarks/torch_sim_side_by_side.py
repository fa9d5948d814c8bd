"""Batched NVT Langevin MD of R aspirin replicas: ``run_md`` against torch-sim, same model.

torch-sim (PyPI ``torch-sim-atomistic``) is the batched-MD peer. Its model here is the
*same* PaiNN (shipped ``aspirin-painn`` unless ``--model``), wrapped as a torch-sim
``ModelInterface`` whose forward builds this project's neighbour graph and takes forces by
autograd (:func:`ase_mlff.models.compute_properties`), as a torch-sim user would wrap it.
Both run BAOAB Langevin at 500 K, dt = 0.5 fs, friction 0.01 fs⁻¹, float32, from the same
start structures, and each timed call is a whole run as a user makes it:

- **torch-sim**: ``torch_sim.integrate(atoms_list, model, integrator=nvt_langevin, ...)``
  (state set-up, no trajectory reporter);
- **ours**: ``run_md(model, images, steps=...)`` with everything on: the default
  detectors (bond graph, overlap, temperature, forces, energy, every 10 steps) and the
  recording of frames every 20 steps, without and with a 1 Å Verlet skin, and with
  ``compile=True`` and the skin.

Rows are interleaved (one run of each per round, same R and steps), so a background job
slows them all alike. From the 40- and 200-step runs of one variant: the per-step cost
(T200 − T40)/160 and the start-up, T40 − 40 × per-step, in steps. Memory: each variant
and R run alone in a fresh process for 40 steps, its peak resident memory above its level
after loading (``ase_mlff.md.batching.PeakMemory``, sampled every 1 ms; on CUDA the peak
allocated device memory). In one process the allocator keeps what an earlier run freed,
so later runs would look free.

torch-sim 0.3.0 is the newest release installable for Python 3.11 here; it needs
``pip install torch-sim-atomistic==0.3.0 vesin vesin-torch h5py tables numexpr``
(``--no-deps`` keeps the torch build).

    python benchmarks/torch_sim_side_by_side.py                      # R = 8, 64, 256
    python benchmarks/torch_sim_side_by_side.py --replicas 64 --steps 40 200
    python benchmarks/torch_sim_side_by_side.py --device cuda --replicas 64 256 1024
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import ase.io
import numpy as np
import torch
from ase import units

from ase_mlff.calculators import MLFFCalculator
from ase_mlff.data.io import SHIPPED_DIR
from ase_mlff.graph import Batch
from ase_mlff.md.batching import PeakMemory
from ase_mlff.md.runner import run_md
from ase_mlff.models import compute_properties
from ase_mlff.utils import DTYPES

TEMPERATURE_K = 500.0
DT_FS = 0.5
FRICTION_PER_FS = 0.01


def torch_sim_model(model: torch.nn.Module, device: str, dtype: torch.dtype):
    """The potential as a torch-sim ``ModelInterface`` (energy and forces)."""
    from torch_sim.models.interface import ModelInterface

    class Wrapped(ModelInterface):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self._device, self._dtype = torch.device(device), dtype
            self._compute_forces, self._compute_stress = True, False
            self._memory_scales_with = "n_atoms_x_density"

        def forward(self, state, **kwargs) -> dict[str, torch.Tensor]:
            n_atoms = torch.bincount(state.system_idx, minlength=state.n_systems)
            pbc = bool(torch.as_tensor(state.pbc).any())
            batch = Batch.from_arrays(
                state.atomic_numbers,
                state.positions,
                n_atoms,
                state.cell.transpose(1, 2),  # torch-sim's cell holds the vectors as columns
                np.full((state.n_systems, 3), pbc),
                cutoff=self.model.cutoff,
                dtype=self._dtype,
                device=self._device,
            )
            out = compute_properties(self.model, batch, forces=True)
            return {"energy": out["energy"].to(self._dtype), "forces": out["forces"]}

    return Wrapped()


def run_torch_sim(ts_model, images, steps: int, device: str) -> None:
    import torch_sim as ts

    ts.integrate(
        system=images,
        model=ts_model,
        integrator=ts.nvt_langevin,
        n_steps=steps,
        temperature=TEMPERATURE_K,
        timestep=DT_FS * 1e-3,  # ps (torch-sim's metal units)
        gamma=FRICTION_PER_FS / units.fs,  # 1/(ASE time unit), the unit torch-sim uses
        seed=0,
    )


def ase_step_seconds(model, atoms, device: str, dtype, steps: int = 100) -> float:
    """Seconds per step of ASE's Langevin driving one aspirin through the eager
    ``MLFFCalculator`` (no skin, no compile): the loop R replicas would take one by one."""
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    a = atoms.copy()
    a.calc = MLFFCalculator(model, device=device, dtype=dtype, compile=False)
    MaxwellBoltzmannDistribution(a, temperature_K=TEMPERATURE_K, rng=np.random.default_rng(0))
    dyn = Langevin(
        a,
        DT_FS * units.fs,
        temperature_K=TEMPERATURE_K,
        friction=FRICTION_PER_FS / units.fs,
        rng=np.random.default_rng(1),
    )
    dyn.run(5)
    t0 = time.perf_counter()
    dyn.run(steps)
    return (time.perf_counter() - t0) / steps


def run_ours(model, images, steps: int, device: str, dtype, **options) -> None:
    run_md(
        model,
        images,
        steps=steps,
        dt=DT_FS,
        temperature_K=TEMPERATURE_K,
        friction=FRICTION_PER_FS,
        integrator="langevin",
        dtype=dtype,
        device=device,
        seed=0,
        **options,
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="aspirin-painn", help="shipped name or checkpoint")
    p.add_argument("--replicas", type=int, nargs="+", default=[8, 64, 256])
    p.add_argument("--steps", type=int, nargs=2, default=[40, 200], metavar=("SHORT", "LONG"))
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds (median)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--no-compile", action="store_true", help="skip the compiled variant")
    p.add_argument("--no-timing", action="store_true", help="only the memory column")
    p.add_argument("--child", nargs=2, metavar=("VARIANT", "R"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    warnings.filterwarnings("ignore")
    model = MLFFCalculator(args.model, device=args.device, dtype=dtype, compile=False).model
    atoms = ase.io.read(SHIPPED_DIR / "aspirin_md17_order.xyz")
    ts_model = torch_sim_model(model, args.device, dtype)
    variants = {
        "torch-sim": lambda imgs, n: run_torch_sim(ts_model, imgs, n, args.device),
        "ours": lambda imgs, n: run_ours(model, imgs, n, args.device, dtype),
        "ours, skin 1 Å": lambda imgs, n: run_ours(model, imgs, n, args.device, dtype, skin=1.0),
    }
    if not args.no_compile:
        variants["ours, skin 1 Å, compiled"] = lambda imgs, n: run_ours(
            model, imgs, n, args.device, dtype, skin=1.0, compile=True
        )
    short, long = args.steps
    if args.child:  # one variant in a fresh process: its peak memory above the baseline
        name, r = args.child[0], int(args.child[1])
        if "compiled" in name:  # compiled (or loaded from the cache) before the baseline
            variants[name]([atoms.copy() for _ in range(2)], 10)
        images = [atoms.copy() for _ in range(r)]
        with PeakMemory(args.device) as m:
            variants[name](images, short)
        print(json.dumps({"mb": m.bytes / 2**20}))
        return
    mem = _memory(args, variants)
    rows = []
    ase_s = float("nan")
    if not args.no_timing:
        if "ours, skin 1 Å, compiled" in variants:
            # compiled once, untimed, at two batch sizes so that the sizes are dynamic (the
            # inductor cache keeps the code for later processes too)
            for r in (2, 3):
                variants["ours, skin 1 Å, compiled"]([atoms.copy() for _ in range(r)], 10)
        ase_s = ase_step_seconds(model, atoms, args.device, dtype)
    for r in args.replicas:
        times = {(v, n): [] for v in variants for n in (short, long)}
        for _ in range(args.rounds if not args.no_timing else 0):
            for n in (short, long):
                for name, fn in variants.items():
                    images = [atoms.copy() for _ in range(r)]
                    t0 = time.perf_counter()
                    fn(images, n)
                    if args.device.startswith("cuda"):
                        torch.cuda.synchronize()
                    times[name, n].append(time.perf_counter() - t0)
        for name in variants:
            if args.no_timing:
                rows.append((r, name, *(float("nan"),) * 4, mem[name, r]))
                continue
            t_s, t_l = np.median(times[name, short]), np.median(times[name, long])
            per_step = (t_l - t_s) / (long - short)
            rows.append((r, name, t_s, t_l, per_step, t_s / per_step - short, mem[name, r]))
    print(
        f"model {args.model}, {args.dtype}, device {args.device}, {args.threads} threads, "
        f"torch {torch.__version__}; Langevin {TEMPERATURE_K:g} K, dt {DT_FS} fs; median of "
        f"{args.rounds} interleaved round(s); 1-min load average at the end "
        f"{os.getloadavg()[0]:.2f}"
    )
    print(
        f"ASE Langevin + eager MLFFCalculator, one aspirin: {ase_s * 1e3:.2f} ms/step; "
        "'vs ASE loop' = R x that / ms per batched step; peak memory: each variant alone "
        f"in a fresh process, {short} steps, above its level after loading\n"
    )
    print(
        f"| R | run | {short} steps (s) | {long} steps (s) | ms/step | start-up (steps) "
        f"| vs torch-sim, {short} | vs torch-sim, {long} | vs ASE loop | peak memory (MB) |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    ref = {r: (ts_, tl) for r, name, ts_, tl, *_ in rows if name == "torch-sim"}
    for r, name, t_s, t_l, per_step, startup, mb in rows:
        print(
            f"| {r} | {name} | {t_s:.2f} | {t_l:.2f} | {per_step * 1e3:.1f} | {startup:.1f} | "
            f"{ref[r][0] / t_s:.2f}x | {ref[r][1] / t_l:.2f}x | {r * ase_s / per_step:.1f}x "
            f"| {mb:.0f} |"
        )


def _memory(args, variants) -> dict[tuple[str, int], float]:
    """Peak memory of each variant and R, each run alone in a fresh process (in one
    process the allocator keeps what an earlier run freed, and later runs look free)."""
    out = {}
    for r in args.replicas:
        for name in variants:
            cmd = [sys.executable, __file__, "--child", name, str(r), "--model", args.model]
            cmd += ["--threads", str(args.threads), "--device", args.device]
            cmd += ["--dtype", args.dtype, "--steps", *map(str, args.steps)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            out[name, r] = json.loads(res.stdout.strip().splitlines()[-1])["mb"]
    return out


if __name__ == "__main__":
    from ase_mlff import keep_freed_memory

    keep_freed_memory()  # as the recipes: the figures are measured with it
    main()
