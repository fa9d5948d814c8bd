"""Label frames with a reference calculator in parallel Ray tasks.

    from ase_mlff.agents.labelling import label_frames
    ds = label_frames(frames, {"name": "tblite", "method": "GFN2-xTB"}, n_tasks=8)

The frames are split into contiguous chunks, one ``ray.remote`` task per chunk. A task gets
the calculator *spec* (a small dict for :func:`ase_mlff.agents.specs.make_calculator`)
and builds the calculator itself, so no calculator object (a tblite handle, an OpenMM
context, a torch model) crosses the wire. Each frame gets the energy, the raw forces
(``apply_constraint=False``) and,
when it is periodic, the stress. The chunks come back in the input order. Every frame is
computed from scratch (``calc.reset()``; tblite would otherwise start each SCF from the
previous frame's wavefunction), so a frame's labels do not depend on how frames are chunked.

This is the labelling step of paper 002's continued learning (Wang et al., J. Chem. Phys.
159, 035101 (2023), § III: "continued training by recruiting additional unexplored data"),
see :mod:`ase_mlff.agents.continued`; the labelling is the expensive part of that loop.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from ase_mlff.data.dataset import Dataset
from ase_mlff.utils import ensure_ray

log = logging.getLogger(__name__)


class LabellingError(RuntimeError):
    """A frame could not be labelled; the message names the frame and the calculator error."""


def _label_chunk(
    spec: dict[str, Any], images: list[Atoms], start: int, threads: int
) -> dict[str, Any]:
    """Label one chunk in a worker; errors are returned (not raised) with the frame index,
    so that the driver can report them plainly (no Ray traceback wrapping)."""
    import torch

    from ase_mlff.agents.specs import make_calculator

    torch.set_num_threads(max(1, int(threads)))
    t0 = time.perf_counter()
    try:
        calc = make_calculator(spec)
    except Exception as err:  # reported to the driver, with the frame
        return {"error": (start, f"cannot build the calculator: {type(err).__name__}: {err}")}
    energy, forces, stress = [], [], []
    for k, atoms in enumerate(images):
        a = atoms.copy()
        calc.reset()  # from scratch: no SCF restart from the previous frame of the chunk
        a.calc = calc
        try:
            energy.append(float(a.get_potential_energy()))
            forces.append(np.asarray(a.get_forces(apply_constraint=False), dtype=np.float64))
            periodic = bool(a.pbc.any())
            stress.append(np.asarray(a.get_stress(voigt=True)) if periodic else None)
        except Exception as err:  # reported to the driver, with the frame
            return {"error": (start + k, f"{type(err).__name__}: {err}")}
    return {
        "energy": energy,
        "forces": forces,
        "stress": stress,
        "seconds": time.perf_counter() - t0,
    }


def _check_spec(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict) or not spec.get("name"):
        raise ValueError(
            f"calculator_spec must be a dict with a 'name' (e.g. {{'name': 'tblite'}}), "
            f"got {spec!r}"
        )
    return dict(spec)


def label_frames(
    images: Sequence[Atoms],
    calculator_spec: dict[str, Any],
    n_tasks: int | None = None,
    *,
    config_type: str | None = None,
    extra_keys: Sequence[str] = (),
    threads_per_task: int = 1,
    provenance: dict[str, Any] | None = None,
) -> Dataset:
    """Label ``images`` with the calculator of ``calculator_spec`` over Ray tasks.

    Args:
        images: frames to label (any attached calculator is ignored; positions, numbers,
            cell, pbc and ``info`` are what is sent).
        calculator_spec: e.g. ``{"name": "tblite"}`` (GFN2-xTB), ``{"name": "mlff",
            "model": "aspirin-painn"}``; see :func:`~ase_mlff.agents.specs.
            make_calculator`.
        n_tasks: number of chunks / Ray tasks; default one per CPU of the Ray cluster, at
            most one per frame.
        config_type: the frames' ``config_type``; ``None`` keeps each frame's
            ``info["config_type"]`` (``"labelled"`` where it has none).
        extra_keys: ``info`` keys copied into ``Dataset.extra_s`` (every frame must have them).
        threads_per_task: CPUs reserved by, and torch threads of, each task.
        provenance: merged into the dataset's provenance.

    Returns:
        A :class:`~ase_mlff.data.dataset.Dataset` in the input order, with energy, forces
        (and stress when a frame is periodic), provenance ``{"reference": spec, "method",
        "n_frames", "n_tasks", "chunk_sizes", "config_types", "labelling_seconds", ...}``.

    Raises:
        ValueError: no frames, a bad spec, ``n_tasks < 1``, a missing ``extra_keys`` entry.
        LabellingError: a chunk failed; names the global frame index and the calculator's
            error (or that the calculator could not be built).
    """
    import ray

    spec = _check_spec(calculator_spec)
    images = list(images)
    if not images:
        raise ValueError("no frames to label")
    if n_tasks is not None and int(n_tasks) < 1:
        raise ValueError(f"n_tasks must be >= 1, got {n_tasks}")
    for key in extra_keys:
        missing = [k for k, a in enumerate(images) if key not in a.info]
        if missing:
            raise ValueError(f"frames {missing[:5]} have no info[{key!r}] (extra_keys)")
    ensure_ray()
    if n_tasks is None:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n_tasks = max(1, cpus // max(1, threads_per_task))
    n_tasks = min(int(n_tasks), len(images))
    # calculators are never sent: a copy without calc keeps what the worker needs
    bare = []
    for a in images:
        b = a.copy()
        b.calc = None
        bare.append(b)
    chunks = np.array_split(np.arange(len(images)), n_tasks)
    task = ray.remote(num_cpus=threads_per_task)(_label_chunk)
    t0 = time.perf_counter()
    refs = [
        task.remote(spec, [bare[i] for i in idx], int(idx[0]), threads_per_task) for idx in chunks
    ]
    results = ray.get(refs)
    seconds = time.perf_counter() - t0
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        frame, msg = min(errors)
        raise LabellingError(
            f"labelling frame {frame} of {len(images)} with {spec} failed: {msg}"
            + (f" ({len(errors)} chunks failed)" if len(errors) > 1 else "")
        )
    labelled = []
    for idx, res in zip(chunks, results):
        for i, e, f, s in zip(idx, res["energy"], res["forces"], res["stress"]):
            a = bare[i].copy()
            ct = config_type or str(a.info.get("config_type", "labelled"))
            a.info["config_type"] = ct
            kw: dict[str, Any] = {"energy": e, "forces": f}
            if s is not None:
                kw["stress"] = s
            a.calc = SinglePointCalculator(a, **kw)
            labelled.append(a)
    counts = Counter(a.info["config_type"] for a in labelled)
    prov = {
        "reference": spec,
        "method": spec.get("method", "GFN2-xTB") if spec["name"] == "tblite" else spec["name"],
        "labelled_by": "ase_mlff.agents.labelling.label_frames (Ray tasks)",
        "n_frames": len(labelled),
        "n_tasks": len(chunks),
        "chunk_sizes": [len(c) for c in chunks],
        "config_types": dict(counts),
        "labelling_seconds": round(seconds, 3),
        "task_seconds": [round(r["seconds"], 3) for r in results],
        "stress": any(s is not None for r in results for s in r["stress"]),
        **(provenance or {}),
    }
    ds = Dataset.from_atoms(labelled, provenance=prov, require_labels=True)
    for key in extra_keys:
        ds.extra_s[key] = np.asarray([a.info[key] for a in images])
    log.info("labelled %d frames with %s in %d tasks, %.2f s", len(ds), spec, len(chunks), seconds)
    return ds
