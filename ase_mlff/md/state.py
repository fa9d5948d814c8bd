"""The state of R replicas integrated together, and their initial velocities.

Units are ASE's: positions Å, masses amu, energies eV, time in ASE units (``ase.units.fs``
per femtosecond), so velocities are Å per ASE time unit and ``a = F / m`` needs no factor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from ase import Atoms, units
from ase.data import atomic_masses
from torch import Tensor

from ase_mlff.graph.batch import Batch
from ase_mlff.md.noise import DRAW_BLOCK, replica_keys, replica_normals
from ase_mlff.models.base import compute_properties, scatter_sum

#: the :class:`MDState` fields indexed by atom (first dimension = atoms of the batch)
ATOM_FIELDS = ("vel_nc", "mass_n", "forces_nc")
#: the fields indexed by replica (first dimension = replicas; None allowed); every
#: ``thermostat`` tensor is per replica as well
SYSTEM_FIELDS = ("energy_s", "stress_s33", "noise_key_s", "noise_count_s")


@dataclass
class MDState:
    """Positions live in ``batch``; everything else is per atom (n) or per replica (s), as
    declared in :data:`ATOM_FIELDS` and :data:`SYSTEM_FIELDS`, so that :meth:`select` (and
    anything else that slices replicas) is generic over the fields.

    Attributes:
        batch: the replicas as one :class:`~ase_mlff.graph.Batch` (positions, graph).
        vel_nc: (N, 3) velocities, Å per ASE time unit.
        mass_n: (N,) masses, amu.
        forces_nc: (N, 3) forces at the current positions, eV/Å.
        energy_s: (S,) potential energies, eV.
        step: MD steps taken.
        noise_key_s, noise_count_s: (S,) int64 each replica's random stream and the
            draws it has taken (:mod:`ase_mlff.md.noise`), so a replica's noise does not
            depend on which other replicas share its batch; None in a state made without
            streams (no stochastic integrator can run it).
        thermostat: integrator-specific per-replica tensors (e.g. Nosé-Hoover chain).
        stress_s33: (S, 3, 3) virial stress at the current positions and cells, eV/Å³, ASE
            sign convention (no kinetic term); None unless the integrator needs it (NPT),
            in which case every force evaluation also gives it. Each replica's cell is
            ``batch.cell_s33[s]`` and changes under a barostat.
    """

    batch: Batch
    vel_nc: Tensor
    mass_n: Tensor
    forces_nc: Tensor
    energy_s: Tensor
    step: int = 0
    thermostat: dict[str, Tensor] = field(default_factory=dict)
    stress_s33: Tensor | None = None
    noise_key_s: Tensor | None = None
    noise_count_s: Tensor | None = None

    @property
    def n_dof_s(self) -> Tensor:
        """(S,) degrees of freedom: 3N - 3 (centre-of-mass motion removed)."""
        return (3 * self.batch.n_atoms_s - 3).clamp_min(1).to(self.vel_nc.dtype)

    def kinetic_energy(self) -> Tensor:
        """(S,) kinetic energies, eV."""
        ke_n = 0.5 * self.mass_n * (self.vel_nc**2).sum(dim=1)
        return scatter_sum(ke_n, self.batch.system_n, self.batch.n_systems)

    def temperature(self) -> Tensor:
        """(S,) instantaneous temperatures, K."""
        return 2.0 * self.kinetic_energy() / (self.n_dof_s * units.kB)

    def select(self, keep_s: Tensor) -> MDState:
        """The state of the replicas where ``keep_s`` (S,) is True, every declared field
        sliced (the batch and its graph rebuilt for the kept replicas)."""
        b = self.batch
        keep_n = keep_s[b.system_n]
        # with a skin, the kept replicas' graph is built where the old one was
        built_at = b.pos_nc if b.ref_pos_nc is None else b.ref_pos_nc
        batch = Batch.from_arrays(
            b.numbers_n[keep_n],
            built_at[keep_n],
            b.n_atoms_s[keep_s],
            b.cell_s33[keep_s],
            b.pbc_s3[keep_s],
            cutoff=b.cutoff,
            dtype=b.dtype,
            device=b.device,
            skin=b.skin,
        )
        if b.ref_pos_nc is not None:
            batch = batch.with_positions(b.pos_nc[keep_n])
        changes = {f: getattr(self, f)[keep_n] for f in ATOM_FIELDS}
        for f in SYSTEM_FIELDS:
            v = getattr(self, f)
            changes[f] = None if v is None else v[keep_s]
        return replace(
            self,
            batch=batch,
            thermostat={k: v[keep_s] for k, v in self.thermostat.items()},
            **changes,
        )


def concat_states(first: MDState, second: MDState) -> MDState:
    """The replicas of ``first`` followed by those of ``second`` in one state (replicas
    entering a running batch: ``run_md(batch_size=...)``), at ``first``'s step. With a
    Verlet skin, each part's graph is rebuilt where it was built, so no replica's graph
    changes by being joined."""
    a, b = first.batch, second.batch
    if a.skin != b.skin or a.cutoff != b.cutoff or a.dtype != b.dtype:
        raise ValueError("replicas joined in one batch need the same cutoff, skin and dtype")
    if set(first.thermostat) != set(second.thermostat) or (first.stress_s33 is None) != (
        second.stress_s33 is None
    ):
        raise ValueError("replicas joined in one batch need the same integrator")

    def built_at(x: Batch) -> Tensor:
        return x.pos_nc if x.ref_pos_nc is None else x.ref_pos_nc

    batch = Batch.from_arrays(
        torch.cat([a.numbers_n, b.numbers_n]),
        torch.cat([built_at(a), built_at(b)]),
        torch.cat([a.n_atoms_s, b.n_atoms_s]),
        torch.cat([a.cell_s33, b.cell_s33]),
        torch.cat([a.pbc_s3, b.pbc_s3]),
        cutoff=a.cutoff,
        dtype=a.dtype,
        device=a.device,
        skin=a.skin,
    )
    if a.ref_pos_nc is not None:
        batch = batch.with_positions(torch.cat([a.pos_nc, b.pos_nc]))
    changes = {f: torch.cat([getattr(first, f), getattr(second, f)]) for f in ATOM_FIELDS}
    for f in SYSTEM_FIELDS:
        v, w = getattr(first, f), getattr(second, f)
        if (v is None) != (w is None):
            raise ValueError(f"replicas joined in one batch need {f} on both sides or neither")
        changes[f] = None if v is None else torch.cat([v, w])
    return replace(
        first,
        batch=batch,
        thermostat={k: torch.cat([v, second.thermostat[k]]) for k, v in first.thermostat.items()},
        **changes,
    )


def remove_com_velocity(vel_nc: Tensor, mass_n: Tensor, system_n: Tensor, n_sys: int) -> Tensor:
    """Subtract each replica's centre-of-mass velocity (vectorised over replicas)."""
    p_s = scatter_sum(mass_n[:, None] * vel_nc, system_n, n_sys)
    m_s = scatter_sum(mass_n, system_n, n_sys)
    return vel_nc - (p_s / m_s[:, None])[system_n]


