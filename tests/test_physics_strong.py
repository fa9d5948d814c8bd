"""The batched integrators against independent references, sized so that a wrong constant
fails (see docs/testing.md, "Mutations the suite catches"):

- Langevin BAOAB on free particles: the velocity autocorrelation decays as exp(-γt)
  (the Ornstein-Uhlenbeck process), within a tolerance derived from the sample size;
- Nosé-Hoover (chain of length 1) on free particles started at 0.8 T: T(t) follows the
  thermostat's equations of motion integrated by scipy, and its period is the analytic
  2πτ/√2 of the project's convention Q₁ = N_f k_B T τ²;
- velocity Verlet on aspirin from the same velocities as ASE's ``VelocityVerlet`` with
  the same potential: the same trajectory to 1e-8 Å (masses, half kicks, units).
"""

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.md.verlet import VelocityVerlet
from scipy.integrate import solve_ivp

from ase_mlff.calculators import MLFFCalculator
from ase_mlff.data.io import SHIPPED_DIR
from ase_mlff.md import (
    init_state,
    langevin_baoab_step,
    nose_hoover_chain_step,
    velocity_verlet_step,
)
from ase_mlff.models.base import Potential, scatter_sum
from tests.test_md_stability import TemplateSprings

torch.set_num_threads(1)


class FreeParticles(Potential):
    """E = 0 for every system, written so that it still depends on the positions (the
    forces come from autograd and are exactly zero)."""

    def __init__(self) -> None:
        super().__init__()
        self.cutoff, self.config = 0.0, {"name": "free_particles"}

    def forward(self, batch):
        return scatter_sum(0.0 * batch.pos_nc.sum(dim=1), batch.system_n, batch.n_systems)


def _gas(n_replicas: int, n_each: int, seed: int = 0) -> list[Atoms]:
    """Replicas of H and C atoms scattered in a box (no cell: nothing interacts)."""
    rng = np.random.default_rng(seed)
    symbols = f"H{n_each // 2}C{n_each - n_each // 2}"
    return [
        Atoms(symbols, positions=rng.uniform(0.0, 100.0, (n_each, 3))) for _ in range(n_replicas)
    ]


def test_langevin_velocity_autocorrelation_decays_at_the_friction_rate():
    """Free particles under BAOAB: the O step is the exact Ornstein-Uhlenbeck update, so
    v(t) = e^{-γt} v(0) + noise independent of v(0) and the momentum-weighted
    autocorrelation C(t) = Σ m v(0)·v(t) / Σ m v(0)² has mean e^{-γt} exactly. Given v(0)
    (Σ m v(0)² = N_f k_B T by construction), C(t) - e^{-γt} is Gaussian with standard
    deviation σ(t) = √((1 - e^{-2γt}) / N_f); we allow 5σ (N_f ≈ 12,000: σ ≤ 0.009, while a
    friction off by 2x moves C(100 fs) from 0.37 to 0.14)."""
    model = FreeParticles()
    images = _gas(n_replicas=4, n_each=1000)
    # dt ≠ 1 fs, so that γ dt and γ / dt differ (c1 = exp(-γ dt))
    gamma, dt, temp = 0.01, 0.5, 300.0  # fs⁻¹, fs, K
    state = init_state(model, images, temperature_K=temp, seed=0)
    v0 = state.vel_nc.clone()
    mv0 = state.mass_n[:, None] * v0
    norm = float((mv0 * v0).sum())
    n_dof = float(state.n_dof_s.sum())
    assert norm == pytest.approx(n_dof * units.kB * temp, rel=1e-10)
    lags = {20: None, 50: None, 100: None, 200: None, 400: None}
    for n in range(1, max(lags) + 1):
        state = langevin_baoab_step(state, model, dt=dt, temperature_K=temp, friction=gamma)
        if n in lags:
            lags[n] = float((mv0 * state.vel_nc).sum()) / norm
    for n, c in lags.items():
        t = n * dt
        expected = np.exp(-gamma * t)
        sigma = np.sqrt((1.0 - np.exp(-2 * gamma * t)) / n_dof)
        assert abs(c - expected) < 5 * sigma, (t, c, expected, sigma)
    # the steady state is the target temperature (fluctuation-dissipation of the O step)
    assert float(state.temperature().mean()) == pytest.approx(temp, rel=0.05)


