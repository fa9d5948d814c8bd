"""Continued learning (paper 002): frame selection, Ray labelling, one round of the loop
and its resumption."""

import json

import numpy as np
import pytest
import torch

from ase_mlff.agents.continued import continued_learning, select_frames
from ase_mlff.data import load_dataset
from ase_mlff.md.runner import MDRun, ReplicaResult
from ase_mlff.metrics.clusters import ConformationClusters
from ase_mlff.models import PaiNN
from ase_mlff.training import TrainConfig, Trainer

ray = pytest.importorskip("ray")

TBLITE = {"name": "tblite"}
# The 1-epoch base model falls apart from both starts; with Δ = 0.8 Å the frames stored
# before an instability have wandered out of the training clusters
MD = {"steps": 80, "dt": 0.5, "temperature_K": 500, "record_every": 2, "bond_delta": 0.8}
# the same model and starts over 5 fs: the max bond deviations at the end are 0.16 and
# 0.22 Å, so Δ = 0.19 Å keeps one replica of the two stable
MD_SPLIT = {"steps": 10, "dt": 0.5, "temperature_K": 500, "check_every": 2, "bond_delta": 0.19}
CFG = TrainConfig(epochs=1, batch_size=10, lr=1e-3)


@pytest.fixture(scope="module")
def data():
    ds = load_dataset("aspirin")
    train = ds.subset(np.arange(0, 6000, 300))  # 20 frames over the five trajectories
    val = ds.subset(np.arange(150, 6000, 600))
    clusters = ConformationClusters(n_clusters=3, n_init=2).fit_dataset(train)
    return train, val, clusters


@pytest.fixture(scope="module")
def base_model(data, tmp_path_factory):
    train, val, _ = data
    torch.manual_seed(0)
    m = PaiNN(species=[1, 6, 8], hidden=8, n_interactions=1, cutoff=4.0)
    res = Trainer(m, train, val, CFG, tmp_path_factory.mktemp("base")).fit()
    return res.best_dir


def _serial_labels(frames):
    """Energies and forces frame by frame, each SCF from scratch (as label_frames does)."""
    from ase_mlff.agents.specs import make_calculator

    calc = make_calculator(TBLITE)
    energy, forces = [], []
    for atoms in frames:
        a = atoms.copy()
        calc.reset()
        a.calc = calc
        energy.append(a.get_potential_energy())
        forces.append(a.get_forces(apply_constraint=False))
    return np.array(energy), np.concatenate(forces)


def _loop(data, base_model, out_dir, **kw):
    train, val, clusters = data
    args = dict(
        reference=TBLITE,
        clusters=clusters,
        starts=[train.to_atoms(0, with_labels=False), train.to_atoms(7, with_labels=False)],
        cfg=CFG,
        out_dir=out_dir,
        rounds=1,
        md=MD,
        max_new_per_round=12,
    )
    args.update(kw)
    return continued_learning(base_model, train, val, **args)


