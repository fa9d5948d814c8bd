"""Small shared helpers: dtype names, unit factors, when to show progress bars, the one
way to write results: :func:`jsonable` / :func:`write_json` (atomic) and
:func:`numeric_metrics` (what MLflow takes), and the one way to reach Ray:
:func:`ensure_ray` (here, at the bottom layer, so that every layer that runs Ray tasks can
use it)."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import units

#: the dtype names accepted everywhere (configs, CLI flags, calculator and agent specs)
DTYPES = {"float32": torch.float32, "float64": torch.float64}


#: eV per kJ/mol (OpenMM's and the force-field tables' energy unit)
KJ_PER_MOL = float(units.kJ / units.mol)


def show_progress() -> bool:
    """Progress bars on an interactive terminal, quiet under CI."""
    return not os.environ.get("CI") and sys.stderr.isatty()


def check_reachable(address: str, what: str, timeout_s: float = 5.0) -> None:
    """``ConnectionError`` naming ``what`` unless a TCP connection to the host and port of
    ``address`` (``host:port``, ``ray://host:port`` or ``http(s)://host[:port]/...``)
    opens within ``timeout_s``: a client would otherwise retry for minutes. Addresses
    without a host and port (``auto``, a file path) are not checked."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if not parts.hostname:
        return
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        port = None
    if port is None:
        return
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            return
    except OSError as err:
        raise ConnectionError(
            f"{what} {address}: nothing answers at {parts.hostname}:{port} ({err}); start it, "
            "fix the address, or unset it"
        ) from None


def ensure_ray(num_cpus: int | None = None) -> None:
    """Connect to ``RAY_ADDRESS`` if set (checked first: an address where nothing answers
    fails within seconds, not after Ray's long retries), else start a local Ray (once per
    process)."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address:
        check_reachable(address, "RAY_ADDRESS")
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)


def jsonable(x: Any, *, nan_as_null: bool = True) -> Any:
    """``x`` as plain JSON values: mappings with str keys, lists for tuples and arrays,
    Python scalars for numpy ones, str for paths, dicts for dataclasses. With
    ``nan_as_null`` a NaN/±inf float becomes None (strict JSON: ``null`` = "not reached
    within the run" in the survival summaries); otherwise it stays a float."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v, nan_as_null=nan_as_null) for k, v in x.items()}
    if is_dataclass(x) and not isinstance(x, type):
        return jsonable(asdict(x), nan_as_null=nan_as_null)
    if isinstance(x, (list, tuple, np.ndarray)):
        return [jsonable(v, nan_as_null=nan_as_null) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, Path):
        return str(x)
    if nan_as_null and isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(path: str | Path, data: Any, *, indent: int = 1, nan_as_null: bool = True) -> Path:
    """Write :func:`jsonable` ``data`` to ``path`` atomically (a temporary file renamed over
    it), so that a reader or a crash never sees half a file. Returns the path."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(
        jsonable(data, nan_as_null=nan_as_null), indent=indent, allow_nan=not nan_as_null
    )
    tmp.write_text(text)
    tmp.replace(path)
    return path


def numeric_metrics(
    record: Mapping[str, Any], prefix: str = "", *, keep_nan: bool = False
) -> dict[str, float]:
    """The entries of a flat record MLflow can take as metrics: numbers as floats
    (booleans as 1/0), keys prefixed; strings and containers are left out, and NaN/±inf
    too unless ``keep_nan`` (MLflow stores NaN; the force report keeps it, so that a
    metric a model lacks shows as NaN beside the others)."""
    out = {}
    for k, v in record.items():
        if isinstance(v, (bool, int, float, np.integer, np.floating, np.bool_)) and (
            keep_nan or math.isfinite(v)
        ):
            out[f"{prefix}{k}"] = float(v)
    return out