def test_langevin_baoab_steps_by_hand_with_the_same_noise():
    """Three BAOAB steps of two aspirin replicas written out here, with the noise computed
    here from each replica's key and draw count (SplitMix64 words in Python integers,
    Box-Muller in numpy: tests/test_md_noise.py's reference) and the forces from ASE
    (MLFFCalculator):
    B v += h F/2m; A x += h v/2; O v = c₁ v + √((1 - c₁²) k_B T/m) ξ, c₁ = e^{-γ dt}, then
    each replica's centre-of-mass velocity removed; A; forces; B. Without ``friction`` the
    step uses the papers' γ = 0.01 fs⁻¹. Positions and velocities agree to 1e-10."""
    ref = ase.io.read(SHIPPED_DIR / "aspirin_md17_order.xyz")
    model = TemplateSprings([ref], [20.0])
    starts = []
    for seed in (1, 2):
        a = ref.copy()
        a.rattle(0.05, seed=seed)
        starts.append(a)
    dt, temp, gamma = 0.5, 500.0, 0.01
    state = init_state(model, starts, temperature_K=temp, seed=3)
    from tests.test_md_noise import reference_normals

    keys = state.noise_key_s.tolist()
    assert state.noise_count_s.tolist() == [1, 1]
    n = len(ref)
    m = np.tile(ref.get_masses(), 2)[:, None]
    x = state.batch.pos_nc.numpy().copy()
    v = state.vel_nc.numpy().copy()
    calc = MLFFCalculator(model)

    def forces(pos):
        out = []
        for r in range(2):
            a = starts[r].copy()
            a.positions = pos[r * n : (r + 1) * n]
            a.calc = calc
            out.append(a.get_forces())
        return np.concatenate(out)

    f = forces(x)
    h = dt * units.fs
    c1 = np.exp(-gamma * dt)
    sigma = np.sqrt((1 - c1**2) * units.kB * temp / m)
    for k in range(3):
        v = v + 0.5 * h * f / m
        x = x + 0.5 * h * v
        xi = np.concatenate([reference_normals(key, 1 + k, n) for key in keys])
        v = c1 * v + sigma * xi
        for r in range(2):
            sl = slice(r * n, (r + 1) * n)
            v[sl] -= (m[sl] * v[sl]).sum(axis=0) / m[sl].sum()
        x = x + 0.5 * h * v
        f = forces(x)
        v = v + 0.5 * h * f / m
        state = langevin_baoab_step(state, model, dt=dt, temperature_K=temp)
        assert state.step == k + 1
        np.testing.assert_allclose(state.batch.pos_nc.numpy(), x, rtol=0, atol=1e-10)
        np.testing.assert_allclose(state.vel_nc.numpy(), v, rtol=0, atol=1e-10)
        np.testing.assert_allclose(state.forces_nc.numpy(), f, rtol=0, atol=1e-9)
    assert np.abs(x - np.concatenate([a.positions for a in starts])).max() > 1e-3


def _nh_reference(tau_fs: float, x0: float, t_fs: np.ndarray) -> np.ndarray:
    """T(t)/T₀ of free particles under one Nosé-Hoover thermostat with Q = N_f k_B T₀ τ²:
    dK/dt = -2 v_ξ K and Q dv_ξ/dt = 2K - N_f k_B T₀, i.e. with x = T/T₀
    dx/dt = -2 v_ξ x, dv_ξ/dt = (x - 1)/τ² (time in fs), integrated by scipy."""
    sol = solve_ivp(
        lambda _, y: [-2.0 * y[1] * y[0], (y[0] - 1.0) / tau_fs**2],
        (0.0, float(t_fs[-1])),
        [x0, 0.0],
        t_eval=t_fs,
        method="DOP853",
        rtol=1e-11,
        atol=1e-13,
    )
    return sol.y[0]


def test_nose_hoover_temperature_oscillation_matches_the_thermostat_equations():
    """Chain length 1 (plain Nosé-Hoover), free particles started at 0.8 T₀, v_ξ = 0.
    Linearised, x = T/T₀ obeys ẍ = -2(x - 1)/τ², period 2πτ/√2 (222 fs at τ = 50 fs);
    a Q₁ four times too large doubles it. The trajectory must follow scipy's solution of
    the thermostat equations to the Trotter splitting error (~(dt/τ)² ≈ 1e-4)."""
    model = FreeParticles()
    target, tau, dt, n_steps = 500.0, 50.0, 0.5, 900
    state = init_state(model, _gas(1, 20), temperature_K=0.8 * target, seed=0)
    x = [float(state.temperature()[0]) / target]
    for _ in range(n_steps):
        state = nose_hoover_chain_step(
            state, model, dt=dt, temperature_K=target, tdamp=tau, chain_length=1
        )
        x.append(float(state.temperature()[0]) / target)
    x = np.array(x)
    t = np.arange(n_steps + 1) * dt
    ref = _nh_reference(tau, 0.8, t)
    np.testing.assert_allclose(x, ref, atol=1e-4)
    # the period: t = 0 is a minimum of T(t) (v_ξ = 0); the next one, refined by a parabola
    k = int(np.argmin(x[50:-50])) + 50
    y0, y1, y2 = x[k - 1 : k + 2]
    t_min = t[k] + 0.5 * dt * (y0 - y2) / (y0 - 2 * y1 + y2)
    assert t_min == pytest.approx(2 * np.pi * tau / np.sqrt(2), rel=0.01)
    assert x.max() > 1.15  # it does oscillate about T₀ (not merely relax)


