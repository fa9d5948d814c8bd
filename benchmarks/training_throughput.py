"""Training-step throughput of this project's SchNet and PaiNN against PyG's stock SchNet.

One timed step is everything a training loop does per batch:

1. build the batch of ``--batch-size`` aspirin frames (``Batch.from_dataset``, which
   includes the neighbour list),
2. forward pass, forces ``F = -dE/dx`` by autograd with ``create_graph=True``,
3. the energy + force loss (``ase_mlff.training.losses.training_loss``), backward,
4. an AdamW step.

PyG's ``torch_geometric.nn.models.SchNet`` is built at the same size and fed this
project's neighbour graph through its ``interaction_graph`` hook (its default graph,
``radius_graph``, needs torch-cluster, which does not install here); the distances are
recomputed from ``pos`` inside the hook so forces flow through them. The batch build is
shared code and counted for every model, so the comparison is of the models.

Models are timed round-robin (one step of each per round, the same frames for all), so a
background job that comes and goes slows every model alike. Reported: the median over
``--steps`` rounds after ``--warmup`` untimed rounds, as a markdown table.

Data: the shipped GFN2-xTB aspirin set when present, else frames made by rattling the
shipped aspirin structure (``aspirin_md17_order.xyz``, Gaussian noise of 0.05 Å) with
zero labels; the timing does not depend on label values.

    python benchmarks/training_throughput.py                 # CPU, 2 threads, 30 steps
    python benchmarks/training_throughput.py --device cuda --steps 100
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from torch import Tensor, nn

import ase_mlff
from ase_mlff.data import Dataset, load_dataset
from ase_mlff.graph import Batch
from ase_mlff.models import PaiNN, SchNet, compute_properties
from ase_mlff.training.losses import training_loss

CUTOFF = 5.0
ASPIRIN_XYZ = Path(ase_mlff.__file__).parent / "data" / "shipped" / "aspirin_md17_order.xyz"


def aspirin_dataset(n_frames: int, seed: int) -> tuple[Dataset, str]:
    """The shipped aspirin set, or ``n_frames`` rattled copies of the shipped structure."""
    try:
        ds = load_dataset("aspirin")
        return ds, f"shipped GFN2-xTB aspirin set ({len(ds)} frames)"
    except FileNotFoundError:
        pass
    base = ase.io.read(ASPIRIN_XYZ)
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 0.05, size=(n_frames, len(base), 3))
    frames = []
    for d in noise:
        atoms = base.copy()
        atoms.positions += d
        atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.zeros((len(atoms), 3)))
        frames.append(atoms)
    return Dataset.from_atoms(frames), f"{n_frames} rattled copies of aspirin_md17_order.xyz"


class GraphFromBatch(nn.Module):
    """PyG SchNet ``interaction_graph`` hook serving this project's neighbour graph.

    Set ``edge_index`` (ours: centre ``i``, neighbour ``j``) before each forward. PyG's
    message passing sends from ``edge_index[0]`` to ``edge_index[1]``, i.e. it wants
    ``(j, i)``, so the rows are swapped. Distances come from ``pos`` so that autograd
    reaches the positions.
    """

    def __init__(self) -> None:
        super().__init__()
        self.edge_index: Tensor | None = None

    def forward(self, pos: Tensor, batch: Tensor) -> tuple[Tensor, Tensor]:
        if self.edge_index is None:
            raise RuntimeError("set GraphFromBatch.edge_index before the forward pass")
        i, j = self.edge_index
        return torch.stack([j, i]), (pos[j] - pos[i]).norm(dim=-1)


def stock_schnet() -> tuple[nn.Module, GraphFromBatch]:
    """PyG's SchNet at the size of ours (64/64, 3 interactions, 50 Gaussians, 5 Å)."""
    from torch_geometric.nn.models import SchNet as PyGSchNet

    graph = GraphFromBatch()
    model = PyGSchNet(
        hidden_channels=64,
        num_filters=64,
        num_interactions=3,
        num_gaussians=50,
        cutoff=CUTOFF,
        interaction_graph=graph,
    )
    return model, graph


