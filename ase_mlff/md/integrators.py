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
"""

from __future__ import annotations

from dataclasses import replace

import torch
from ase import units
from torch import Tensor

from ase_mlff.md.state import MDState, randn_per_replica, remove_com_velocity
from ase_mlff.models.base import compute_properties


def _forces(state: MDState, model: torch.nn.Module, pos_nc: Tensor) -> MDState:
    """Move the replicas to ``pos_nc``, rebuild their graph, evaluate energy and forces."""
    batch = state.batch.with_positions(pos_nc)
    out = compute_properties(model, batch, forces=True)
    return replace(
        state, batch=batch, forces_nc=out["forces"].to(pos_nc.dtype), energy_s=out["energy"]
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
    friction: float = 0.01,
) -> MDState:
    """One Langevin step, B A O A B; ``friction`` γ in fs⁻¹.

    O: v ← c₁ v + √((1 - c₁²) k_B T / m) ξ with c₁ = exp(-γ dt), ξ from each replica's own
    generator, then the centre-of-mass velocity is removed.
    """
    h = dt * units.fs
    inv_m = (1.0 / state.mass_n)[:, None]
    c1 = torch.exp(torch.tensor(-friction * dt, dtype=state.vel_nc.dtype))
    sigma = torch.sqrt((1 - c1**2) * units.kB * temperature_K * inv_m)
    vel = state.vel_nc + 0.5 * h * state.forces_nc * inv_m  # B
    pos = state.batch.pos_nc + 0.5 * h * vel  # A
    vel = c1 * vel + sigma * randn_per_replica(state)  # O
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
    state: MDState, *, temperature_K: float, tdamp: float = 50.0, chain_length: int = 3
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
    tdamp: float = 50.0,
    chain_length: int = 3,
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
