"""The comparison agent on a tiny study: two variants trained as Ray tasks, force metrics,
a short stability study, MLflow parent and child runs, the model registry, and resume
after an interruption."""

import json
from pathlib import Path

import numpy as np
import pytest

from ase_mlff.agents.comparison import best_by_criterion


def _expected_best(rows):
    """CRITERION written out independently: sort by (-fraction_stable, -t_inst_mean_fs,
    forces_mae) — a stable sort, so a complete tie keeps the first row — over the rows
    with a finite force MAE."""
    ok = [r for r in rows if np.isfinite(r["forces_mae"])]
    if not ok:
        return None
    key = lambda r: (-r["fraction_stable"], -r["t_inst_mean_fs"], r["forces_mae"])  # noqa: E731
    return sorted(ok, key=key)[0]["model"]


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
        "active": {"replicas_per_round": 2, "max_rounds": 2},
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
    from ase_mlff.agents.comparison import read_variant_done

    res = ComparisonAgent(_spec(), out, tracking_uri=uri).run()
    assert {v: p.stat().st_mtime_ns for v, p in done.items()} == stamps
    rows = {r["model"]: r for r in res.rows}
    assert set(rows) == {"scratch", "reweighted"}
    # each row's survival numbers are those of its model's replicas in the study's table
    from ase_mlff.agents.study import read_t_inst

    study = read_t_inst(out / "stability")
    total_fs = json.loads((out / "stability" / "summary.json").read_text())["total_fs"]
    for label, r in rows.items():
        ckpt = read_variant_done(done[label].parent)["checkpoint"]
        mine = [x for x in study if x["model"] == ckpt]
        stable = np.array([x["stable"] for x in mine])
        t = np.array([x["t_inst_fs"] for x in mine])
        assert np.isfinite(r["forces_mae"]) and r["n_replicas"] == len(mine) == 2
        assert r["fraction_stable"] == pytest.approx(stable.mean(), abs=1e-12)
        restricted = np.where(stable, total_fs, np.minimum(t, total_fs)).mean()
        assert r["t_inst_mean_fs"] == pytest.approx(restricted, rel=1e-12)
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
    assert {c.info.run_name for c in children} == {"scratch", "reweighted", "active_comparison"}
    # the active agent's rounds, verdict and MLflow steps (tiny: 2 replicas a round)
    verdict = json.loads((out / "active" / "verdict.json").read_text())
    assert res.verdict["stopped_because"] == verdict["stopped_because"]
    assert 1 <= len(verdict["rounds"]) <= 2 and (out / "active" / "round_00.json").exists()
    assert "The active agent's verdict" in (out / "comparison.md").read_text()
    (active_run,) = [c for c in children if c.info.run_name == "active_comparison"]
    assert client.get_metric_history(active_run.info.run_id, "replicas_scratch")
    children = [c for c in children if c is not active_run]
    for c in children:
        for key in ("test_forces_mae", "test_fnm_mae", "md_t_inst_mean_fs", "cluster0_rbp"):
            assert key in c.data.metrics, key
        arts = {a.path for a in client.list_artifacts(c.info.run_id)}
        assert {"checkpoint", "figures"} <= arts
    scratch = next(c for c in children if c.info.run_name == "scratch")
    history = client.get_metric_history(scratch.info.run_id, "val_forces_mae")
    assert len(history) == 2  # the learning curve, one point per epoch
    # the verdict's winner when it has one (one seed: its label is the variant's name)
    expected = res.verdict["winner"] or _expected_best(res.rows)
    assert res.best == expected and res.registered["name"] == "tiny-best"
    assert res.registered["variant"] == res.best
    versions = client.search_model_versions("name='tiny-best'")
    assert len(versions) == 1 and versions[0].tags["variant"] == res.best
    # the registered version is the chosen variant's child run's checkpoint
    best_child = next(c for c in children if c.info.run_name == res.best)
    assert versions[0].run_id == best_child.info.run_id


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
    ok = [{"name": "a", "kind": "scratch"}]
    with pytest.raises(ValueError, match="alpha"):
        StudySpec.from_dict({"name": "x", "variants": ok, "active": {"alpha": 0.9}})
    with pytest.raises(ValueError, match="the study's md"):
        StudySpec.from_dict({"name": "x", "variants": ok, "active": {"md": {"steps": 9}}})
    with pytest.raises(TypeError):
        StudySpec.from_dict({"name": "x", "variants": ok, "active": {"rounds": 3}})
    with pytest.raises(ValueError, match="below one round"):  # 1 × 8 × 1 ps = 8 replica-ps
        StudySpec.from_dict({"name": "x", "variants": ok, "active": {"max_replica_ps": 5.0}})


def _row(model, fraction, t_inst, mae):
    return {
        "model": model,
        "fraction_stable": fraction,
        "t_inst_mean_fs": t_inst,
        "forces_mae": mae,
    }