Step = Callable[[np.ndarray], None]


def make_step(
    model: nn.Module,
    ds: Dataset,
    dtype: torch.dtype,
    device: torch.device,
    graph: GraphFromBatch | None = None,
) -> Step:
    """A closure doing one full training step on the given frames."""
    model.to(device=device, dtype=dtype).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(frames: np.ndarray) -> None:
        batch = Batch.from_dataset(ds, frames, cutoff=CUTOFF, dtype=dtype, device=device)
        if graph is None:
            out = compute_properties(model, batch, forces=True, training=True)
        else:
            graph.edge_index = batch.edge_index_2e
            pos = batch.pos_nc.detach().requires_grad_(True)
            energy = model(batch.numbers_n, pos, batch.system_n).squeeze(-1)
            (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=True)
            out = {"energy": energy.double(), "forces": -grad}
        loss = training_loss(out, batch, energy_weight=1.0, force_weight=20.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(
    steps: dict[str, Step],
    ds: Dataset,
    batch_size: int,
    n_steps: int,
    n_warmup: int,
    device: torch.device,
    seed: int,
) -> dict[str, list[float]]:
    """Seconds per step of every model, timed round-robin on identical frames."""
    rng = np.random.default_rng(seed)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for k in range(n_warmup + n_steps):
        frames = rng.choice(len(ds), size=batch_size, replace=len(ds) < batch_size)
        for name, step in steps.items():
            synchronize(device)
            t0 = time.perf_counter()
            step(frames)
            synchronize(device)
            if k >= n_warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default: 2)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per model (default: 30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default: 5)")
    p.add_argument("--batch-size", type=int, default=32, help="molecules per batch (default: 32)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    ds, source = aspirin_dataset(n_frames=max(256, args.batch_size), seed=args.seed)

    pyg, graph = stock_schnet()
    models: dict[str, tuple[nn.Module, GraphFromBatch | None]] = {
        "SchNet (ase_mlff)": (
            SchNet(hidden=64, n_filters=64, n_interactions=3, n_rbf=50, cutoff=CUTOFF),
            None,
        ),
        "SchNet (PyG stock)": (pyg, graph),
        "PaiNN (ase_mlff)": (PaiNN(hidden=64, n_interactions=3, cutoff=CUTOFF), None),
    }
    steps = {name: make_step(m, ds, dtype, device, g) for name, (m, g) in models.items()}
    times = benchmark(steps, ds, args.batch_size, args.steps, args.warmup, device, args.seed)

    probe = Batch.from_dataset(ds, np.arange(args.batch_size) % len(ds), cutoff=CUTOFF)
    print(
        f"training step, batch of {args.batch_size} aspirin ({probe.pos_nc.shape[0]} atoms, "
        f"{probe.edge_index_2e.shape[1]} edges), {args.dtype}, device {device}, "
        f"{args.threads} threads, median of {args.steps} steps after {args.warmup} warm-up"
    )
    load = os.getloadavg()[0]
    print(f"data: {source}; torch {torch.__version__}; 1-min load average at the end {load:.2f}")
    print()
    print("| model | parameters | ms/step (median) | ms/step (p10-p90) | frames/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    medians = {}
    for name, t in times.items():
        ms = np.asarray(t) * 1e3
        med = float(np.median(ms))
        medians[name] = med
        n_par = sum(q.numel() for q in models[name][0].parameters())
        p10, p90 = np.percentile(ms, [10, 90])
        print(
            f"| {name} | {n_par:,} | {med:.1f} | {p10:.1f}-{p90:.1f} "
            f"| {args.batch_size / med * 1e3:.0f} |"
        )
    ratio = medians["SchNet (PyG stock)"] / medians["SchNet (ase_mlff)"]
    print()
    print(
        f"speed of SchNet (ase_mlff) relative to SchNet (PyG stock), stock ms / ours ms: "
        f"{ratio:.2f}x (> 1: ours faster)"
    )


if __name__ == "__main__":
    from ase_mlff import keep_freed_memory

    keep_freed_memory()  # as the recipes: the figures are measured with it
    main()
