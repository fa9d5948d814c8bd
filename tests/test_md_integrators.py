"""Batched integrators: NVE conservation, thermostat temperatures, batched == separate."""

import ase.io
import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.neighborlist import natural_cutoffs, neighbor_list

from ase_mlff.data.io import SHIPPED_DIR
from ase_mlff.graph import Batch
from ase_mlff.md import (
    init_state,
    langevin_baoab_step,
    nose_hoover_chain_step,
    nose_hoover_conserved,
    velocity_verlet_step,
)
from ase_mlff.models.base import Potential, scatter_sum

torch.set_num_threads(1)


class ElasticNetwork(Potential):
    """A smooth test potential: harmonic springs (k = 20 eV/Å²) on the covalent bonds
    of the start structures, E = ½k Σ (r - r0)²; bonds are fixed global index pairs."""

    def __init__(self, images, k: float = 20.0) -> None:
        super().__init__()
        self.cutoff = 2.0
        self.config = {"name": "elastic_network"}
        pairs, r0, offset = [], [], 0
        for a in images:
            i, j, d = neighbor_list("ijd", a, natural_cutoffs(a))
            keep = i < j
            pairs.append(np.stack([i[keep], j[keep]]) + offset)
            r0.append(d[keep])
            offset += len(a)
        self.register_buffer("pairs", torch.as_tensor(np.concatenate(pairs, axis=1)))
        self.register_buffer("r0", torch.as_tensor(np.concatenate(r0)))
        self.k = k

    def forward(self, batch: Batch) -> torch.Tensor:
        i, j = self.pairs
        r = (batch.pos_nc[j] - batch.pos_nc[i]).norm(dim=1)
        e = 0.5 * self.k * (r - self.r0.to(r.dtype)) ** 2
        return scatter_sum(e, batch.system_n[i], batch.n_systems)


def _aspirins(n):
    a = ase.io.read(SHIPPED_DIR / "aspirin_md17_order.xyz")
    return [a.copy() for _ in range(n)]


def test_nve_conserves_energy():
    images = _aspirins(2)
    model = ElasticNetwork(images)
    state = init_state(model, images, temperature_K=300, seed=1)
    e0 = state.energy_s + state.kinetic_energy()
    drift = []
    for _ in range(400):
        state = velocity_verlet_step(state, model, dt=0.25)
        drift.append((state.energy_s + state.kinetic_energy() - e0).abs())
    # bound: |ΔE_total| < 2e-3 eV over 100 fs (kinetic energy ≈ 0.74 eV per replica)
    assert float(torch.stack(drift).max()) < 2e-3
    assert float(state.kinetic_energy().min()) > 0.1


def test_initial_velocities_exact_temperature_no_com_motion():
    images = _aspirins(3)
    model = ElasticNetwork(images)
    state = init_state(model, images, temperature_K=500, seed=0)
    np.testing.assert_allclose(state.temperature().numpy(), 500.0, rtol=1e-10)
    p = scatter_sum(state.mass_n[:, None] * state.vel_nc, state.batch.system_n, 3)
    assert float(p.abs().max()) < 1e-10


@pytest.mark.parametrize("integrator", ["langevin", "nose_hoover"])
def test_thermostat_holds_temperature(integrator):
    n_rep, target = 16, 500.0
    images = _aspirins(n_rep)
    model = ElasticNetwork(images)
    state = init_state(model, images, temperature_K=100.0, seed=3)  # start far from target
    temps, conserved = [], []
    for step in range(1200):
        if integrator == "langevin":
            state = langevin_baoab_step(state, model, dt=0.5, temperature_K=target, friction=0.05)
        else:
            state = nose_hoover_chain_step(state, model, dt=0.5, temperature_K=target, tdamp=10.0)
            conserved.append(nose_hoover_conserved(state, target))
        if step >= 400:
            temps.append(state.temperature())
    mean_t = float(torch.stack(temps).mean())
    # standard error of the mean ≈ 1-2 % here; 5 % is a > 3σ bound
    assert abs(mean_t - target) < 0.05 * target, mean_t
    if conserved:
        c = torch.stack(conserved)
        assert float((c - c[0]).abs().max()) < 5e-3


