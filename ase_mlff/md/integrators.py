"""Integrators over a batch of replicas: one potential call per step for all of them.

Each is a plain function ``step(state, model, *, dt, ...) -> state`` (as in torch-sim);
``dt`` is in femtoseconds, temperatures in kelvin, friction in fs⁻¹, the thermostat time
constant in fs. Observers (trajectory storage, detectors) live outside the step.

- :func:`velocity_verlet_step`: NVE.
- :func:`langevin_baoab_step`: Langevin NVT, BAOAB splitting (Leimkuhler & Matthews,
  Appl. Math. Res. Express 2013, 34): exact Ornstein-Uhlenbeck "O" step between two
  half drifts, the most accurate configurational sampling of the common splittings.
  The papers use friction 0.01 fs⁻¹ (2 ps⁻¹ in paper 001 at 0.5 fs).
- :func:`nose_hoover_chain_step`: Nosé-Hoover chain NVT (Martyna, Klein & Tuckerman,
  J. Chem. Phys. 97, 2635 (1992)), Trotter-factorised as in Frenkel & Smit, Algorithm
  30-32; the MD17 protocol of paper 003 (500 K, 0.5 fs, Nosé-Hoover).
- :func:`npt_berendsen_step`: Berendsen NPT (Berendsen et al., J. Chem. Phys. 81, 3684
  (1984)) as ASE's ``ase.md.nptberendsen.NPTBerendsen`` / ``Inhomogeneous_NPTBerendsen``:
  Berendsen velocity scaling, then positions and each replica's own cell scaled by μ, then
  velocity Verlet; the NPT protocol of paper 004 § 2.4.1 (2,000 K, 2 fs).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from ase import units
from torch import Tensor

from ase_mlff.md.state import MDState, draw_normals, remove_com_velocity
from ase_mlff.models.base import compute_properties

#: The MD defaults, defined once: the step functions' keyword defaults and the fields of
#: :class:`~ase_mlff.md.protocol.MDProtocol` are these names.
FRICTION = 0.01  # fs⁻¹, the papers' Langevin friction (paper 001 uses 2 ps⁻¹ = 0.002)
TDAMP = 50.0  # fs, Nosé–Hoover chain time constant τ
CHAIN_LENGTH = 3  # Nosé–Hoover chain links
TAUT = 500.0  # fs, Berendsen thermostat time τ_T (ASE's NPTBerendsen example)
PRESSURE_BAR = 0.0  # bar, Berendsen target pressure P₀
TAUP = 1000.0  # fs, Berendsen barostat time τ_P
COMPRESSIBILITY = 4.57e-5  # bar⁻¹, water's (ASE's NPTBerendsen default)
ANISOTROPIC = False  # isotropic cell scaling


def _forces(
    state: MDState, model: torch.nn.Module, pos_nc: Tensor, cell_s33: Tensor | None = None
) -> MDState:
    """Move the replicas to ``pos_nc`` (and ``cell_s33``), rebuild their graph, evaluate.

    Energy and forces; the stress too, from the same autograd pass, when the state carries
    one (NPT).
    """
    batch = state.batch.with_positions(pos_nc, cell_s33)
    want_stress = state.stress_s33 is not None
    out = compute_properties(model, batch, forces=True, stress=want_stress)
    return replace(
        state,
        batch=batch,
        forces_nc=out["forces"].to(pos_nc.dtype),
        energy_s=out["energy"],
        stress_s33=out["stress"].to(pos_nc.dtype) if want_stress else None,
    )


def velocity_verlet_step(state: MDState, model: torch.nn.Module, *, dt: float) -> MDState:
    """One NVE step: v += a dt/2; x += v dt; forces; v += a dt/2."""
    h = dt * units.fs
    inv_m = (1.0 / state.mass_n)[:, None]
    vel = state.vel_nc + 0.5 * h * state.forces_nc * inv_m
    state = _forces(state, model, state.batch.pos_nc + h * vel)
    vel = vel + 0.5 * h * state.forces_nc * inv_m
    return replace(state, vel_nc=vel, step=state.step + 1)


def langevin_baoab_step(
    state: MDState,
    model: torch.nn.Module,
    *,
    dt: float,
    temperature_K: float,
    friction: float = FRICTION,
) -> MDState:
    """One Langevin step, B A O A B; ``friction`` γ in fs⁻¹.

    O: v ← c₁ v + √((1 - c₁²) k_B T / m) ξ with c₁ = exp(-γ dt), ξ from each replica's
    own counter-based generator, then the centre-of-mass velocity is removed.
    """
    h = dt * units.fs
    inv_m = (1.0 / state.mass_n)[:, None]
    c1 = math.exp(-friction * dt)
    sigma = torch.sqrt((1 - c1**2) * units.kB * temperature_K * inv_m)
    vel = state.vel_nc + 0.5 * h * state.forces_nc * inv_m  # B
    pos = state.batch.pos_nc + 0.5 * h * vel  # A
    xi, state = draw_normals(state)
    vel = c1 * vel + sigma * xi  # O
    # the noise would also heat the centre-of-mass motion; keep it fixed, so the replicas'
    # 3N-3 degrees of freedom are the thermalised ones (as ASE's Langevin with FixCom)
    vel = remove_com_velocity(vel, state.mass_n, state.batch.system_n, state.batch.n_systems)
    pos = pos + 0.5 * h * vel  # A
    state = _forces(state, model, pos)
    vel = vel + 0.5 * h * state.forces_nc * inv_m  # B
    return replace(state, vel_nc=vel, step=state.step + 1)


def _nhc_half_step(state: MDState, h: float, kT: float) -> MDState:
    """Propagate the chain for h/2 and scale velocities (Frenkel & Smit, Algorithm 31)."""
    xi, v_xi, q = state.thermostat["xi"], state.thermostat["v_xi"], state.thermostat["q"]
    n_chain = v_xi.shape[1]
    v_xi = v_xi.clone()
    ke2 = 2.0 * state.kinetic_energy()
    dof = state.n_dof_s

    def g(k: int, ke2_s: Tensor) -> Tensor:
        if k == 0:
            return (ke2_s - dof * kT) / q[:, 0]
        return (q[:, k - 1] * v_xi[:, k - 1] ** 2 - kT) / q[:, k]

    # chain from the end to the start, quarter steps
    v_xi[:, -1] = v_xi[:, -1] + 0.25 * h * g(n_chain - 1, ke2)
    for k in range(n_chain - 2, -1, -1):
        damp = torch.exp(-0.125 * h * v_xi[:, k + 1])
        v_xi[:, k] = (v_xi[:, k] * damp + 0.25 * h * g(k, ke2)) * damp
    scale_s = torch.exp(-0.5 * h * v_xi[:, 0])
    vel = state.vel_nc * scale_s[state.batch.system_n][:, None]
    ke2 = ke2 * scale_s**2
    xi = xi + 0.5 * h * v_xi
    # and back from the start to the end
    for k in range(n_chain - 1):
        damp = torch.exp(-0.125 * h * v_xi[:, k + 1])
        v_xi[:, k] = (v_xi[:, k] * damp + 0.25 * h * g(k, ke2)) * damp
    v_xi[:, -1] = v_xi[:, -1] + 0.25 * h * g(n_chain - 1, ke2)
    thermostat = {**state.thermostat, "xi": xi, "v_xi": v_xi}
    return replace(state, vel_nc=vel, thermostat=thermostat)


def init_nose_hoover_chain(
    state: MDState, *, temperature_K: float, tdamp: float = TDAMP, chain_length: int = CHAIN_LENGTH
) -> MDState:
    """Chain variables: Q₁ = N_f k_B T τ², Q_k = k_B T τ² (τ = ``tdamp`` fs)."""
    kT = units.kB * temperature_K
    tau = tdamp * units.fs
    n_sys = state.batch.n_systems
    q = torch.full((n_sys, chain_length), kT * tau**2, dtype=state.vel_nc.dtype)
    q[:, 0] = state.n_dof_s * kT * tau**2
    zeros = torch.zeros(n_sys, chain_length, dtype=state.vel_nc.dtype)
    dev = state.vel_nc.device
    therm = {"xi": zeros.to(dev), "v_xi": zeros.clone().to(dev), "q": q.to(dev)}
    return replace(state, thermostat=therm)


def nose_hoover_chain_step(
    state: MDState,
    model: torch.nn.Module,
    *,
    dt: float,
    temperature_K: float,
    tdamp: float = TDAMP,
    chain_length: int = CHAIN_LENGTH,
) -> MDState:
    """One NHC step: chain half step, velocity Verlet, chain half step.

    The chain is created on the first call (:func:`init_nose_hoover_chain`).
    """
    if "v_xi" not in state.thermostat:
        state = init_nose_hoover_chain(
            state, temperature_K=temperature_K, tdamp=tdamp, chain_length=chain_length
        )
    h = dt * units.fs
    kT = units.kB * temperature_K
    state = _nhc_half_step(state, h, kT)
    state = velocity_verlet_step(state, model, dt=dt)
    return _nhc_half_step(state, h, kT)


def nose_hoover_conserved(state: MDState, temperature_K: float) -> Tensor:
    """(S,) the NHC extended energy E_pot + K + Σ½Q v_ξ² + N_f kT ξ₁ + kT Σ_{k≥2} ξ_k."""
    kT = units.kB * temperature_K
    t = state.thermostat
    chain_ke = 0.5 * (t["q"] * t["v_xi"] ** 2).sum(dim=1)
    chain_pe = state.n_dof_s * kT * t["xi"][:, 0] + kT * t["xi"][:, 1:].sum(dim=1)
    return state.energy_s + state.kinetic_energy() + chain_ke + chain_pe


# 1 bar = 1e5 Pa in eV/Å³ (6.24e-7); 1 GPa = 1e4 bar
BAR = 1e5 * units.Pascal


def berendsen_velocity_scale(state: MDState, *, dt: float, temperature_K: float, taut: float):
    """(S,) Berendsen factors √(1 + (T₀/T - 1) dt/τ_T), clipped to [0.9, 1.1] as in ASE.

    T is each replica's instantaneous temperature over its 3N-3 degrees of freedom (ASE's
    ``atoms.get_temperature()`` with a ``FixCom`` constraint).
    """
    temp = state.temperature().clamp_min(1e-12)
    lam = torch.sqrt((1.0 + (temperature_K / temp - 1.0) * (dt / taut)).clamp_min(0.0))
    return lam.clamp(0.9, 1.1)


def instantaneous_stress(state: MDState) -> Tensor:
    """(S, 3, 3) virial stress plus the ideal-gas term -Σ m v⊗v / V, eV/Å³ (ASE sign).

    As ``atoms.get_stress(include_ideal_gas=True)``; the pressure is ``-trace / 3``,
    i.e. P = (2K/3 + virial)/V.
    """
    if state.stress_s33 is None:
        raise ValueError("the state carries no stress (start NPT with npt_berendsen_step)")
    b = state.batch
    mvv = state.mass_n[:, None, None] * state.vel_nc[:, :, None] * state.vel_nc[:, None, :]
    kin = torch.zeros_like(state.stress_s33).index_add_(0, b.system_n, mvv)
    volume = torch.linalg.det(b.cell_s33).abs()
    return state.stress_s33 - kin / volume[:, None, None]


def instantaneous_pressure_bar(state: MDState) -> Tensor:
    """(S,) instantaneous pressures (kinetic + virial), bar."""
    return -torch.diagonal(instantaneous_stress(state), dim1=1, dim2=2).sum(-1) / 3.0 / BAR


def npt_berendsen_step(
    state: MDState,
    model: torch.nn.Module,
    *,
    dt: float,
    temperature_K: float,
    taut: float = TAUT,
    pressure_bar: float = PRESSURE_BAR,
    taup: float = TAUP,
    compressibility: float = COMPRESSIBILITY,
    anisotropic: bool = ANISOTROPIC,
    barostat_every: int = 1,
) -> MDState:
    """One Berendsen NPT step over all replicas, each with its own cell.

    Units: ``dt``, ``taut`` (τ_T), ``taup`` (τ_P) in fs; ``temperature_K`` in K;
    ``pressure_bar`` (P₀) in bar (1 GPa = 1e4 bar); ``compressibility`` β in bar⁻¹ (ASE's
    ``NPTBerendsen(compressibility=...)`` unit; default 4.57e-5, water, as in the ASE
    documentation — solids are ~100x less compressible, which only slows the coupling).
    Internally P and β are in eV/Å³ and Å³/eV (``BAR``). ``taup=inf`` or
    ``compressibility=0`` fixes the cells (NVT Berendsen).

    Following ``ase.md.nptberendsen.NPTBerendsen.step`` exactly:

    1. v ← λ v, λ = :func:`berendsen_velocity_scale`;
    2. with P = -tr(σ)/3 from σ = virial stress at x_t + ideal-gas term of the scaled
       velocities (:func:`instantaneous_stress`), μ = 1 - (β Δt/(3 τ_P)) (P₀ - P) — the
       first-order form of [1 - (β Δt/τ_P)(P₀ - P)]^{1/3}, as ASE — scales the cell and
       the positions (fractional coordinates kept); ``anisotropic=True`` instead scales
       cell vector i by μ_i from P_ii = -σ_ii (``Inhomogeneous_NPTBerendsen``). Forces
       and stress are re-evaluated at the scaled positions (as ASE does);
    3. velocity Verlet: half kick, centre-of-mass velocity removed, drift, forces + stress
       (one autograd pass), half kick.

    With ``barostat_every=k`` step 2 is done every k-th step only, with Δt = k dt, which
    saves its extra force evaluation on the other steps. Periodic (3-D) replicas only.
    """
    b = state.batch
    if not bool(b.pbc_s3.all()):
        raise ValueError(
            "NPT needs every replica periodic in 3-D with a cell; molecules (no cell) "
            "cannot be simulated at constant pressure — use an NVT/NVE integrator"
        )
    if barostat_every < 1:
        raise ValueError("barostat_every must be positive")
    if state.stress_s33 is None:  # first call: the stress at the start positions
        state = replace(state, stress_s33=torch.zeros_like(b.cell_s33))
        state = _forces(state, model, b.pos_nc, b.cell_s33)
    h = dt * units.fs
    sys_n = state.batch.system_n
    lam = berendsen_velocity_scale(state, dt=dt, temperature_K=temperature_K, taut=taut)
    state = replace(state, vel_nc=state.vel_nc * lam[sys_n][:, None])

    coupled = compressibility != 0 and taup != float("inf")
    if coupled and state.step % barostat_every == 0:
        sigma = instantaneous_stress(state)
        rate = (barostat_every * dt / taup) * (compressibility / BAR) / 3.0
        p0 = pressure_bar * BAR
        cell = state.batch.cell_s33
        if anisotropic:
            p_ii = -torch.diagonal(sigma, dim1=1, dim2=2)  # (S, 3)
            mu = 1.0 - rate * (p0 - p_ii)
            new_cell = cell * mu[:, :, None]  # row i (cell vector i) times μ_i
        else:
            p = -torch.diagonal(sigma, dim1=1, dim2=2).sum(-1) / 3.0
            mu = 1.0 - rate * (p0 - p)
            new_cell = cell * mu[:, None, None]
        # x_new = frac · new_cell = x · cell⁻¹ · new_cell (ASE's set_cell(scale_atoms=True))
        m_s33 = torch.linalg.solve(cell, new_cell)
        pos = torch.einsum("nc,ncd->nd", state.batch.pos_nc, m_s33[sys_n])
        state = _forces(state, model, pos, new_cell)

    inv_m = (1.0 / state.mass_n)[:, None]
    vel = state.vel_nc + 0.5 * h * state.forces_nc * inv_m
    vel = remove_com_velocity(vel, state.mass_n, sys_n, state.batch.n_systems)
    state = _forces(state, model, state.batch.pos_nc + h * vel)
    vel = vel + 0.5 * h * state.forces_nc * inv_m
    return replace(state, vel_nc=vel, step=state.step + 1)
