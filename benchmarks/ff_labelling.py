"""Label rattled aspirin with GAFF-2.11: the batched torch potential vs OpenMM frame by frame.

Frames: the GAFF-relaxed aspirin (``ase_mlff.forcefields.gaff.relaxed_geometry``, MD17
atom order) plus Gaussian displacements (σ = ``--sigma`` Å, ``--seed``), ``--frames`` of
them (default 100,000). Energy and forces of every frame in float64 by

(a) ``ClassicalPotential`` (``ase_mlff.forcefields.gaff.gaff_potential``): chunks of
    ``--chunk`` frames, each a ``Batch.from_arrays`` + ``compute_properties`` (forward,
    autograd forces, detach), results copied into numpy arrays; for each ``--threads``
    (``torch.set_num_threads``); optionally also with ``torch.compile`` of
    ``energy_terms`` (``--compile``; its one-off compile time is printed, not counted);
(b) OpenMM, frame by frame through one Context (``openmm_energies_forces``: set
    positions, getState(energy, forces), unit conversion) on the Reference platform
    (double precision) and the CPU platform (mixed precision; ``Threads`` property),
    timed on the first ``--openmm-frames`` frames and extrapolated to ``--frames``.

Timing is round-robin (one repeat of every row per round, ``--repeats`` rounds), so a
background job slows all rows alike; the table gives the best round and the median. Both
must agree: the OpenMM Reference labels of the timed frames are compared to the torch
ones. The machine load (1-min load average) before and after is printed.

    python benchmarks/ff_labelling.py
    python benchmarks/ff_labelling.py --frames 20000 --openmm-frames 5000 --threads 1 2
    python benchmarks/ff_labelling.py --compile --json runs/ff_labelling.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ase_mlff.calculators.openmm import make_context, openmm_energies_forces
from ase_mlff.forcefields.gaff import gaff_potential, gaff_system, relaxed_geometry
from ase_mlff.graph.batch import Batch
from ase_mlff.models import ClassicalPotential, compute_properties


def label_torch(
    model: ClassicalPotential, positions_snc: np.ndarray, chunk: int, pad: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Energies (S,) eV and forces (S, N, 3) eV/Å, ``chunk`` frames per batch.

    ``pad`` fills the last chunk up to ``chunk`` frames (a compiled model then sees one
    shape only).
    """
    s_all, n, _ = positions_snc.shape
    numbers = model.topology.numbers
    energy = np.empty(s_all)
    forces = np.empty_like(positions_snc)
    for start in range(0, s_all, chunk):
        p = positions_snc[start : start + chunk]
        m = len(p)
        if pad and m < chunk:
            p = np.concatenate([p, np.repeat(p[-1:], chunk - m, axis=0)])
        s = len(p)
        batch = Batch.from_arrays(
            np.tile(numbers, s), p.reshape(-1, 3), np.full(s, n), cutoff=0.0, dtype=torch.float64
        )
        out = compute_properties(model, batch)
        energy[start : start + m] = out["energy"].numpy()[:m]
        forces[start : start + m] = out["forces"].numpy().reshape(s, n, 3)[:m]
    return energy, forces


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=100_000)
    p.add_argument("--sigma", type=float, default=0.2, help="rattle, Å")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=2000, help="frames per torch batch")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--openmm-frames", type=int, default=10_000)
    p.add_argument("--platforms", nargs="+", default=["Reference", "CPU"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()

    load_before = os.getloadavg()
    relaxed = relaxed_geometry("aspirin")
    rng = np.random.default_rng(args.seed)
    pos = relaxed.positions[None] + args.sigma * rng.normal(size=(args.frames, len(relaxed), 3))
    n_mm = min(args.openmm_frames, args.frames)
    system = gaff_system("aspirin")
    model = gaff_potential("aspirin").double().eval()

    rows: dict[str, dict] = {}
    runners: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {}
    results: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def torch_runner(threads: int, mod: ClassicalPotential, pad: bool):
        def run():
            torch.set_num_threads(threads)
            return label_torch(mod, pos, args.chunk, pad=pad)

        return run

    for t in args.threads:
        name = f"torch ClassicalPotential, eager (chunk {args.chunk})"
        key = f"{name}|{t}"
        runners[key] = torch_runner(t, model, pad=False)
        rows[key] = {"method": name, "threads": t, "frames_timed": args.frames}
    if args.compile:
        compiled = gaff_potential("aspirin").double().eval()
        compiled.energy_terms = torch.compile(compiled.energy_terms, dynamic=False)
        torch.set_num_threads(args.threads[0])
        t0 = time.perf_counter()
        label_torch(compiled, pos[: args.chunk], args.chunk, pad=True)
        compile_s = time.perf_counter() - t0
        for t in args.threads:
            name = f"torch ClassicalPotential, torch.compile (chunk {args.chunk})"
            key = f"{name}|{t}"
            runners[key] = torch_runner(t, compiled, pad=True)
            rows[key] = {
                "method": name,
                "threads": t,
                "frames_timed": args.frames,
                "compile_s": compile_s,
            }

    for plat in args.platforms:
        for t in args.threads if plat == "CPU" else [1]:
            props = {"Threads": str(t)} if plat == "CPU" else None
            try:
                ctx = make_context(system, plat, props)
            except ValueError as err:
                print(f"skipping OpenMM {plat}: {err}")
                break
            name = f"OpenMM {plat}, frame by frame"
            key = f"{name}|{t}"

            def run(ctx=ctx):
                return openmm_energies_forces(None, pos[:n_mm], context=ctx)

            runners[key] = run
            rows[key] = {"method": name, "threads": t, "frames_timed": n_mm}

    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(args.repeats):
        for key, run in runners.items():
            t0 = time.perf_counter()
            results[key] = run()
            times[key].append(time.perf_counter() - t0)
    load_after = os.getloadavg()

    ref_key = next((k for k in rows if k.startswith("OpenMM Reference")), None)
    ref_ms = None
    if ref_key:
        ref_ms = min(times[ref_key]) / rows[ref_key]["frames_timed"] * 1e3
    for key, row in rows.items():
        best, med = min(times[key]), float(np.median(times[key]))
        row["best_s"], row["median_s"] = best, med
        row["ms_per_frame"] = best / row["frames_timed"] * 1e3
        row["ms_per_frame_median"] = med / row["frames_timed"] * 1e3
        row["frames_per_s"] = row["frames_timed"] / best
        row["time_for_all_s"] = row["ms_per_frame"] * args.frames / 1e3
        row["speedup_vs_openmm_reference"] = ref_ms / row["ms_per_frame"] if ref_ms else None

    # agreement on the frames OpenMM labelled
    agreement = {}
    if ref_key:
        e_ref, f_ref = results[ref_key]
        for key in rows:
            if key == ref_key:
                continue
            e, f = results[key]
            e, f = e[:n_mm], f[:n_mm]
            agreement[key] = {
                "max_abs_dE_eV": float(np.abs(e - e_ref).max()),
                "max_rel_dE": float(np.abs(e - e_ref).max() / np.abs(e_ref).max()),
                "max_abs_dF_eV_A": float(np.abs(f - f_ref).max()),
                "max_rel_dF": float(np.abs(f - f_ref).max() / np.abs(f_ref).max()),
            }

    print(
        f"\nGAFF-2.11 aspirin labelling: {args.frames} frames, σ = {args.sigma} Å, seed "
        f"{args.seed}, float64; torch {torch.__version__}, "
        f"OpenMM {__import__('openmm').version.full_version}; CPU: {cpu_model()}, "
        f"{os.cpu_count()} cores"
    )
    print(
        f"load average (1/5/15 min) before: {load_before[0]:.2f}/{load_before[1]:.2f}/"
        f"{load_before[2]:.2f}, after: {load_after[0]:.2f}/{load_after[1]:.2f}/"
        f"{load_after[2]:.2f}; best of {args.repeats} round-robin rounds (median in brackets)"
    )
    if n_mm < args.frames:
        print(
            f"OpenMM rows are timed on the first {n_mm} frames; 'time for all' extrapolates "
            f"to {args.frames} frames"
        )
    print()
    print(
        "| method | threads | frames timed | frames/s | ms/frame | time for all (s) | "
        "speed-up vs OpenMM Reference |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows.values():
        sp = row["speedup_vs_openmm_reference"]
        print(
            f"| {row['method']} | {row['threads']} | {row['frames_timed']} | "
            f"{row['frames_per_s']:,.0f} | {row['ms_per_frame']:.4f} "
            f"({row['ms_per_frame_median']:.4f}) | {row['time_for_all_s']:.2f} | "
            f"{'' if sp is None else f'{sp:.1f}x'} |"
        )
    if args.compile:
        print(f"\ntorch.compile: one-off compile time {compile_s:.1f} s (not in the table)")
    if agreement:
        print(f"\nagreement with OpenMM Reference on the {n_mm} timed frames:")
        for key, a in agreement.items():
            m, t = key.split("|")
            print(
                f"  {m} ({t} threads): max|ΔE| = {a['max_abs_dE_eV']:.2e} eV "
                f"(rel. {a['max_rel_dE']:.1e}), max|ΔF| = {a['max_abs_dF_eV_A']:.2e} eV/Å "
                f"(rel. to max|F| {a['max_rel_dF']:.1e})"
            )
    if ref_ms:
        best_torch = min(
            (r["ms_per_frame"] for r in rows.values() if r["method"].startswith("torch")),
            default=None,
        )
        if best_torch:
            print(
                f"\nbest batched torch: {best_torch:.4f} ms/frame vs OpenMM Reference "
                f"{ref_ms:.4f} ms/frame: {ref_ms / best_torch:.1f}x "
                f"({'meets' if best_torch <= ref_ms else 'MISSES'} 'not slower'; "
                f"{'meets' if ref_ms / best_torch >= 5 else 'misses'} the 5x aim)"
            )
    if args.json:
        out = {
            "args": vars(args),
            "load_before": load_before,
            "load_after": load_after,
            "cpu": cpu_model(),
            "rows": list(rows.values()),
            "agreement": agreement,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    from ase_mlff import keep_freed_memory

    keep_freed_memory()  # as the recipes: the figures are measured with it
    main()