def draw_normals(state: MDState) -> tuple[Tensor, MDState]:
    """(N, 3) standard normals, each replica's block its next draw from its own stream
    (:func:`~ase_mlff.md.noise.replica_normals`), and the state with the draws counted."""
    if state.noise_key_s is None or state.noise_count_s is None:
        raise ValueError("this state has no random streams (made without init_state)")
    b = state.batch
    xi = replica_normals(
        state.noise_key_s, state.noise_count_s, b.system_n, b.n_atoms_s, state.vel_nc.dtype
    )
    return xi, replace(state, noise_count_s=state.noise_count_s + 1)


def init_state(
    model: torch.nn.Module,
    images: Sequence[Atoms],
    *,
    temperature_K: float,
    seed: int,
    replica_ids: Sequence[int] | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    skin: float = 0.0,
) -> MDState:
    """Replicas from ASE structures with Maxwell-Boltzmann velocities at ``temperature_K``;
    ``skin`` (Å): the Verlet skin of their neighbour graph (:class:`~ase_mlff.graph.Batch`).

    Velocities are drawn per replica from its own stream (``replica_ids``, default
    0..R-1, name the streams), the centre-of-mass motion is
    removed, and each replica is rescaled to exactly ``temperature_K`` over 3N-3 degrees
    of freedom (as ASE's ``MaxwellBoltzmannDistribution(force_temp=True)`` + ``Stationary``).
    """
    too_big = [k for k, a in enumerate(images) if 3 * len(a) >= DRAW_BLOCK]
    if too_big:
        raise ValueError(
            f"image {too_big[0]} has {len(images[too_big[0]])} atoms; a replica's random "
            f"draw holds at most {(DRAW_BLOCK - 1) // 3} atoms"
        )
    batch = Batch.from_atoms(
        list(images), cutoff=model.cutoff, dtype=dtype, device=device, skin=skin
    )
    mass_n = torch.as_tensor(
        atomic_masses[batch.numbers_n.cpu().numpy()], dtype=dtype, device=batch.device
    )
    out = compute_properties(model, batch, forces=True)
    state = MDState(
        batch=batch,
        vel_nc=torch.zeros_like(batch.pos_nc),
        mass_n=mass_n,
        forces_nc=out["forces"].to(dtype),
        energy_s=out["energy"],
        noise_key_s=replica_keys(
            seed, range(batch.n_systems) if replica_ids is None else replica_ids, batch.device
        ),
        noise_count_s=torch.zeros(batch.n_systems, dtype=torch.int64, device=batch.device),
    )
    if temperature_K > 0:
        xi, state = draw_normals(state)
        vel = xi * torch.sqrt(units.kB * temperature_K / mass_n)[:, None]
        vel = remove_com_velocity(vel, mass_n, batch.system_n, batch.n_systems)
        state = replace(state, vel_nc=vel)
        scale = torch.sqrt(temperature_K / state.temperature().clamp_min(1e-12))
        state.vel_nc = vel * scale[batch.system_n][:, None]
    return state
