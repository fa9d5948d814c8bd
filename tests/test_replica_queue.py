"""The replica queue (issue 19): with more start structures than ``batch_size``, replicas
enter as others stop or finish, each runs its own ``steps`` on its own clock and random
stream (the trajectory it has in any batch), the batch stays full, and a killed run
resumes bit-identically."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule

from ase_mlff.md.detectors import Detector, LindemannIndex
from ase_mlff.md.runner import run_md
from ase_mlff.models import PaiNN
from tests.conftest import CrashAfter, random_species_model

PROTOCOL = dict(steps=60, check_every=10, record_every=20, dt=0.5, temperature_K=300)


class FailsAfterChecks(Detector):
    """Flags a replica at its ``info["fail_after"]``-th check (never without it): a
    per-replica clock, counted in the checks the replica has seen."""

    name = "scripted"
    per_system = ("fail_after_s", "checks_s")
    accumulators = ("checks_s",)  # indexed by replica: saved, and extended for entrants

    def __init__(self, images, state):
        self.fail_after_s = torch.tensor([a.info.get("fail_after", 10**9) for a in images])
        self.checks_s = torch.zeros(len(images), dtype=torch.long)

    def __call__(self, state):
        self.checks_s += 1
        return self.checks_s >= self.fail_after_s


def factory(images, state):
    return [FailsAfterChecks(images, state)]


def _images(n, doomed_every=2):
    out = []
    for k in range(n):
        a = molecule("H2O")
        a.rattle(0.02, seed=k)
        if k % doomed_every == 0:
            a.info["fail_after"] = 1 + k % 3  # fails at its 1st, 2nd or 3rd check
        out.append(a)
    return out


@pytest.fixture(scope="module")
def model():
    return random_species_model(PaiNN, [1, 8], cutoff=3.0, hidden=8, n_interactions=1).double()


def _run(model, images, **kw):
    return run_md(model, images, detector_factory=factory, seed=3, **PROTOCOL, **kw)


def test_queued_replicas_follow_their_own_trajectories(model):
    """Every replica of a queue run (batch of 4 for 12) has the t_inst, reason, frame
    times and positions it has when all 12 run at once."""
    images = _images(12)
    together = _run(model, images)
    queued = _run(model, images, batch_size=4)
    assert together.occupancy is None and 0 < queued.occupancy <= 1
    for a, b in zip(together.replicas, queued.replicas):
        assert a.replica_id == b.replica_id
        assert a.reason == b.reason
        np.testing.assert_equal(a.t_inst_fs, b.t_inst_fs)
        np.testing.assert_array_equal(a.times_fs, b.times_fs)
        np.testing.assert_allclose(a.positions_tn3, b.positions_tn3, atol=1e-10)
    doomed = [r for r in queued.replicas if "fail_after" in images[r.replica_id].info]
    assert all(r.reason == "scripted" for r in doomed)
    assert [r.t_inst_fs for r in doomed] == [
        images[r.replica_id].info["fail_after"] * 10 * 0.5 for r in doomed
    ]
    stable = [r for r in queued.replicas if r.stable]
    assert len(stable) == 6
    assert all(list(r.times_fs) == [0.0, 10.0, 20.0, 30.0] for r in stable)


def test_queue_keeps_the_batch_at_least_90_percent_full(model):
    """Half of 32 replicas fail early (at their 1st-3rd of 6 checks): a batch of 4 stays
    ≥ 90 % full over the whole run, the last replicas' drain included."""
    run = _run(model, _images(32), batch_size=4)
    assert run.occupancy >= 0.9, run.occupancy
    assert sum(r.stable for r in run.replicas) == 16


def test_killed_queue_run_resumes_bit_identically(model, tmp_path):
    """A queue run killed mid-way and started again with the same arguments gives the
    frames and results of an uninterrupted run."""
    images = _images(10)
    whole = _run(model, images, batch_size=4, traj_dir=tmp_path / "a", checkpoint_every=10)
    crashing = CrashAfter(model, 23)
    with pytest.raises(RuntimeError, match="worker killed"):
        _run(crashing, images, batch_size=4, traj_dir=tmp_path / "b", checkpoint_every=10)
    resumed = _run(model, images, batch_size=4, traj_dir=tmp_path / "b", checkpoint_every=10)
    for a, b in zip(whole.replicas, resumed.replicas):
        assert (a.replica_id, a.reason) == (b.replica_id, b.reason)
        np.testing.assert_equal(a.t_inst_fs, b.t_inst_fs)
        np.testing.assert_array_equal(a.times_fs, b.times_fs)
        np.testing.assert_array_equal(a.positions_tn3, b.positions_tn3)