@pytest.fixture(scope="module")
def one_round(ray_local, data, base_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("continued")
    logged = []
    res = _loop(data, base_model, out, log_fn=lambda m, step: logged.append((step, m)))
    return res, out, logged


# ------------------------------------------------------------------ selection
def _run(data):
    """A hand-made MDRun: replica 0 stable with two unexplored (stretched) frames, replica 1
    collapsing at 26 fs after 13 explored frames, its last one a copy of an unexplored
    frame of replica 0."""
    train, _, _ = data
    pos = train.positions_nc.reshape(len(train), -1, 3)

    def stretch(p, f):
        return (p - p.mean(0)) * f + p.mean(0)

    p0 = pos[:12].copy()
    p0[5], p0[8] = stretch(p0[5], 1.3), stretch(p0[8], 0.75)
    p1 = np.concatenate([pos[[0]], pos[12:20], pos[1:4], p0[[5]]])
    times = np.arange(13) * 2.0

    def rep(k, p, t_inst, reason):
        frames = [(t, x, 0.0, 300.0, 1.0) for t, x in zip(times[: len(p)], p)]
        return ReplicaResult.from_frames(k, t_inst, reason, frames)

    run = MDRun([rep(0, p0, np.nan, None), rep(1, p1, 26.0, "bond_length")], 0.5, 60)
    return run, p0, p1, train.to_atoms(0, with_labels=False)


def test_select_frames_tags_dedup_cap_stride(data):
    _, _, clusters = data
    run, p0, p1, template = _run(data)
    assert not clusters.assign(p0[[5, 8]])[2].any()  # the stretched frames are unexplored
    sel = select_frames(run, clusters, templates=template)
    got = [
        (a.info["replica_id"], a.info["time_fs"], a.info["selected_because"]) for a in sel.images
    ]
    expected = [(0, 10.0, "unexplored+pre_instability"), (0, 16.0, "unexplored")] + [
        (1, 2.0 * i, "pre_instability")
        for i in range(3, 12)  # the copy at 24 fs is merged
    ]
    assert got == expected
    assert sel.counts() == {"unexplored": 1, "pre_instability": 9, "unexplored+pre_instability": 1}
    assert sel.n_candidates == 11 and sel.n_frames_seen == 25
    assert sel.unexplored_fraction == pytest.approx(3 / 25)
    np.testing.assert_array_equal(sel.images[0].positions, p0[5])
    assert all(a.info["config_type"] == "continued:" + a.info["selected_because"] for a in sel)

    capped = select_frames(run, clusters, templates=template, max_frames=4)
    assert [a.info["time_fs"] for a in capped.images] == [10.0, 8.0, 16.0, 22.0]  # 0, 3, 7, 10
    assert capped.n_candidates == 11
    only_unexplored = select_frames(run, clusters, templates=template, n_before_instability=0)
    assert [a.info["time_fs"] for a in only_unexplored.images] == [10.0, 16.0]  # 24 fs: a copy
    assert set(only_unexplored.reason_f) == {"unexplored"}
    strided = select_frames(run, clusters, templates=template, n_before_instability=0, stride=2)
    assert [a.info["time_fs"] for a in strided.images] == [16.0, 24.0]  # frame 5 is odd


def test_select_frames_rejects_bad_inputs(data):
    _, _, clusters = data
    run, _, _, template = _run(data)
    rng = np.random.default_rng(0)
    water = ConformationClusters(n_clusters=2, n_init=1).fit(rng.normal(size=(6, 3, 3)), [8, 1, 1])
    with pytest.raises(ValueError, match="fitted on a molecule of 3 atoms"):
        select_frames(run, water, templates=template)
    with pytest.raises(ValueError, match="MDRun holds no atomic numbers"):
        select_frames(run, ConformationClusters(2, n_init=1).fit(run.replicas[0].positions_tn3))
    with pytest.raises(ValueError, match="stride"):
        select_frames(run, clusters, templates=template, stride=0)
    with pytest.raises(ValueError, match="not fitted"):
        select_frames(run, ConformationClusters(), templates=template)


def test_continued_learning_rejects_bad_inputs(data, tmp_path):
    train, _, _ = data
    rng = np.random.default_rng(0)
    water = ConformationClusters(n_clusters=2, n_init=1).fit(rng.normal(size=(6, 3, 3)), [8, 1, 1])
    with pytest.raises(ValueError, match="starts is empty"):
        _loop(data, "aspirin-painn", tmp_path, starts=[])
    with pytest.raises(ValueError, match="clusters of another molecule"):
        _loop(data, "aspirin-painn", tmp_path, clusters=water)
    with pytest.raises(ValueError, match="md needs 'steps'"):
        _loop(data, "aspirin-painn", tmp_path, md={"dt": 0.5})
    assert not list(tmp_path.iterdir())  # nothing was started


# ------------------------------------------------------------------ labelling
def test_label_frames_two_tasks_equals_serial(ray_local, data):
    from ase_mlff.agents.labelling import label_frames

    train, _, _ = data
    frames = [train.to_atoms(i) for i in (3, 11, 17, 5, 8)]  # labels attached: ignored
    ds = label_frames(frames, TBLITE, n_tasks=2, config_type="probe")
    energy, forces = _serial_labels(frames)
    np.testing.assert_allclose(ds.energy_s, energy, rtol=0, atol=1e-10)
    np.testing.assert_allclose(ds.forces_nc, forces, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(ds.positions_nc, train.subset([3, 11, 17, 5, 8]).positions_nc)
    assert set(ds.config_type_s) == {"probe"} and not ds.has_stress
    p = ds.provenance
    assert p["n_tasks"] == 2 and p["chunk_sizes"] == [3, 2] and p["reference"] == TBLITE
    assert p["method"] == "GFN2-xTB" and p["n_frames"] == 5
    # GFN2-xTB is also how the shipped set was labelled (SCF tolerance apart)
    np.testing.assert_allclose(ds.energy_s, train.energy_s[[3, 11, 17, 5, 8]], atol=1e-6)


def test_label_frames_stress_and_errors(ray_local, data):
    from ase_mlff.agents.labelling import LabellingError, label_frames

    train, _, _ = data
    mol = train.to_atoms(0, with_labels=False)
    box = mol.copy()
    box.cell, box.pbc = [20.0, 20.0, 20.0], True
    spec = {"name": "mlff", "model": "aspirin-painn"}
    ds = label_frames([mol, box], spec, n_tasks=2)
    assert ds.has_stress and np.isnan(ds.stress_s33[0]).all()
    assert np.isfinite(ds.stress_s33[1]).all()
    bad = mol.copy()
    bad.numbers[0] = 7
    with pytest.raises(LabellingError, match=r"frame 2 of 3 .*never trained on element\(s\) N"):
        label_frames([mol, mol, bad], spec, n_tasks=2)
    with pytest.raises(LabellingError, match="cannot build the calculator"):
        label_frames([mol], {"name": "no-such-calculator"}, n_tasks=1)
    with pytest.raises(ValueError, match="no frames"):
        label_frames([], spec)


# ------------------------------------------------------------------ the loop
def test_one_round_adds_labelled_selected_frames(one_round, data):
    from ase_mlff.data.dataset import Dataset
    from ase_mlff.md.storage import read_summary

    train, _, clusters = data
    res, out, logged = one_round
    assert res.stopped_because == "rounds" and len(res.rounds) == 1
    rec = res.rounds[0]
    added = Dataset.load_npz(out / "round_1" / "added.npz")
    new_train = Dataset.load_npz(out / "round_1" / "train.npz")
    assert 0 < len(added) <= 12 and rec["n_added"] == len(added)
    assert len(new_train) == len(train) + len(added) == rec["train_size"]
    np.testing.assert_array_equal(new_train.energy_s[: len(train)], train.energy_s)
    np.testing.assert_array_equal(new_train.extra_s["continued_round"], [0] * 20 + [1] * len(added))

    # every frame is unexplored or among the 10 stored frames before its replica's t_inst
    assert added.extra_s["unexplored"].any() and added.extra_s["pre_instability"].any()
    pos = added.positions_nc.reshape(len(added), -1, 3)
    _, _, explored = clusters.assign(pos)
    np.testing.assert_array_equal(added.extra_s["unexplored"], ~explored)
    summary = read_summary(out / "round_1" / "md")["replicas"]
    for f in range(len(added)):
        rid, t = int(added.extra_s["replica_id"][f]), float(added.extra_s["time_fs"][f])
        t_inst = summary[str(rid)]["t_inst_fs"]
        if added.extra_s["pre_instability"][f]:
            assert t_inst is not None and t < t_inst
            stored = [a.info["time_fs"] for a in _replica(out, rid)]
            assert t in [s for s in stored if s < t_inst][-10:]
        else:
            assert added.extra_s["unexplored"][f]
    # the stored trajectories give the same selection as the in-memory run did
    again = select_frames(out / "round_1" / "md", clusters, max_frames=12)
    np.testing.assert_array_equal(np.array([a.positions for a in again]), pos)
    np.testing.assert_array_equal(again.reason_f, added.extra_s["selected_because"])
    by_reason = {k: rec[f"n_added_{k}"] for k in ("unexplored", "pre_instability", "both")}
    assert sum(by_reason.values()) == len(added)
    assert (
        by_reason["pre_instability"] + by_reason["both"] == added.extra_s["pre_instability"].sum()
    )

    # the labels are the reference calculator's
    energy, forces = _serial_labels(added.to_atoms_list(False))
    np.testing.assert_allclose(added.energy_s, energy, rtol=0, atol=1e-10)
    np.testing.assert_allclose(added.forces_nc, forces, rtol=0, atol=1e-10)
    assert added.provenance["reference"] == TBLITE

    assert res.final_checkpoint == out / "round_1" / "train" / "best"
    assert (res.final_checkpoint / "model.json").exists()
    for key in ("val_forces_mae", "val_before_forces_mae", "fraction_stable", "t_inst_mean_fs"):
        assert np.isfinite(rec[key])
    assert [s for s, _ in logged] == [1] and logged[0][1]["n_added"] == len(added)


def _replica(out, rid):
    from ase_mlff.md.storage import read_replica

    return read_replica(out / "round_1" / "md", rid)


def test_resume_skips_finished_round(one_round, data, base_model, monkeypatch):
    import ase_mlff.agents.continued as continued
    import ase_mlff.agents.labelling as labelling
    import ase_mlff.training.trainer as trainer

    res, out, _ = one_round
    calls = []

    def forbidden(name):
        def f(*a, **k):
            calls.append(name)
            raise AssertionError(f"{name} called on resume")

        return f

    monkeypatch.setattr(continued, "run_md", forbidden("run_md"))
    monkeypatch.setattr(labelling, "label_frames", forbidden("label_frames"))
    summary = out / "round_1" / "md" / "summary.json"
    mtime = summary.stat().st_mtime_ns
    again = _loop(data, base_model, out)
    assert calls == [] and summary.stat().st_mtime_ns == mtime
    assert again.rounds == json.loads(json.dumps(res.rounds))
    assert again.final_checkpoint == res.final_checkpoint

    # a round interrupted after its labelling resumes at the training: no new MD either
    monkeypatch.setattr(trainer.Trainer, "train_epoch", forbidden("train_epoch"))
    (out / "round_1" / "round_done.json").unlink()
    again = _loop(data, base_model, out)
    assert calls == [] and summary.stat().st_mtime_ns == mtime
    assert again.rounds[0]["n_added"] == res.rounds[0]["n_added"]
    assert (out / "round_1" / "round_done.json").exists()

    with pytest.raises(ValueError, match="other settings .*max_new_per_round"):
        _loop(data, base_model, out, max_new_per_round=5)


def test_stops_when_target_fraction_stable_is_reached(one_round, data, base_model, tmp_path):
    """An MD in which one of two replicas stays stable: with that fraction as the target
    the loop ends after the MD, adds nothing, keeps the model."""
    first = _loop(data, base_model, tmp_path / "first", rounds=1, md=MD_SPLIT)
    reached = first.rounds[0]["fraction_stable"]
    assert reached == 0.5
    res = _loop(data, base_model, tmp_path, rounds=3, target_fraction_stable=reached, md=MD_SPLIT)
    assert res.stopped_because == "target_reached" and len(res.rounds) == 1
    assert res.rounds[0]["n_added"] == 0 and res.final_checkpoint == base_model
    assert res.rounds[0]["fraction_stable"] == reached
    assert not (tmp_path / "round_1" / "added.npz").exists() and not (tmp_path / "round_2").exists()


def test_select_frames_of_a_run_that_stays_explored_is_empty(data):
    """All replicas stable and inside the training clusters: nothing to add (this crashed
    on the empty candidate set)."""
    train, _, clusters = data
    pos = train.positions_nc.reshape(len(train), -1, 3)[:6]
    frames = [(2.0 * k, p, 0.0, 300.0, 1.0) for k, p in enumerate(pos)]
    run = MDRun([ReplicaResult.from_frames(0, np.nan, None, frames)], 0.5, 12)
    sel = select_frames(run, clusters, templates=train.to_atoms(0, with_labels=False))
    assert len(sel) == 0 and sel.n_frames_seen == 6 and sel.unexplored_fraction == 0.0