def test_batched_equals_separate_runs():
    images = [*_aspirins(1), molecule("CH3CH2OH"), molecule("C6H6")]
    for a in images[1:]:
        a.rattle(0.02, seed=1)
    model = ElasticNetwork(images)
    batched = init_state(model, images, temperature_K=400, seed=11)
    for _ in range(40):
        batched = langevin_baoab_step(batched, model, dt=0.5, temperature_K=400)
    start = 0
    for r, a in enumerate(images):
        single_model = ElasticNetwork([a])
        s = init_state(single_model, [a], temperature_K=400, seed=11, replica_ids=[r])
        for _ in range(40):
            s = langevin_baoab_step(s, single_model, dt=0.5, temperature_K=400)
        np.testing.assert_allclose(
            batched.batch.pos_nc[start : start + len(a)].numpy(),
            s.batch.pos_nc.numpy(),
            atol=1e-10,
        )
        start += len(a)


def test_initial_velocities_are_maxwell_boltzmann_for_each_element():
    """Equipartition at the start: in a gas of H, C and O atoms the mean kinetic energy per
    atom is the same for every element, (3/2) k_B T · N_f/(3N), within 4σ (σ = √(3/2) k_B T
    /√n_el per element); a velocity scale that is wrong in the mass (√(kT·m), kT/m, ...)
    gives H and O energies apart by ~16x even after the rescale to exactly T. The
    temperature is also ASE's (``get_temperature`` with ``FixCom``)."""
    from ase import Atoms, units
    from ase.constraints import FixCom

    from tests.test_physics_strong import FreeParticles

    rng = np.random.default_rng(0)
    symbols = "H1000C1000O1000"
    images = [Atoms(symbols, positions=rng.uniform(0, 80, (3000, 3))) for _ in range(2)]
    temp = 400.0
    state = init_state(FreeParticles(), images, temperature_K=temp, seed=2)
    np.testing.assert_allclose(state.temperature().numpy(), temp, rtol=1e-10)
    ke_n = 0.5 * state.mass_n * (state.vel_nc**2).sum(dim=1)
    z = state.batch.numbers_n
    kt = units.kB * temp
    expected = 1.5 * kt * (3 * 3000 - 3) / (3 * 3000)
    for el in (1, 6, 8):
        ke = ke_n[z == el].numpy()
        sigma = np.sqrt(1.5) * kt / np.sqrt(len(ke))
        assert abs(ke.mean() - expected) < 4 * sigma, (el, ke.mean() / expected)
    a = images[1].copy()
    a.set_velocities(state.vel_nc[3000:].numpy())
    a.set_constraint(FixCom())
    assert a.get_temperature() == pytest.approx(float(state.temperature()[1]), rel=1e-10)


def test_replica_streams_depend_only_on_seed_and_replica_id():
    """A replica's initial velocities (and noise) come from its own stream: the same
    replica id gives the same velocities alone or in any batch; another id or seed does not.
    A one-atom replica counts one degree of freedom (no division by zero)."""
    images = _aspirins(3)
    model = ElasticNetwork(images)
    batch = init_state(model, images, temperature_K=300, seed=5, replica_ids=[7, 3, 9])
    alone = init_state(
        ElasticNetwork(images[:1]), images[:1], temperature_K=300, seed=5, replica_ids=[3]
    )
    n = len(images[0])
    np.testing.assert_array_equal(batch.vel_nc[n : 2 * n].numpy(), alone.vel_nc.numpy())
    assert not np.allclose(batch.vel_nc[:n].numpy(), batch.vel_nc[n : 2 * n].numpy())
    other = init_state(
        ElasticNetwork(images[:1]), images[:1], temperature_K=300, seed=6, replica_ids=[3]
    )
    assert not np.allclose(other.vel_nc.numpy(), alone.vel_nc.numpy())
    from ase import Atoms

    from tests.test_physics_strong import FreeParticles

    one = init_state(FreeParticles(), [Atoms("Ar", positions=[[0, 0, 0]])], temperature_K=0, seed=0)
    assert float(one.n_dof_s[0]) == 1.0 and float(one.temperature()[0]) == 0.0
    # a cold start is still exactly at its temperature (no threshold below which it is 0 K)
    cold = init_state(model, images, temperature_K=0.5, seed=5)
    np.testing.assert_allclose(cold.temperature().numpy(), 0.5, rtol=1e-10)


