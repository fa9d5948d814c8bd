"""The comparison agent on a tiny study: two variants trained as Ray tasks, force metrics,
a short stability study, MLflow parent and child runs, the model registry, and resume
after an interruption."""

import json

import numpy as np
import pytest

ray = pytest.importorskip("ray")


def _spec():
    return {
        "name": "tiny",
        "data": "aspirin",
        "n_train": 16,
        "n_val": 4,
        "model": {"name": "painn", "hidden": 8, "n_interactions": 1, "cutoff": 4.0},
        "train": {"epochs": 2, "batch_size": 8, "threads": 1},
        "variants": [
            {
                "name": "scratch",
                "kind": "scratch",
                "train": {"probe_every": 1, "probe_starts": 1, "probe_steps": 20},
            },
            {
                "name": "reweighted",
                "kind": "reweighted",
                "base": "scratch",
                "train": {"lr": 1e-4, "epochs": 1},
            },
        ],
        "md": {"steps": 40, "replicas": 2, "record_every": 10},
    }


def test_comparison_agent_runs_logs_registers_and_resumes(ray_local, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from ase_mlff.agents.comparison import ComparisonAgent

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "study"

    # 1. interrupted after training: the parent run is marked failed, nothing trained is lost
    def boom(*args, **kwargs):
        raise KeyboardInterrupt("stopped by the test")

    monkeypatch.setattr(ComparisonAgent, "evaluate", boom)
    with pytest.raises(KeyboardInterrupt):
        ComparisonAgent(_spec(), out, tracking_uri=uri).run()
    done = {v: out / "variants" / v / "variant_done.json" for v in ("scratch", "reweighted")}
    assert all(p.exists() for p in done.values())
    stamps = {v: p.stat().st_mtime_ns for v, p in done.items()}
    info = json.loads(done["reweighted"].read_text())
    assert info["extra"]["rbp_table"]  # the weights came from the base model's RBP
    scratch_hist = json.loads(done["scratch"].read_text())["history"]
    assert all("probe_t_inst_mean_fs" in h for h in scratch_hist)
    monkeypatch.undo()

    # 2. resumed: the variants are not retrained; evaluation, study and MLflow complete
    res = ComparisonAgent(_spec(), out, tracking_uri=uri).run()
    assert {v: p.stat().st_mtime_ns for v, p in done.items()} == stamps
    rows = {r["model"]: r for r in res.rows}
    assert set(rows) == {"scratch", "reweighted"}
    for r in rows.values():
        assert np.isfinite(r["forces_mae"]) and r["n_replicas"] == 2
        assert 0.0 <= r["fraction_stable"] <= 1.0
    assert (out / "comparison.md").exists() and (out / "comparison.csv").exists()
    for f in (
        "force_vs_stability.png",
        "survival.png",
        "radar_forces_mae.png",
        "t_inst_vs_epoch.png",
        "h_r.png",
    ):
        assert (out / "figures" / f).stat().st_size > 5000, f

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("comparison")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.info.status for r in parents) == ["FINISHED", "KILLED"]
    finished = next(r for r in parents if r.info.status == "FINISHED")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == finished.info.run_id]
    assert {c.info.run_name for c in children} == {"scratch", "reweighted"}
    for c in children:
        for key in ("test_forces_mae", "test_fnm_mae", "md_t_inst_mean_fs", "cluster0_rbp"):
            assert key in c.data.metrics, key
        arts = {a.path for a in client.list_artifacts(c.info.run_id)}
        assert {"checkpoint", "figures"} <= arts
    scratch = next(c for c in children if c.info.run_name == "scratch")
    history = client.get_metric_history(scratch.info.run_id, "val_forces_mae")
    assert len(history) == 2  # the learning curve, one point per epoch
    assert res.best in rows and res.registered["name"] == "tiny-best"
    versions = client.search_model_versions("name='tiny-best'")
    assert len(versions) == 1 and versions[0].tags["variant"] == res.best


def test_study_spec_rejects_bad_variants():
    from ase_mlff.agents.comparison import StudySpec

    with pytest.raises(ValueError, match="kind must be one of"):
        StudySpec.from_dict({"name": "x", "variants": [{"name": "a", "kind": "magic"}]})
    with pytest.raises(ValueError, match="unknown variant"):
        StudySpec.from_dict(
            {"name": "x", "variants": [{"name": "a", "kind": "reweighted", "base": "b"}]}
        )
    with pytest.raises(ValueError, match="needs pretrain_data"):
        StudySpec.from_dict({"name": "x", "variants": [{"name": "a", "kind": "pretrained"}]})
