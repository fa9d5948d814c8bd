"""Checks of MD parameters, made before any model evaluation, file or Ray start.

A bad value (``dt=0``, a negative temperature, ``steps=0``, ...) would otherwise run and
report a meaningless result — every replica "100 % stable", or a negative t_inst — so
:func:`validate_md_parameters` raises :class:`MDParameterError` (a ``ValueError``) that
names the parameter and the value. :func:`~ase_mlff.md.runner.run_md`,
:func:`~ase_mlff.md.ase_driver.run_ase_md`, :func:`~ase_mlff.agents.run_stability_study`
and the stability recipe call it first.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Sequence
from typing import Any

from ase import Atoms

_UNSET = object()


class MDParameterError(ValueError):
    """A bad MD parameter; ``param`` is its name (as in :func:`~ase_mlff.md.run_md`)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise MDParameterError(name, f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise MDParameterError(name, f"{name} must be finite, got {value!r}")
    return value


def _positive(name: str, value: Any, unit: str = "") -> None:
    if _real(name, value) <= 0:
        raise MDParameterError(name, f"{name} must be > 0{unit}, got {value!r}")


def _non_negative(name: str, value: Any, unit: str = "") -> None:
    if _real(name, value) < 0:
        raise MDParameterError(name, f"{name} must be >= 0{unit}, got {value!r}")


def _count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise MDParameterError(name, f"{name} must be an integer >= 1, got {value!r}")


def validate_images(images: Any, name: str = "images") -> None:
    """A non-empty sequence of ``Atoms``, each with at least one atom (sizes may differ)."""
    if isinstance(images, Atoms):
        raise MDParameterError(
            name, f"{name} must be a list of Atoms (one per replica), got a single Atoms"
        )
    if images is None or len(images) == 0:
        raise MDParameterError(name, f"{name} must hold at least one structure, got {images!r}")
    for k, a in enumerate(images):
        if not isinstance(a, Atoms):
            raise MDParameterError(name, f"{name}[{k}] is not an ase.Atoms: {type(a)}")
        if len(a) == 0:
            raise MDParameterError(name, f"{name}[{k}] has 0 atoms")


def validate_md_parameters(
    *,
    steps: Any,
    dt: Any = None,
    integrator: str | None = None,
    integrators: Collection[str] | None = None,
    temperature_K: Any = None,
    friction: Any = None,
    tdamp: Any = None,
    taut: Any = None,
    pressure_bar: Any = None,
    taup: Any = None,
    compressibility: Any = None,
    check_every: Any = None,
    record_every: Any = None,
    checkpoint_every: Any = None,
    images: Sequence[Atoms] | None | object = _UNSET,
    **_other: Any,
) -> None:
    """Raise :class:`MDParameterError` naming the first bad parameter; None = not checked.

    Units as in :func:`~ase_mlff.md.run_md`. Rules: ``dt`` > 0 fs; ``temperature_K`` ≥ 0 K
    (0 K is legal where it means something: NVE starts at rest, Langevin and Berendsen cool
    to 0 K; the Nosé–Hoover chain needs > 0 K, its masses are ∝ k_B T); ``friction`` ≥ 0 fs⁻¹;
    ``tdamp``, ``taut``, ``taup`` > 0 fs; ``compressibility`` ≥ 0 bar⁻¹; ``pressure_bar``
    any finite value; ``steps``, ``check_every``, ``record_every``, ``checkpoint_every``
    integers ≥ 1 (``checkpoint_every`` a multiple of ``check_every``); every real number
    finite (no NaN or inf); ``images`` (when given) non-empty, no image with 0 atoms.
    ``integrator`` must be one of ``integrators`` when both are given. Other keyword
    arguments (``seed``, ``anisotropic``, ...) are accepted and not checked, so a ``run_md``
    keyword dict can be passed whole.
    """
    if integrator is not None and integrators is not None and integrator not in integrators:
        raise MDParameterError(
            "integrator", f"unknown integrator {integrator!r}; choose from {sorted(integrators)}"
        )
    _count("steps", steps)
    if dt is not None:
        _positive("dt", dt, " fs")
    if temperature_K is not None:
        _non_negative("temperature_K", temperature_K, " K")
        if integrator == "nose_hoover" and temperature_K == 0:
            raise MDParameterError(
                "temperature_K",
                "temperature_K must be > 0 K for the Nosé-Hoover chain (its masses are "
                "Q ∝ k_B T; at 0 K it divides by zero), got 0; use langevin to cool to 0 K",
            )
    if friction is not None:
        _non_negative("friction", friction, " 1/fs")
    for name, value in (("tdamp", tdamp), ("taut", taut), ("taup", taup)):
        if value is not None:
            _positive(name, value, " fs")
    if compressibility is not None:
        _non_negative("compressibility", compressibility, " 1/bar")
    if pressure_bar is not None:
        _real("pressure_bar", pressure_bar)
    for name, value in (("check_every", check_every), ("record_every", record_every)):
        if value is not None:
            _count(name, value)
    if checkpoint_every is not None:
        _count("checkpoint_every", checkpoint_every)
        if check_every is not None and checkpoint_every % check_every:
            raise MDParameterError(
                "checkpoint_every",
                f"checkpoint_every must be a multiple of check_every, got "
                f"checkpoint_every={checkpoint_every!r}, check_every={check_every!r}",
            )
    if images is not _UNSET:
        validate_images(images)
