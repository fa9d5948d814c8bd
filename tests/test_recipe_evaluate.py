"""recipes.evaluate end to end: the shipped model and an untrained one on a slice of the
shipped aspirin test split, with a short stability study of both over Ray agents."""

import csv
import json

import numpy as np
import pytest
import torch

from ase_mlff.data.splits import start_structures
from ase_mlff.models import PaiNN, save_model

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 2-model, 2-replica, 100 fs study: the shipped PaiNN holds aspirin together, a
    random tiny PaiNN does not."""
    from ase_mlff.agents import run_stability_study

    tmp = tmp_path_factory.mktemp("evaluate")
    torch.manual_seed(0)
    tiny = str(save_model(PaiNN(species=[1, 6, 8], hidden=8, n_interactions=1), tmp / "tiny"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_stability_study(
            ["aspirin-painn", tiny],
            start_structures("aspirin", 2),
            n_replicas=2,
            out_dir=tmp / "study",
            md={"steps": 200, "dt": 0.5, "temperature_K": 500, "seed": 1, "record_every": 10},
        )
    finally:
        ray.shutdown()
    return tmp, tiny


def _unvisited_share(study_dir, specs, quad, bins=36):
    """Independent of ase_mlff.metrics.fes: ASE's dihedral (degrees, [0, 360)) of the
    stable frames stored for the first model (replica_*.traj, 2 × 21 frames) and of the
    recipe's test frames (--max-test 60, seed 0), histogrammed on 36 bins over [-π, π);
    the share of reference-populated bins with no model sample."""
    import ase.io

    from ase_mlff.agents.evaluation import split_data
    from ase_mlff.agents.study import model_dirs

    def phi(atoms_list):
        d = np.deg2rad([a.get_dihedral(*quad) for a in atoms_list])
        return np.where(d >= np.pi, d - 2 * np.pi, d)

    files = sorted((study_dir / model_dirs(specs)[specs[0]]).rglob("replica_*.traj"))
    frames = [a for f in files for a in ase.io.read(f, ":")]
    assert len(frames) == 2 * (200 // 10 + 1)
    _, test = split_data("aspirin", None, 60, 0)
    ref = [test.to_atoms(k, with_labels=False) for k in range(len(test))]
    edges = np.linspace(-np.pi, np.pi, bins + 1)
    h_model = np.histogram(phi(frames), edges)[0]
    h_ref = np.histogram(phi(ref), edges)[0]
    return float(((h_ref > 0) & (h_model == 0)).sum() / (h_ref > 0).sum())


def test_evaluate_report_with_stability(study):
    from mlflow.tracking import MlflowClient

    from ase_mlff.recipes.evaluate import main

    tmp, tiny = study
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    out = tmp / "report"
    res = main(
        [
            *("--model", "aspirin-painn", "--model", tiny, "--data", "aspirin"),
            *("--max-test", "60", "--n-nearest", "20", "--latent-frames", "3"),
            *("--reference-calculator", "none", "--stability", str(tmp / "study")),
            *("--out", str(out), "--tracking-uri", uri),
        ]
    )
    shipped, untrained = res["models"]["aspirin-painn"], res["models"]["tiny"]
    # the shipped model is accurate (about 18 meV/Å on this split), the random one is not
    assert shipped["global"]["forces_mae"] < 0.05 < untrained["global"]["forces_mae"]
    assert set(shipped["elements"]) == {"C", "H", "O"}
    assert len(shipped["clusters"]["clusters"]) == 3
    assert sum(c["n_frames"] for c in shipped["clusters"]["clusters"]) == 60
    ana = res["analyses"]
    assert ana["delta_f"]["mae"]["aspirin-painn"] < ana["delta_f"]["mae"]["tiny"]
    assert set(ana["bond_scans"]) == {"C11-O8", "C6-O12", "C10-O7"}
    angles = ana["force_angles"]
    assert angles["aspirin-painn vs reference"]["median_deg"] < 10.0
    st = res["stability"]["models"]
    assert st["aspirin-painn"]["fraction_stable"] == 1.0 and st["tiny"]["fraction_stable"] == 0.0
    assert st["aspirin-painn"]["stable_frames"] == 2 * (200 // 10 + 1)  # t = 0, 5, ..., 100 fs
    assert st["aspirin-painn"]["h_r_mae"] < st["tiny"]["h_r_mae"]
    # the share of the reference's populated dihedral bins the stable MD never visited,
    # recomputed from ASE dihedrals of the stored frames and of the evaluated test frames
    expected = _unvisited_share(tmp / "study", ["aspirin-painn", tiny], (0, 5, 10, 7))
    assert st["aspirin-painn"]["fes_unvisited_C0-C5-C10-O7"] == pytest.approx(expected, abs=1e-12)

    # files: summary, per-model CSV row, JSON, non-empty figures
    summary = (out / "summary.md").read_text()
    assert "paper 003 Fig. 3" in summary and "RBP" in summary
    with open(out / "metrics.csv") as f:
        table = {r["model"]: r for r in csv.DictReader(f)}
    assert set(table) == {"aspirin-painn", "tiny"}
    assert float(table["aspirin-painn"]["test_forces_mae"]) == pytest.approx(
        shipped["global"]["forces_mae"]
    )
    json.loads((out / "results.json").read_text())
    for name in (
        "elements.png",
        "clusters_pca.png",
        "latent.png",
        "delta_f_mae.png",
        "force_vs_stability.png",
        "h_r.png",
        "survival.png",
        "fes_1d.png",
        "fes_2d.png",
    ):
        assert (out / "figures" / name).stat().st_size > 5000, name

    # MLflow: one parent, a child per model with its metrics and figures
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("evaluate")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and {r.info.run_name for r in children} == {"aspirin-painn", "tiny"}
    for child in children:
        m = child.data.metrics
        for key in ("test_forces_mae", "test_fnm_max_err", "cluster0_rbp", "delta_f_mae"):
            assert np.isfinite(m[key]), key
        assert "md_t_inst_mean_fs" in m and "element_H_fnm_mae" in m
    parent_artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"summary.md", "metrics.csv", "results.json", "figures"} <= parent_artifacts


def test_evaluate_rejects_a_directory_that_is_not_a_study(tmp_path):
    from ase_mlff.recipes.evaluate import main

    with pytest.raises(FileNotFoundError, match="not a stability study"):
        main(
            [
                *("--data", "aspirin", "--max-test", "20", "--no-analyses"),
                *("--stability", str(tmp_path), "--out", str(tmp_path / "r")),
                *("--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"),
            ]
        )


def test_aspirin_torsions_are_bonded_chains(aspirin):
    from ase_mlff.metrics.bond_forces import covalent_bonds
    from ase_mlff.metrics.model_analyses import ASPIRIN_DIHEDRALS

    bonds = {tuple(sorted(map(int, b))) for b in covalent_bonds(aspirin)}
    for quad in ASPIRIN_DIHEDRALS.values():
        for p, q in zip(quad[:-1], quad[1:]):
            assert tuple(sorted((p, q))) in bonds, quad


def test_periodic_observables_of_water_frames():
    """The periodic branch of the report: the reference frames themselves, read as a
    trajectory, give RDFs close to the reference and a positive O self-diffusion."""
    from ase_mlff.data import load_dataset
    from ase_mlff.metrics.stable_observables import periodic_observables
    from ase_mlff.metrics.trajectory import Trajectory

    ds = load_dataset("water")
    test, run = ds[np.arange(0, 40)], ds[np.arange(0, 80)]
    traj = Trajectory.from_atoms(run.to_atoms_list(with_labels=False), dt_fs=50.0)
    res = {"models": {"m": {}}}
    figs = periodic_observables({"m": [traj]}, test, res)
    m = res["models"]["m"]
    assert set(figs) == {"rdf.png"}
    for pair in ("OO", "HO", "HH"):
        assert 0.0 <= m[f"rdf_mae_{pair}"] < 0.5, (pair, m)
    assert 0.0 < m["diffusion_O_cm2_s"] < 1e-3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bonds", "0-2"], "ring"),
        (["--bonds", "0-99"], "--bonds takes"),
        (["--dihedrals", "0-5-10"], "--dihedrals takes"),
    ],
)
def test_evaluate_rejects_bad_bonds_and_torsions_before_work(tmp_path, args, message):
    from ase_mlff.recipes.evaluate import main

    with pytest.raises(ValueError, match=message):
        main(["--data", "aspirin", "--max-test", "20", *args, "--out", str(tmp_path / "r")])
    assert not (tmp_path / "r" / "summary.md").exists()


def test_study_rows_match_models_by_path_and_survive_moved_checkpoints(tmp_path):
    from ase_mlff.agents.evaluation import study_rows

    (tmp_path / "t_inst.csv").write_text(
        "model,replica_id,t_inst_fs,reason,stable,frames,start_index,traj_dir\n"
        f"aspirin-painn,0,nan,,True,11,0,{tmp_path}/aspirin-painn/agent_00\n"
        f"/gone/ckpt/best,0,15.0,bond_length,False,2,0,{tmp_path}/ckpt-best/agent_00\n"
    )
    found = study_rows(tmp_path, ["aspirin-painn"], {"aspirin-painn": "aspirin-painn"})
    assert found["aspirin-painn"]["dir"] == "aspirin-painn"
    assert found["aspirin-painn"]["rows"][0]["stable"] is True
    with pytest.raises(ValueError, match="none of the models"):
        study_rows(tmp_path, [str(tmp_path)], {str(tmp_path): "x"})