def test_what_a_queue_cannot_run_is_refused_before_any_work(model):
    images = _images(6)
    calls = CrashAfter(model, 0)  # any evaluation raises RuntimeError
    bad = [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2, "integrator": "nose_hoover"}, "nose_hoover"),
        ({"batch_size": 2, "steps": 55}, "multiple of check_every"),
    ]
    for kw, match in bad:
        args = {**PROTOCOL, **kw}
        with pytest.raises(ValueError, match=match):
            run_md(calls, images, detector_factory=factory, **args)
    with pytest.raises(ValueError, match="explicit detectors"):
        run_md(calls, images, detectors=[], batch_size=2, **PROTOCOL)

    def windowed(imgs, state):
        return [LindemannIndex(state, window=3)]

    with pytest.raises(ValueError, match="window"):
        run_md(model, images, detector_factory=windowed, batch_size=2, **PROTOCOL)


def test_peak_memory_sees_an_allocation():
    """The CPU probe's meter sees 160 MB of fresh pages touched inside its block (an
    anonymous map: the allocator cannot serve it from memory it already holds)."""
    import mmap

    from ase_mlff.md.batching import PeakMemory

    size = 160 * 2**20
    with PeakMemory("cpu") as peak:
        block = mmap.mmap(-1, size)
        for offset in range(0, size, 4096):
            block[offset] = 1
        block.close()
    assert peak.bytes >= 120e6, peak.bytes


def test_auto_batch_size_follows_the_free_memory(model, monkeypatch):
    """The batch holds as many replicas as fit in half the free memory at the probe's
    cost per replica plus the MD state (a stand-in meter reports 4 MB for the probe of
    four replicas): exact counts, at least one, at most all; ``run_md`` takes
    ``batch_size="auto"``."""
    import ase_mlff.md.batching as batching

    class FourMegabytes:
        def __init__(self, device):
            self.bytes = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.bytes = 4_000_000

    monkeypatch.setattr(batching, "PeakMemory", FourMegabytes)
    images = _images(40)
    per_replica = 1_000_000 + batching.STATE_BYTES_PER_ATOM * 3  # water: 3 atoms
    for free in (0, 3_000_000, 10**7, 10**8, 10**15):
        expected = max(1, min(40, int(0.5 * free // per_replica)))
        assert batching.auto_batch_size(model, images, free_bytes=free) == expected
    assert batching.auto_batch_size(model, images, free_bytes=10**7, fraction=1.0) == 9
    monkeypatch.setattr(batching, "free_memory_bytes", lambda device: 10**7)
    run = _run(model, images[:12], batch_size="auto")  # 4 of 12 fit: a queue
    assert run.settings["batch_size"] == 4 and run.occupancy is not None
    assert _run(model, images[:12]).occupancy is None  # the default: all at once, no probe
    with pytest.raises(ValueError, match="fraction"):
        batching.auto_batch_size(model, images, fraction=0.0)


def test_auto_batch_size_falls_back_when_the_probe_fails(model):
    """A potential that only takes the whole batch (the probe's subset raises): the run
    warns and integrates every replica at once."""

    class WholeBatchOnly(torch.nn.Module):
        def __init__(self, inner, n):
            super().__init__()
            self.inner, self.n, self.cutoff = inner, n, inner.cutoff

        def forward(self, batch):
            if batch.n_systems != self.n:
                raise RuntimeError("this potential needs all its replicas")
            return self.inner(batch)

    images = _images(6)
    for a in images:  # none fails: the batch stays whole
        a.info.pop("fail_after", None)
    with pytest.warns(RuntimeWarning, match="memory probe failed"):
        run = _run(WholeBatchOnly(model, 6), images, batch_size="auto")
    assert run.occupancy is None and len(run.replicas) == 6
