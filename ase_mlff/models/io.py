"""Model checkpoints: a directory with ``model.safetensors`` (weights, no pickle) and
``model.json`` (architecture config, species, units, format version, training provenance).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import ase_mlff

#: bump the major number when a checkpoint written before can no longer be read
CHECKPOINT_FORMAT = "1.0"
WEIGHTS, META = "model.safetensors", "model.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupted or from an incompatible version."""


def save_model(
    model: torch.nn.Module, path: str | Path, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` to the checkpoint directory ``path`` (created if needed)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path / (WEIGHTS + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(path / WEIGHTS)  # atomic: an interrupted save never leaves a torn file
    meta = {
        "format": CHECKPOINT_FORMAT,
        "ase_mlff_version": ase_mlff.__version__,
        "model": model.config,
        "species": getattr(model, "species", None),
        "units": {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom"},
        **(metadata or {}),
    }
    (path / META).write_text(json.dumps(meta, indent=2, default=str))
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    meta_file = path / META if path.is_dir() else path
    if not meta_file.exists():
        raise CheckpointError(
            f"no checkpoint at {path}: expected a directory with {WEIGHTS} and {META}"
        )
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"corrupted checkpoint metadata {meta_file}: {err}") from err
    fmt = str(meta.get("format", "0"))
    if fmt.split(".")[0] != CHECKPOINT_FORMAT.split(".")[0]:
        raise CheckpointError(
            f"checkpoint {path} has format {fmt}, incompatible with this ase_mlff "
            f"(reads format {CHECKPOINT_FORMAT.split('.')[0]}.x); it was written by "
            f"ase_mlff {meta.get('ase_mlff_version', '?')}"
        )
    if "model" not in meta:
        raise CheckpointError(f"checkpoint metadata {meta_file} has no model configuration")
    return meta


def load_model(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint directory; returns ``(model in eval mode, metadata)``."""
    from ase_mlff.models import build_model

    path = Path(path)
    meta = read_metadata(path)
    weights = (path if path.is_dir() else path.parent) / WEIGHTS
    if not weights.exists():
        raise CheckpointError(f"checkpoint {path} has no weights file {WEIGHTS}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"corrupted checkpoint weights {weights}: {err}") from err
    # cast before loading, so that a float64 checkpoint is not rounded through float32
    model = build_model(meta["model"]).to(device=device, dtype=dtype)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"weights in {weights} do not fit the model config: {err}") from err
    model.to(device=device, dtype=dtype)
    return model.eval(), meta
