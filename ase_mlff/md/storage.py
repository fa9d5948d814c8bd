"""Trajectories written to disk as they are made, one ASE ``.traj`` file per replica.

ASE's trajectory format is compact (binary), appendable frame by frame and read back by
``ase.io.read`` into Atoms (with energy attached and ``time_fs``/``temperature_K`` in
``atoms.info``), so ``ase.io.write("x.extxyz", ase.io.read("replica_0003.traj", ":"))``
exports it. ``summary.json`` beside them records each replica's t_inst and reason and is
rewritten whenever a replica stops, so a killed run loses nothing it had written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator


class Frame(NamedTuple):
    """One recorded MD frame of a replica: the one record the runners, the store and
    :class:`~ase_mlff.md.runner.ReplicaResult` share. ``cell_33`` is the frame's cell (it
    changes under a barostat); None keeps the start structure's."""

    time_fs: float
    positions_n3: np.ndarray
    energy: float
    temperature_K: float
    max_force: float
    cell_33: np.ndarray | None = None


def as_frames(frames: Iterable[Frame | tuple]) -> list[Frame]:
    """``frames`` as :class:`Frame` records (plain tuples in the field order accepted)."""
    return [f if isinstance(f, Frame) else Frame(*f) for f in frames]


class TrajectoryStore:
    """The trajectory files and ``summary.json`` of one directory of replicas."""

    def __init__(
        self,
        directory: str | Path,
        images: Sequence[Atoms],
        replica_ids: Sequence[int],
        settings: dict | None = None,
        resume: bool = False,
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.templates = {r: a.copy() for r, a in zip(replica_ids, images)}
        if resume and (self.dir / "summary.json").exists():
            self.summary = read_summary(self.dir)
            return
        for r in replica_ids:  # a fresh run must not append to an old run's files
            self.path(r).unlink(missing_ok=True)
        self.summary: dict = {
            "settings": settings or {},
            "replicas": {
                str(r): {"t_inst_fs": None, "reason": None, "frames": 0} for r in replica_ids
            },
        }
        self._write_summary()

    def path(self, replica_id: int) -> Path:
        return self.dir / f"replica_{replica_id:04d}.traj"

    def append(self, replica_id: int, frames: Sequence[Frame | tuple]) -> None:
        """Append :class:`Frame` records (the cell, when given, is stored as ``atoms.cell``;
        without it the start structure's cell is kept)."""
        if not frames:
            return
        from ase.io.trajectory import Trajectory

        with Trajectory(self.path(replica_id), "a") as traj:
            for f in as_frames(frames):
                atoms = self.templates[replica_id].copy()
                if f.cell_33 is not None:
                    atoms.cell = f.cell_33
                atoms.positions = f.positions_n3
                atoms.info.update(
                    time_fs=float(f.time_fs),
                    temperature_K=float(f.temperature_K),
                    max_force=float(f.max_force),
                )
                atoms.calc = SinglePointCalculator(atoms, energy=float(f.energy))
                traj.write(atoms)
        self.summary["replicas"][str(replica_id)]["frames"] += len(frames)

    def truncate(
        self, t_max_fs: float | dict[int, float], fired: dict[int, dict[str, float]]
    ) -> None:
        """Back to a checkpoint: drop frames after ``t_max_fs`` (one time for all, or per
        replica: {replica: time}, absent = drop all) and failures not in ``fired``
        ({replica: {criterion: onset fs}}, as :meth:`mark_fired`)."""
        from ase.io.trajectory import Trajectory

        for key, info in self.summary["replicas"].items():
            r = int(key)
            path = self.path(r)
            t_max = t_max_fs.get(r, -np.inf) if isinstance(t_max_fs, dict) else t_max_fs
            if path.exists():
                kept = [a for a in read_replica(self.dir, r) if a.info["time_fs"] <= t_max]
                with Trajectory(path.with_suffix(".tmp"), "w") as traj:
                    for a in kept:
                        traj.write(a)
                path.with_suffix(".tmp").replace(path)
                info["frames"] = len(kept)
            info.pop("fired_fs", None)
            info.update(t_inst_fs=None, reason=None)
            if fired.get(r):
                self._set_fired(info, fired[r])
        self._write_summary()

    def mark_stopped(self, replica_id: int, t_inst_fs: float, reason: str) -> None:
        self.mark_fired(replica_id, {reason: t_inst_fs})
        self._write_summary()

    def mark_fired(self, replica_id: int, fired_fs: dict[str, float]) -> None:
        """Record a replica's failed criteria ({criterion: onset fs}, in firing order): its
        t_inst and reason are those of the earliest onset."""
        self._set_fired(self.summary["replicas"][str(replica_id)], fired_fs)

    @staticmethod
    def _set_fired(info: dict, fired_fs: dict[str, float]) -> None:
        reason = min(fired_fs, key=fired_fs.get)  # the earliest onset (as md.runner)
        info.update(t_inst_fs=fired_fs[reason], reason=reason, fired_fs=dict(fired_fs))

    def flush(self) -> None:
        """Write the summary (frame counts, stops) so readers see the run's progress."""
        self._write_summary()

    def close(self) -> None:
        self._write_summary()

    def _write_summary(self) -> None:
        tmp = self.dir / "summary.json.tmp"
        tmp.write_text(json.dumps(self.summary, indent=2, default=float))
        tmp.replace(self.dir / "summary.json")


def read_replica(directory: str | Path, replica_id: int) -> list[Atoms]:
    """The stored frames of one replica as ASE Atoms."""
    import ase.io

    path = Path(directory) / f"replica_{replica_id:04d}.traj"
    if not path.exists():
        raise FileNotFoundError(f"no trajectory for replica {replica_id} in {directory}")
    return ase.io.read(path, index=":")


def read_summary(directory: str | Path) -> dict:
    return json.loads((Path(directory) / "summary.json").read_text())


def stored_frames(directory: str | Path, replica_id: int) -> list[Frame]:
    """The stored frames of one replica as :class:`Frame` records (with their cells)."""
    path = Path(directory) / f"replica_{replica_id:04d}.traj"
    if not path.exists():
        return []
    return [
        Frame(
            a.info["time_fs"],
            a.positions.copy(),
            a.get_potential_energy(),
            a.info["temperature_K"],
            a.info["max_force"],
            a.cell[:].copy(),
        )
        for a in read_replica(directory, replica_id)
    ]


def stored_positions(directory: str | Path, replica_id: int) -> np.ndarray:
    """(T, n, 3) stored positions of one replica."""
    return np.array([a.positions for a in read_replica(directory, replica_id)])
