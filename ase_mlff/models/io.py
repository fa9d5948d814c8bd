"""Model checkpoints: a directory with ``model.safetensors`` (weights, no pickle) and
``model.json`` (architecture config, species, units, format version, training provenance).

Two checks make a damaged or mismatched checkpoint fail to load instead of loading wrong:
``model.json`` holds the SHA-256 of the weights file (a flipped bit, a truncated or
replaced file), and the weights file holds the architecture config it was saved with (in
its safetensors metadata), which must equal ``model.json``'s (an edited cutoff or width).
Checkpoints written before these were stored load without them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load, save_file

import ase_mlff

#: bump the major number when a checkpoint written before can no longer be read
CHECKPOINT_FORMAT = "1.0"
WEIGHTS, META = "model.safetensors", "model.json"
#: safetensors metadata key of the architecture config saved with the weights
CONFIG_KEY = "ase_mlff_model_config"


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
    save_file(state, str(tmp), metadata={CONFIG_KEY: _config_json(model.config)})
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    tmp.replace(path / WEIGHTS)  # atomic: an interrupted save never leaves a torn file
    meta = {
        "format": CHECKPOINT_FORMAT,
        "ase_mlff_version": ase_mlff.__version__,
        "model": model.config,
        "species": getattr(model, "species", None),
        "units": {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom"},
        "weights_sha256": digest,
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
    data = weights.read_bytes()
    expected = meta.get("weights_sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise CheckpointError(
            f"checkpoint weights {weights} do not match the SHA-256 in {META}: the file is "
            "corrupted or was replaced; restore it or retrain"
        )
    try:
        state = load(data)
        with safe_open(str(weights), "pt") as f:
            saved_config = (f.metadata() or {}).get(CONFIG_KEY)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"corrupted checkpoint weights {weights}: {err}") from err
    if saved_config is not None and saved_config != _config_json(meta["model"]):
        old, new = json.loads(saved_config), json.loads(_config_json(meta["model"]))
        diff = [
            f"{k}: {old.get(k)!r} with the weights, {new.get(k)!r} in {META}"
            for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)
        ]
        raise CheckpointError(
            f"checkpoint {path}: the model config in {META} differs from the one saved with "
            f"the weights ({'; '.join(diff)}); {META} was edited or belongs to other weights"
        )
    _refuse_old_eam(meta["model"], path)
    # cast before loading, so that a float64 checkpoint is not rounded through float32
    model = build_model(meta["model"]).to(device=device, dtype=dtype)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"weights in {weights} do not fit the model config: {err}") from err
    model.to(device=device, dtype=dtype)
    return model.eval(), meta


def _refuse_old_eam(config: Any, path: Path) -> None:
    """An EAM config (also inside a hybrid's) without ``pair_term`` was written when the
    EAM's pair term could not bind and its switch spanned the whole cutoff: its weights
    mean another function now, so it is refused instead of loaded as something else."""
    if isinstance(config, dict):
        if config.get("name") == "eam" and "pair_term" not in config:
            raise CheckpointError(
                f"checkpoint {path} holds an EAM of the old form (pair term "
                "D(1 - exp(-a(r - r_e)))^2 without a well, cosine switch); the EAM now "
                "uses paper 004's binding Morse and a quintic switch: refit it"
            )
        for value in config.values():
            _refuse_old_eam(value, path)


def _config_json(config: dict[str, Any]) -> str:
    """A model config as canonical JSON (sorted keys), for storing and comparing."""
    return json.dumps(json.loads(json.dumps(config, default=str)), sort_keys=True)
