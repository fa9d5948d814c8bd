"""The MD protocol: one frozen, checked description of how replicas are integrated.

    from ase_mlff.md.protocol import MDProtocol, PROTOCOLS
    p = PROTOCOLS["md17_nose_hoover"].replace(steps=20_000)
    run = run_md(model, images, protocol=p)

Every default lives here, in :class:`MDProtocol`'s fields; a protocol is checked when it is
made (:func:`~ase_mlff.md.validation.validate_md_parameters`), so a bad value fails before
any model is evaluated. :data:`INTEGRATORS` registers each integrator's step function and
the protocol fields it takes, so :func:`~ase_mlff.md.runner.run_md` passes a protocol
through without naming integrators. The papers' protocols are defined once, in
:data:`PROTOCOLS`.

Units: ``dt``, ``tdamp``, ``taut``, ``taup`` in fs; ``temperature_K`` in K; ``friction`` in
fs⁻¹; ``pressure_bar`` in bar; ``compressibility`` in bar⁻¹; ``steps``, ``check_every`` and
``record_every`` in steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from dataclasses import replace as _replace
from typing import Any

from ase_mlff.md import integrators
from ase_mlff.md.integrators import (
    langevin_baoab_step,
    nose_hoover_chain_step,
    npt_berendsen_step,
    velocity_verlet_step,
)
from ase_mlff.md.validation import MDParameterError, validate_md_parameters


@dataclass(frozen=True)
class Integrator:
    """A registered integrator: its step function ``step(state, model, *, dt, ...)``, the
    protocol fields it takes besides ``dt``, and whether every replica must be periodic."""

    name: str
    step: Callable
    params: tuple[str, ...]
    periodic_only: bool = False

    def step_kwargs(self, protocol: MDProtocol) -> dict[str, Any]:
        """The keyword arguments of :attr:`step` for ``protocol``."""
        return {"dt": protocol.dt, **{p: getattr(protocol, p) for p in self.params}}


_NPT = ("temperature_K", "taut", "pressure_bar", "taup", "compressibility", "anisotropic")

#: every integrator of the batched engine (:mod:`ase_mlff.md.integrators`)
INTEGRATORS: dict[str, Integrator] = {
    i.name: i
    for i in (
        Integrator("nve", velocity_verlet_step, ()),
        Integrator("langevin", langevin_baoab_step, ("temperature_K", "friction")),
        Integrator("nose_hoover", nose_hoover_chain_step, ("temperature_K", "tdamp")),
        Integrator("npt_berendsen", npt_berendsen_step, _NPT, periodic_only=True),
    )
}


@dataclass(frozen=True)
class MDProtocol:
    """How replicas are integrated and how often they are checked and recorded.

    The field defaults are the project's only MD defaults: Langevin BAOAB at 500 K and
    0.5 fs with γ = 0.01 fs⁻¹ (the papers' friction), the Nosé–Hoover chain with τ = 50 fs,
    Berendsen NPT with ASE's constants (the constants are named in
    :mod:`ase_mlff.md.integrators`, whose step functions take the same defaults). Fields
    an integrator does not use are kept (and recorded) but have no effect:
    :meth:`step_kwargs` passes the used ones only.
    """

    steps: int
    dt: float = 0.5
    integrator: str = "langevin"
    temperature_K: float = 500.0
    friction: float = integrators.FRICTION
    tdamp: float = integrators.TDAMP
    taut: float = integrators.TAUT
    pressure_bar: float = integrators.PRESSURE_BAR
    taup: float = integrators.TAUP
    compressibility: float = integrators.COMPRESSIBILITY
    anisotropic: bool = integrators.ANISOTROPIC
    check_every: int = 10
    record_every: int = 20
    #: a heating (or cooling) ramp: the thermostat's target goes linearly from
    #: ``temperature_K`` at t = 0 to this at the end of the run (None: constant). Langevin
    #: only; the stress protocol of MLIP Arena's heating test (issue 15): the temperature at
    #: which a replica fails is :meth:`temperature_at` its t_inst
    temperature_end_K: float | None = None

    def __post_init__(self) -> None:
        validate_md_parameters(**asdict(self), integrators=INTEGRATORS)
        if not isinstance(self.anisotropic, bool):
            raise MDParameterError(
                "anisotropic", f"anisotropic must be True or False, got {self.anisotropic!r}"
            )
        if self.temperature_end_K is not None:
            t_end = self.temperature_end_K
            if not (isinstance(t_end, (int, float)) and math.isfinite(t_end) and t_end >= 0):
                raise MDParameterError(
                    "temperature_end_K", f"temperature_end_K must be finite and ≥ 0 K: {t_end!r}"
                )
            if self.integrator != "langevin":
                raise MDParameterError(
                    "temperature_end_K",
                    f"a temperature ramp needs the langevin integrator, not {self.integrator!r} "
                    "(a Nosé–Hoover chain's masses and Berendsen's scaling assume one target)",
                )

    def temperature_at(self, step: float) -> float:
        """The thermostat's target at ``step`` (K): ``temperature_K``, or on the ramp."""
        if self.temperature_end_K is None:
            return self.temperature_K
        frac = min(max(step / self.steps, 0.0), 1.0)
        return self.temperature_K + (self.temperature_end_K - self.temperature_K) * frac

    @property
    def integrator_spec(self) -> Integrator:
        return INTEGRATORS[self.integrator]

    def step_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the integrator's step function."""
        return self.integrator_spec.step_kwargs(self)

    def integration(self) -> dict[str, Any]:
        """How to integrate: ``integrator``, ``dt`` and the fields that integrator takes
        (what a named protocol fixes; steps and strides are the caller's)."""
        return {"integrator": self.integrator, **self.step_kwargs()}

    def replace(self, **changes: Any) -> MDProtocol:
        """A checked copy with ``changes`` (unknown names are refused, naming them)."""
        _check_names(changes)
        return _replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> MDProtocol:
        """A protocol from a mapping of its fields (e.g. a YAML or JSON block)."""
        _check_names(values)
        if "steps" not in values:
            raise MDParameterError(
                "steps", "an MD protocol needs steps (the run length), e.g. steps=2000"
            )
        return cls(**dict(values))


