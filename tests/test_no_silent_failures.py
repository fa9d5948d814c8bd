"""Issue 17's lost-or-wrong-results cases: a second run into a busy folder, a resume with
another model or other data, budgets that cannot train. Each fails before anything is
written, with one message that names the problem."""

import fcntl

import numpy as np
import pytest

from ase_mlff.data import load_dataset
from ase_mlff.models.io import CheckpointError
from ase_mlff.recipes import train as train_recipe
from ase_mlff.training import TrainConfig
from ase_mlff.training.stage import LOCK_FILE, RunDirectoryBusy, exclusive_run_dir


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("silent")
    ds = load_dataset("aspirin")
    ds[np.arange(0, len(ds), 40)].save_npz(d / "small.npz")
    ds[np.arange(20, len(ds), 40)].save_npz(d / "other.npz")  # other frames, same molecule
    return d


def _args(workdir, out, *extra, data="small.npz", hidden=8, epochs=1):
    return [
        *("--data", str(workdir / data), "--model", "painn", "--epochs", str(epochs)),
        *("--n-train", "30", "--n-val", "10", "--hidden", str(hidden), "--batch-size", "10"),
        *("--out", str(out), "--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}"),
        *("--experiment", "silent", *extra),
    ]


def test_a_second_run_into_a_busy_folder_fails_before_writing(workdir):
    """Another process holds the folder (its lock): the second training stops at once,
    naming the holder, and writes no config.yaml (two runs once overwrote each other's
    checkpoints and MLflow recorded the wrong model)."""
    out = workdir / "busy"
    out.mkdir()
    with open(out / LOCK_FILE, "a+") as other:  # another open file: another "process"
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        other.write("pid 4242 on elsewhere")
        other.flush()
        with pytest.raises(RunDirectoryBusy, match=r"is in use by another run \(pid 4242"):
            train_recipe.main(_args(workdir, out))
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    # released: the folder is usable, and this process may take it twice (re-entrant)
    with exclusive_run_dir(out), exclusive_run_dir(out):
        assert "pid" in (out / LOCK_FILE).read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(hidden=16), r"the model config \(.*hidden: 8 -> 16"),
        (dict(data="other.npz"), r"the data \(other frames or labels\)"),
    ],
)
def test_resuming_with_another_model_or_other_data_is_refused(workdir, change, message):
    """A finished or interrupted run resumed with another --hidden (once: a crash after
    config.yaml was overwritten) or another --data (once: the old weights and optimiser
    state silently trained on the new data) is refused before any file changes; only a
    longer budget continues it."""
    out = workdir / f"resume_{'_'.join(change)}"
    train_recipe.main(_args(workdir, out))
    config = (out / "config.yaml").read_text()
    state = (out / "trainer_state.pt").read_bytes()
    (out / "stage_done.json").unlink()  # as if killed before the end
    with pytest.raises(CheckpointError, match=message):
        train_recipe.main(_args(workdir, out, **change))
    assert (out / "config.yaml").read_text() == config
    assert (out / "trainer_state.pt").read_bytes() == state
    res = train_recipe.main(_args(workdir, out, epochs=2))  # the budget may grow
    assert res["epochs_run"] == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(batch_size=-4), "batch_size >= 1"),
        (dict(batch_size=0), "batch_size >= 1"),
        (dict(epochs=0), "epochs >= 1"),
        (dict(epochs="2"), "TrainConfig.epochs must be an integer, got '2'"),
        (dict(max_minutes=0), r"max_minutes must be > 0 \(None: no limit\), got 0"),
        (dict(max_minutes=-1.0), "max_minutes must be > 0"),
        (dict(lr=0.0), "TrainConfig.lr must be a number > 0"),
        (dict(eval_batch_size=0), "eval_batch_size >= 1"),
    ],
)
def test_budgets_that_cannot_train_are_refused(fields, message):
    """--batch-size -4 once trained nothing and reported success; max_minutes 0 was
    ignored; epochs 0 and batch_size 0 gave a ZeroDivisionError."""
    with pytest.raises(ValueError, match=message):
        TrainConfig(**fields)


def test_recipe_refuses_a_negative_batch_size_before_work(workdir):
    out = workdir / "negative"
    with pytest.raises(ValueError, match="batch_size >= 1"):
        train_recipe.main([*_args(workdir, out), "--batch-size", "-4"])
    assert not out.exists()
