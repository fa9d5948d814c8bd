"""The train recipe end to end: MLflow run, checkpoints, resume, failure marked FAILED."""

import json

import numpy as np
import pytest
import yaml

from ase_mlff.data import load_dataset
from ase_mlff.recipes import train as train_recipe
from ase_mlff.training import ExperimentConfig


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    ds = load_dataset("aspirin")
    ds[np.arange(0, len(ds), 40)].save_npz(d / "small.npz")  # ~150 decorrelated frames
    return d


def _args(workdir, out, epochs, extra=()):
    return [
        "--data",
        str(workdir / "small.npz"),
        "--model",
        "painn",
        "--epochs",
        str(epochs),
        "--n-train",
        "40",
        "--n-val",
        "10",
        "--hidden",
        "8",
        "--batch-size",
        "10",
        "--out",
        str(out),
        "--tracking-uri",
        f"sqlite:///{workdir / 'mlflow.db'}",
        "--experiment",
        "test",
        *extra,
    ]


def test_train_recipe_logs_and_resumes(workdir):
    from mlflow.tracking import MlflowClient

    out = workdir / "run"
    res = train_recipe.main(_args(workdir, out, 2))
    assert res["epochs_run"] == 2 and res["n_test"] > 0
    assert (out / "best" / "model.safetensors").exists() and (out / "last" / "model.json").exists()
    meta = json.loads((out / "best" / "model.json").read_text())
    assert meta["test_metrics"]["forces_mae"] == pytest.approx(res["test"]["forces_mae"])
    assert meta["data"]["provenance"]["method"] == "GFN2-xTB"

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    run = client.get_run(res["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["model.name"] == "painn" and run.data.params["train.epochs"] == "2"
    hist = client.get_metric_history(res["run_id"], "val_forces_mae")
    assert [m.step for m in hist] == [1, 2]
    assert "test_forces_mae" in run.data.metrics
    arts = {a.path for a in client.list_artifacts(res["run_id"])}
    assert {"checkpoint", "figures", "results.json", "config.yaml"} <= arts
    figs = {a.path for a in client.list_artifacts(res["run_id"], "figures")}
    assert figs == {"figures/learning_curve.png", "figures/parity.png"}

    # an interrupted run continues from its last checkpoint instead of starting over
    res2 = train_recipe.main(_args(workdir, out, 4))
    assert res2["epochs_run"] == 4
    hist2 = client.get_metric_history(res2["run_id"], "val_forces_mae")
    assert [m.step for m in hist2] == [3, 4]


def test_failed_run_is_marked_failed(workdir, monkeypatch):
    """A failure inside the training (here a diverging loss, planted in Trainer.fit)
    marks the MLflow run FAILED with the error, and the run's params are kept."""
    from mlflow.tracking import MlflowClient

    from ase_mlff.training.trainer import Trainer

    def diverge(self, resume=True):
        raise FloatingPointError("non-finite loss at epoch 1, batch 0 (planted)")

    monkeypatch.setattr(Trainer, "fit", diverge)
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        train_recipe.main(_args(workdir, workdir / "broken_run", 2))
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("test")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    assert runs[0].info.status == "FAILED"
    assert "non-finite loss" in runs[0].data.tags["error"]
    assert runs[0].data.params["data.name"].endswith("small.npz")


def test_config_yaml_roundtrip_and_errors(tmp_path):
    cfg = ExperimentConfig.from_dict(
        {
            "data": {"n_train": 10, "test_groups": [4]},
            "train": {"epochs": 3},
            "model": {"name": "schnet"},
        }
    )
    cfg.to_yaml(tmp_path / "c.yaml")
    assert ExperimentConfig.from_yaml(tmp_path / "c.yaml") == cfg
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["train"]["epochs"] == 3
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        ExperimentConfig.from_dict({"train": {"epoch": 3}})
    with pytest.raises(ValueError, match="unknown config sections"):
        ExperimentConfig.from_dict({"optim": {}})


def test_sigterm_marks_run_killed(workdir):
    import os
    import signal

    from ase_mlff.tracking import Tracker

    tracker = Tracker("test", uri=f"sqlite:///{workdir / 'mlflow.db'}")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), tracker.run("terminated") as run:
        run.log_metrics({"x": 1.0}, step=1)
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler raises at the next bytecode
            pass
    got = tracker.get_run(run.run_id)
    assert got.info.status == "KILLED"
    assert got.data.metrics["x"] == 1.0
    assert signal.getsignal(signal.SIGTERM) is before