def _check_names(values: Mapping[str, Any]) -> None:
    known = {f.name for f in fields(MDProtocol)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise MDParameterError(
            unknown[0], f"unknown MD protocol field(s) {unknown}; known: {sorted(known)}"
        )


def make_protocol(
    protocol: MDProtocol | str | Mapping[str, Any] | None = None, **changes: Any
) -> MDProtocol:
    """One protocol from a :class:`MDProtocol`, the name of one in :data:`PROTOCOLS`, or a
    mapping of fields, with ``changes`` applied; ``None`` starts from the defaults (then
    ``steps`` must be among the changes)."""
    if protocol is None:
        return MDProtocol.from_dict(changes)
    if isinstance(protocol, str):
        if protocol not in PROTOCOLS:
            raise MDParameterError(
                "protocol", f"unknown MD protocol {protocol!r}; choose from {sorted(PROTOCOLS)}"
            )
        protocol = PROTOCOLS[protocol]
    elif isinstance(protocol, Mapping):
        protocol = MDProtocol.from_dict({**protocol, **changes})
        changes = {}
    elif not isinstance(protocol, MDProtocol):
        raise MDParameterError(
            "protocol", f"protocol must be an MDProtocol, a name or a mapping, got {protocol!r}"
        )
    return protocol.replace(**changes) if changes else protocol


#: the papers' protocols, by what they are (the paper in the comment); ``steps`` is the
#: paper's length where it states one (paper 003), otherwise the recipe's (``replace`` it)
PROTOCOLS: dict[str, MDProtocol] = {
    # paper 003 § 4.1 (MD17 molecules): Nosé–Hoover, 500 K, 0.5 fs, 300 ps
    "md17_nose_hoover": MDProtocol(
        steps=600_000, dt=0.5, integrator="nose_hoover", temperature_K=500.0, tdamp=50.0
    ),
    # paper 001 Methods (aspirin): Langevin, friction 2 ps⁻¹, 0.5 fs, at paper 003's 500 K
    # and for paper 003's 300 ps
    "aspirin_langevin": MDProtocol(
        steps=600_000, dt=0.5, integrator="langevin", temperature_K=500.0, friction=0.002
    ),
    # paper 001 Methods (bulk water): Langevin, friction 2 ps⁻¹, 0.5 fs, 300 K
    "water_langevin": MDProtocol(
        steps=200_000, dt=0.5, integrator="langevin", temperature_K=300.0, friction=0.002
    ),
    # paper 004 Table 1 (silica): NVT (Langevin, as ASE) at 2,000 K with 2 fs steps; the
    # paper states no length: 10 ps, eam_pretraining's full profile
    "silica_nvt": MDProtocol(
        steps=5_000, dt=2.0, integrator="langevin", temperature_K=2000.0, friction=0.01
    ),
    # paper 004 Table 1 (silica): NPT (Berendsen, as ASE) at 2,000 K and 1 atm, 2 fs;
    # compressibility of silica ~ 1/(37 GPa) (quartz bulk modulus)
    "silica_npt": MDProtocol(
        steps=5_000,
        dt=2.0,
        integrator="npt_berendsen",
        temperature_K=2000.0,
        taut=100.0,
        pressure_bar=1.01325,
        taup=1000.0,
        compressibility=2.7e-6,
    ),
}