@pytest.mark.parametrize(
    ("rows", "best"),
    [
        # the stable fraction decides first, whatever the t_inst and the error
        ([_row("a", 0.75, 900.0, 0.01), _row("b", 1.0, 50.0, 0.09)], "b"),
        # equal fractions: the longer mean t_inst
        ([_row("a", 1.0, 200.0, 0.01), _row("b", 1.0, 300.0, 0.50)], "b"),
        # equal fractions and t_inst: the lower force MAE
        ([_row("a", 1.0, 300.0, 0.05), _row("b", 1.0, 300.0, 0.04)], "b"),
        # a complete tie: the first row (the spec's order), in either order
        ([_row("a", 0.5, 300.0, 0.05), _row("b", 0.5, 300.0, 0.05)], "a"),
        ([_row("b", 0.5, 300.0, 0.05), _row("a", 0.5, 300.0, 0.05)], "b"),
        # a model without a finite force error is never chosen
        ([_row("a", 1.0, 999.0, float("nan")), _row("b", 0.25, 10.0, 0.3)], "b"),
        ([_row("a", 1.0, 999.0, float("nan"))], None),
    ],
)
def test_best_variant_is_the_criterion(rows, best):
    assert best_by_criterion(rows) == best == _expected_best(rows)


def test_best_variant_matches_the_criterion_on_random_tables_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 7))
        rows = [
            _row(
                f"m{i}",
                float(rng.choice([0.5, 0.75, 1.0])),
                float(rng.choice([100.0, 200.0])),
                float(rng.choice([0.01, 0.02, np.nan])),
            )
            for i in range(n)
        ]
        assert best_by_criterion(rows) == _expected_best(rows), rows


def test_a_pretrained_variant_pretrains_then_finetunes_from_its_best(tmp_path):
    """``kind: pretrained`` in one task (no Ray): a pre-training stage on its own data (5 %
    held out), then fine-tuning that starts from the pre-trained best checkpoint with the
    reference energies refitted; both stages are recorded, and a rerun reads them back."""
    from ase_mlff.agents.comparison import ComparisonAgent, train_variant
    from ase_mlff.data import load_dataset
    from ase_mlff.models.io import load_model

    spec = _spec()
    pre_data = load_dataset("aspirin")[np.arange(0, 2000, 50)]  # 40 frames
    pre_data.save_npz(tmp_path / "pre.npz")
    spec["variants"] = [
        {
            "name": "ffpt",
            "kind": "pretrained",
            "pretrain_data": str(tmp_path / "pre.npz"),
            "pretrain": {"epochs": 1},
        }
    ]
    data_dir, _ = ComparisonAgent(spec, tmp_path / "study").prepare_data()
    kw = dict(study=spec, variant=spec["variants"][0], seed=0, data_dir=str(data_dir))
    info = train_variant(**kw, out_dir=str(tmp_path / "v"))
    assert set(info["stages"]) == {"pretrain", "finetune"}
    assert info["stages"]["pretrain"]["epochs_run"] == 1
    assert info["stages"]["finetune"]["epochs_run"] == 2
    assert len(info["pretrain_history"]) == 1 and len(info["history"]) == 2
    assert info["checkpoint"] == str(tmp_path / "v" / "finetune" / "best")
    _, meta = load_model(info["checkpoint"])
    assert meta["init_from"] == str(tmp_path / "v" / "pretrain" / "best")
    assert "refit_energy_mae_per_atom_after" in meta
    assert train_variant(**kw, out_dir=str(tmp_path / "v")) == info  # done: read back


def test_aspirin_compare_checks_its_active_settings_before_any_work(tmp_path):
    """``--active`` with a bad α fails naming it, before the pre-training data is made;
    good settings reach the study spec."""
    from ase_mlff.recipes import aspirin_compare, compare

    with pytest.raises(ValueError, match="alpha"):
        aspirin_compare.main(["--active", "--alpha", "0.9", "--out", str(tmp_path)])
    assert not (tmp_path / "pretrain_ff.npz").exists()
    spec = compare.build_spec(
        "quick", "aspirin", tmp_path / "p.npz", ["scratch", "sam"], None, None
    )
    spec["active"] = {"replicas_per_round": 4, "max_rounds": 3}
    from ase_mlff.agents.comparison import StudySpec

    assert StudySpec.from_dict(spec).active["max_rounds"] == 3


def test_a_trained_variants_checkpoint_is_found_after_the_study_folder_moved(tmp_path):
    """``variant_done.json`` stores the checkpoint relative to its variant folder, and
    files written before that (the writing run's absolute path) are re-rooted at the
    folder's name; a checkpoint outside the study (a user's) is kept as given."""
    import json

    from ase_mlff.agents.comparison import read_variant_done

    vdir = tmp_path / "moved" / "variants" / "ffpt-s0"
    vdir.mkdir(parents=True)
    cases = {
        "train/best": vdir / "train" / "best",
        "/old/place/variants/ffpt-s0/finetune/best": vdir / "finetune" / "best",
        "/models/users_own": Path("/models/users_own"),
    }
    for stored, expected in cases.items():
        (vdir / "variant_done.json").write_text(json.dumps({"checkpoint": stored, "seed": 0}))
        info = read_variant_done(vdir)
        assert Path(info["checkpoint"]) == expected and info["seed"] == 0
