"""The force-field pre-training recipes end to end on tiny settings: parent and child
MLflow runs, the comparison table, figures, and resume without retraining; the studies'
settings from a profile and the options."""

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


def test_ffpt_settings_from_profile_and_options():
    """The options override the profile (None or 0 take the profile's value); the stages
    get paper 001's learning rates, scratch and finetune the same budget."""
    from ase_mlff.agents.ff_pretraining import FFPTOptions, resolve_settings
    from ase_mlff.recipes.aspirin_ffpt import PROFILES

    prof = PROFILES["quick"]
    s = resolve_settings(FFPTOptions(), prof)
    assert (s.n_pretrain, s.replicas, s.md_steps) == (20_000, 16, 2000)
    assert list(s.cfgs) == ["pretrain", "scratch", "finetune"]
    assert [c.lr for c in s.cfgs.values()] == [1e-4, 1e-3, 1e-4]
    assert (s.cfgs["pretrain"].epochs, s.cfgs["pretrain"].max_minutes) == (6, 5.0)
    assert s.cfgs["scratch"].epochs == s.cfgs["finetune"].epochs == 60
    assert s.cfgs["scratch"].max_minutes == s.cfgs["finetune"].max_minutes == 4.0
    opts = FFPTOptions(n_pretrain=300, replicas=0, md_steps=40, pretrain_minutes=0.5)
    opts.finetune_minutes, opts.seed, opts.threads, opts.device = 0.25, 3, 1, "cuda"
    s = resolve_settings(opts, prof)
    assert (s.n_pretrain, s.replicas, s.md_steps) == (300, 16, 40)
    assert s.cfgs["pretrain"].max_minutes == 0.5
    assert s.cfgs["scratch"].max_minutes == s.cfgs["finetune"].max_minutes == 0.25
    assert all(
        (c.seed, c.threads, c.device, c.dtype) == (3, 1, "cuda", "float32") for c in s.cfgs.values()
    )


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