def _nhc_reference(y0, q, n_dof, kT, t_end, t_eval):
    """The Nosé-Hoover chain equations of motion for free particles (Martyna, Klein &
    Tuckerman 1992), K the kinetic energy, all in ASE units, integrated by scipy:
    dK/dt = -2 v₁ K; dξ_k/dt = v_k; dv₁/dt = (2K - N_f kT)/Q₁ - v₁ v₂;
    dv_k/dt = (Q_{k-1} v_{k-1}² - kT)/Q_k - v_k v_{k+1}; dv_M/dt = (Q_{M-1} v_{M-1}² - kT)/Q_M."""
    m = len(q)

    def rhs(_, y):
        k, v = y[0], y[1 + m :]
        dv = np.empty(m)
        dv[0] = (2 * k - n_dof * kT) / q[0]
        dv[1:] = (q[:-1] * v[:-1] ** 2 - kT) / q[1:]
        dv[:-1] -= v[:-1] * v[1:]
        return np.concatenate([[-2 * v[0] * k], v, dv])

    sol = solve_ivp(rhs, (0.0, t_end), y0, t_eval=t_eval, method="DOP853", rtol=1e-11, atol=1e-14)
    return sol.y


def test_nose_hoover_chain_of_three_follows_the_chain_equations():
    """Chain length 3, free particles started at 0.8 T₀: T(t), every ξ_k and v_ξk follow
    scipy's solution of the chain equations (Q₁ = N_f k_B T τ², Q_k = k_B T τ²) to the
    Trotter splitting error, and the chain is really excited (v_ξ3 ≠ 0)."""
    model = FreeParticles()
    target, tau, dt, n_steps = 500.0, 20.0, 0.25, 1200
    state = init_state(model, _gas(1, 30), temperature_K=0.8 * target, seed=1)
    kT = units.kB * target
    n_dof = float(state.n_dof_s[0])
    q = np.array([n_dof * kT, kT, kT]) * (tau * units.fs) ** 2
    k0 = float(state.kinetic_energy()[0])
    t = np.arange(n_steps + 1) * dt * units.fs
    ref = _nhc_reference(np.concatenate([[k0], np.zeros(6)]), q, n_dof, kT, t[-1], t)
    got = [np.concatenate([[k0], np.zeros(6)])]
    for _ in range(n_steps):
        state = nose_hoover_chain_step(
            state, model, dt=dt, temperature_K=target, tdamp=tau, chain_length=3
        )
        th = state.thermostat
        got.append(
            np.concatenate(
                [[float(state.kinetic_energy()[0])], th["xi"][0].numpy(), th["v_xi"][0].numpy()]
            )
        )
    got = np.array(got).T
    np.testing.assert_allclose(state.thermostat["q"][0].numpy(), q, rtol=1e-12)
    np.testing.assert_allclose(got[0] / k0, ref[0] / k0, atol=2e-4)  # T(t)/T(0)
    for row in range(1, 7):  # ξ_k and v_ξk, relative to their range
        scale = np.abs(ref[row]).max()
        np.testing.assert_allclose(got[row], ref[row], atol=2e-3 * scale, err_msg=str(row))
    assert np.abs(ref[6]).max() > 0.05 * np.abs(ref[4]).max()  # the third link moves


def test_velocity_verlet_matches_ase_on_aspirin():
    """100 NVE steps of aspirin with harmonic springs, same start and velocities as ASE's
    VelocityVerlet on the same potential (MLFFCalculator): same positions to 1e-8 Å.
    Tests the masses (ase.data.atomic_masses per element), both half kicks and the
    femtosecond/ASE-time conversion; swapping the C and O masses moves atoms by ~0.1 Å."""
    start = ase.io.read(SHIPPED_DIR / "aspirin_md17_order.xyz")
    start.rattle(0.05, seed=1)  # off the springs' minimum: real forces from step 0
    model = TemplateSprings([ase.io.read(SHIPPED_DIR / "aspirin_md17_order.xyz")], [20.0])
    state = init_state(model, [start], temperature_K=500.0, seed=0)
    atoms = start.copy()
    atoms.set_velocities(state.vel_nc.numpy())  # Å per ASE time unit, as ASE
    atoms.calc = MLFFCalculator(model)
    np.testing.assert_array_equal(state.mass_n.numpy(), atoms.get_masses())
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    for _ in range(100):
        state = velocity_verlet_step(state, model, dt=0.5)
    dyn.run(100)
    moved = np.abs(atoms.positions - start.positions).max()
    assert moved > 0.2  # the molecule did move
    np.testing.assert_allclose(state.batch.pos_nc.numpy(), atoms.positions, rtol=0, atol=1e-8)
    np.testing.assert_allclose(state.vel_nc.numpy(), atoms.get_velocities(), rtol=0, atol=1e-8)
    e_ase = atoms.get_potential_energy() + atoms.get_kinetic_energy()
    e_ours = float(state.energy_s[0] + state.kinetic_energy()[0])
    assert e_ours == pytest.approx(e_ase, abs=1e-8)
