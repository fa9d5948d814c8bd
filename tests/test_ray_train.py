"""Training on Ray: Ray Train with 2 CPU workers follows single-process training on the same
global batch and seed (float64, to 1e-8 relative), also when the batch does not split evenly
(and a rank gets no frame at all); independent variants run as Ray tasks and a failing one
is reported without losing the other.

Each Ray Train run costs ~25-30 s of worker start-up on 2 cores (controller and worker
processes, imports), the training itself a few seconds."""

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from ase_mlff.agents.training import (
    build_run,
    train_distributed,
    train_local,
    train_variants_parallel,
)
from ase_mlff.data import load_dataset
from ase_mlff.training.config import ExperimentConfig

ray = pytest.importorskip("ray")
pytest.importorskip("ray.train.torch")

MODEL = {"name": "painn", "hidden": 8, "n_interactions": 1, "cutoff": 4.0}
TRAIN = {"epochs": 2, "batch_size": 8, "lr": 1e-2, "dtype": "float64", "seed": 3}


@pytest.fixture(scope="module")
def frames():
    """24 shipped aspirin frames from the whole trajectory: 16 to train, 8 to validate."""
    ds = load_dataset("aspirin")
    idx = np.arange(24) * (len(ds) // 24)
    return ds[idx[:16]], ds[idx[16:]]


def _weights(path) -> dict[str, np.ndarray]:
    return load_file(str(Path(path) / "model.safetensors"))


def _assert_same_run(single: dict, dist: dict, rtol: float = 1e-8) -> None:
    assert dist["world_size"] == 2
    assert dist["epochs_run"] == single["epochs_run"] == TRAIN["epochs"]
    assert dist["best_epoch"] == single["best_epoch"]
    for which in ("best_dir", "last_dir"):
        a, b = _weights(single[which]), _weights(dist[which])
        assert a.keys() == b.keys()
        for k in a:
            scale = max(float(np.abs(a[k]).max()), 1e-3)
            np.testing.assert_allclose(b[k], a[k], rtol=rtol, atol=rtol * scale, err_msg=k)
    for ha, hb in zip(single["history"], dist["history"], strict=True):
        for key in ("train_loss", "val_loss", "val_forces_mae", "val_energy_mae", "lr"):
            np.testing.assert_allclose(hb[key], ha[key], rtol=rtol, err_msg=key)


def _assert_trained(res: dict, cfg: dict, train, val) -> None:
    """The weights moved away from the initial ones (the comparison is not vacuous)."""
    from ase_mlff.agents.training import as_config

    model0, *_ = build_run(as_config(cfg), train=train, val=val)
    w0 = {k: v.numpy() for k, v in model0.state_dict().items()}
    w = _weights(res["last_dir"])
    moved = max(float(np.abs(w[k] - w0[k]).max()) for k in w if "atomref" not in k)
    assert moved > 1e-3


def test_ray_train_two_workers_match_single_process(ray_local, frames, tmp_path):
    train, val = frames
    cfg = {"model": MODEL, "train": TRAIN}
    single = train_local(cfg, tmp_path / "single", train=train, val=val)
    dist = train_distributed(cfg, tmp_path / "ray", num_workers=2, train=train, val=val)
    _assert_same_run(single, dist)
    _assert_trained(dist, cfg, train, val)
    # rank 0's final metrics and best checkpoint were reported to Ray and persisted
    assert dist["metrics"]["best_val_loss"] == pytest.approx(dist["best_val"]["loss"])
    assert dist["metrics"]["epochs_run"] == TRAIN["epochs"]
    ray_ckpt = Path(dist["ray_checkpoint"])
    assert ray_ckpt.is_relative_to(tmp_path / "ray" / "ray_train")
    np.testing.assert_array_equal(
        _weights(ray_ckpt)["embedding.weight"], _weights(dist["best_dir"])["embedding.weight"]
    )
    assert (tmp_path / "ray" / "config.yaml").exists()
    assert dist["wall_seconds"] > dist["seconds"] > 0


def test_ray_train_odd_batch_and_empty_shard(ray_local, tmp_path):
    """Batch 5 over 2 ranks: shards of 3 and 2 frames, and a last batch of 1 frame where
    rank 1 has nothing; the data come from ``cfg.data`` (every worker loads and splits)."""
    cfg = {
        "data": {"name": "aspirin", "n_train": 16, "n_val": 6, "n_test": 0, "split_seed": 1},
        "model": MODEL,
        "train": {**TRAIN, "batch_size": 5},
    }
    single = train_local(cfg, tmp_path / "single")
    dist = train_distributed(cfg, tmp_path / "ray", num_workers=2, report_checkpoint=False)
    _assert_same_run(single, dist)
    assert dist["ray_checkpoint"] is None


def test_variants_in_parallel_one_failing(ray_local, frames, tmp_path):
    train, val = frames
    cfg = {"model": MODEL, "train": {**TRAIN, "epochs": 1}}
    bad = {"model": {**MODEL, "name": "no-such-model"}, "train": cfg["train"]}
    seen = []
    rows = train_variants_parallel(
        [
            {
                "name": "ok",
                "fn": train_local,
                "kwargs": {"cfg": cfg, "out_dir": tmp_path / "ok", "train": train, "val": val},
            },
            {
                "name": "broken",
                "config": bad,
                "out_dir": tmp_path / "bad",
                "train": train,
                "val": val,
            },
        ],
        cpus_per_job=1,
        on_result=seen.append,
    )
    assert [r["name"] for r in rows] == ["ok", "broken"] and len(seen) == 2
    ok, broken = rows
    assert ok["ok"] and ok["error"] is None and ok["result"]["epochs_run"] == 1
    assert (Path(ok["result"]["best_dir"]) / "model.safetensors").exists()
    assert not broken["ok"] and broken["result"] is None
    assert "unknown model 'no-such-model'" in broken["error"]
    assert "ValueError" in broken["traceback"]


def test_bad_arguments_are_refused_before_any_work(frames):
    train, val = frames
    with pytest.raises(ValueError, match="either 'fn'"):
        train_variants_parallel([{"kwargs": {}}])
    with pytest.raises(ValueError, match="needs an 'out_dir'"):
        train_variants_parallel([{"config": {}}])
    with pytest.raises(ValueError, match="both train and val"):
        build_run(ExperimentConfig(), train=train)
    with pytest.raises(ValueError, match="num_workers"):
        train_distributed({}, "unused", num_workers=0)
