"""The force-field pre-training recipes end to end on tiny settings: parent and child
MLflow runs, the comparison table, figures, and resume without retraining."""

import json

import pytest

TINY = [
    "--n-pretrain", "300", "--replicas", "2", "--md-steps", "40",
    "--pretrain-minutes", "0.02", "--finetune-minutes", "0.02", "--threads", "1",
]  # fmt: skip


def _runs(uri, experiment):
    import mlflow

    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id])


def test_water_ffpt_recipe(tmp_path):
    from ase_mlff.recipes import water_ffpt

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    argv = [*TINY, "--replicas", "1", "--n-test", "10", "--md-steps", "60"]
    argv += ["--n-train", "24", "--n-val", "4"]  # 192-atom frames: keep epochs short
    argv += ["--out", str(tmp_path / "w"), "--tracking-uri", uri]
    res = water_ffpt.main(argv)
    for name in ("scratch", "ffpt"):
        v = res["variants"][name]
        assert v["test"]["forces_mae"] > 0 and set(v["rdf_mae"]) == {"O–O", "O–H", "H–H"}
        assert v["stability"]["n_replicas"] == 1
    assert res["reference"]["D_O_A2_per_fs"] > 0
    out = tmp_path / "w"
    assert (out / "figures" / "rdf.png").stat().st_size > 0
    assert "| ffpt |" in (out / "comparison.md").read_text()
    client, runs = _runs(uri, "water_ffpt")
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.data.tags["mlflow.runName"]: r for r in runs if r not in parent}
    assert len(parent) == 1 and set(children) == {"scratch", "ffpt"}
    assert "test_forces_mae" in children["ffpt"].data.metrics
    assert "pt_val_forces_mae" in children["ffpt"].data.metrics  # pre-training history
    assert "ffpt.test_forces_mae" in parent[0].data.metrics
    assert (out / "finetune" / "stage_done.json").exists()  # a re-run skips finished stages


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_aspirin_ffpt_recipe(tmp_path):
    ray = pytest.importorskip("ray")
    from ase_mlff.recipes import aspirin_ffpt

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    try:
        res = aspirin_ffpt.main([*TINY, "--out", str(tmp_path / "a"), "--tracking-uri", uri])
    finally:
        ray.shutdown()
    for name in ("scratch", "ffpt"):
        v = res["variants"][name]
        assert v["stability"]["n_replicas"] == 2
        assert {"stretch_hole_eV", "bend_hole_eV", "dissociation_eV"} <= set(v["scan"])
    # the teacher and the reference on the scans: GAFF's harmonic C-H bond has no
    # dissociation limit, GFN2-xTB dissociates at a few eV
    assert res["scans"]["GAFF-2.11"]["dissociation_eV"] > 50
    assert 2 < res["scans"]["GFN2-xTB"]["dissociation_eV"] < 10
    assert res["gaff_test"]["forces_mae"] > 0.1
    out = tmp_path / "a"
    for f in ("scan_ch_stretch.png", "scan_hch_angle.png", "survival.png", "h_r.png"):
        assert (out / "figures" / f).stat().st_size > 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["protocol"]["n_pretrain"] == 300
    prov = json.loads(json.dumps(saved))  # JSON round trip of the whole result
    assert prov["variants"]["ffpt"]["test"]["forces_mae"] > 0
    _, runs = _runs(uri, "aspirin_ffpt")
    assert {r.data.tags["mlflow.runName"] for r in runs if "mlflow.parentRunId" in r.data.tags} == {
        "scratch",
        "ffpt",
    }