def test_selecting_replicas_slices_every_declared_field():
    """MDState.select keeps exactly the chosen replicas' atoms in every per-atom field, their
    entries in every per-replica field (energy, stress, thermostat, random streams), and a
    batch of those replicas only; a field added to ATOM_FIELDS/SYSTEM_FIELDS follows."""
    from dataclasses import fields

    from ase_mlff.md.state import ATOM_FIELDS, SYSTEM_FIELDS

    images = [*_aspirins(1), molecule("CH3CH2OH"), molecule("C6H6")]
    model = ElasticNetwork(images)
    state = init_state(model, images, temperature_K=300, seed=1)
    state = nose_hoover_chain_step(state, model, dt=0.5, temperature_K=300)  # a thermostat
    state.stress_s33 = torch.arange(27, dtype=torch.float64).reshape(3, 3, 3)
    keep = torch.tensor([True, False, True])
    sub = state.select(keep)
    atoms = np.r_[0:21, 30:42]  # aspirin (21) and benzene (12); ethanol (9) dropped
    for f in ATOM_FIELDS:
        np.testing.assert_array_equal(getattr(sub, f).numpy(), getattr(state, f)[atoms].numpy())
    for f in SYSTEM_FIELDS:
        np.testing.assert_array_equal(getattr(sub, f).numpy(), getattr(state, f)[[0, 2]].numpy())
    for k, v in state.thermostat.items():
        np.testing.assert_array_equal(sub.thermostat[k].numpy(), v[[0, 2]].numpy())
    np.testing.assert_array_equal(sub.batch.pos_nc.numpy(), state.batch.pos_nc[atoms].numpy())
    assert sub.batch.n_atoms_s.tolist() == [21, 12] and sub.step == state.step
    assert set(ATOM_FIELDS) | set(SYSTEM_FIELDS) | {
        "batch",
        "step",
        "thermostat",
    } == {f.name for f in fields(type(state))}  # every field declared: none forgotten


def test_replica_streams_follow_the_documented_seed_recipe():
    """Replica r's key is SeedSequence([seed, r]).generate_state(1, uint64)[0] as an int64
    bit pattern (numpy, computed here), whatever else is in the batch; its draws are
    counted per replica; a state made without streams still selects replicas but refuses
    to draw noise."""
    from ase_mlff.md.state import MDState, draw_normals

    images = _aspirins(3)
    s = init_state(ElasticNetwork(images), images, temperature_K=300, seed=7, replica_ids=[4, 0, 9])
    for r, key in zip([4, 0, 9], s.noise_key_s.tolist(), strict=True):
        word = int(np.random.SeedSequence([7, r]).generate_state(1, dtype=np.uint64)[0])
        assert key % (1 << 64) == word, r
    assert s.noise_count_s.tolist() == [1, 1, 1]  # the Maxwell-Boltzmann draw
    s = langevin_baoab_step(s, ElasticNetwork(images), dt=0.5, temperature_K=300)
    assert s.noise_count_s.tolist() == [2, 2, 2]
    bare = MDState(
        batch=s.batch, vel_nc=s.vel_nc, mass_n=s.mass_n, forces_nc=s.forces_nc, energy_s=s.energy_s
    )
    one = bare.select(torch.tensor([False, True, False]))
    assert one.noise_key_s is None and one.batch.n_systems == 1
    with pytest.raises(ValueError, match="no random streams"):
        draw_normals(one)
