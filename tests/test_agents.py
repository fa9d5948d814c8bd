"""Ray trajectory agents: a study over two agents, and an agent killed on purpose resumes
from its checkpoint without losing frames."""

import json
import os
import signal
import time

import ase.io
import numpy as np
import pytest
import torch

from ase_mlff.data.io import SHIPPED_DIR
from ase_mlff.md.storage import read_summary, stored_positions
from ase_mlff.models import PaiNN, save_model

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    m = PaiNN(species=[1, 6, 8], hidden=8, n_interactions=1, cutoff=4.0)
    return str(save_model(m, tmp_path_factory.mktemp("ckpt") / "tiny"))


def _aspirin():
    return ase.io.read(SHIPPED_DIR / "aspirin_md17_order.xyz")


def test_study_over_two_agents(ray_local, tiny_model, tmp_path):
    from ase_mlff.agents import run_stability_study
    from ase_mlff.agents.study import model_dirs

    def model_dir_name(m):
        return model_dirs([m])[m]

    res = run_stability_study(
        [tiny_model],
        [_aspirin()],
        n_replicas=4,
        n_agents=2,
        out_dir=tmp_path,
        md={"steps": 100, "dt": 0.5, "temperature_K": 500, "seed": 1, "check_every": 10},
        checkpoint_every=50,
    )
    assert len(res.rows) == 4 and [r["replica_id"] for r in res.rows] == [0, 1, 2, 3]
    # a random untrained model does not hold aspirin together: the detectors stop it
    assert all(not r["stable"] and r["t_inst_fs"] > 0 for r in res.rows)
    times, frac = res.curves[tiny_model]
    assert frac[0] == 1.0 and frac[-1] == 0.0 and np.all(np.diff(frac) <= 0)
    for f in ("t_inst.csv", "survival.csv", "survival.png", "summary.json"):
        assert (tmp_path / f).exists()
    s = res.summaries[tiny_model]
    assert s["fraction_stable"] == 0.0 and s["n_replicas"] == 4
    # resumed with another agent split (the default, one agent per CPU, differs between
    # machines): the study keeps its own split, so every agent's finished checkpoint is
    # used and the rows are the same (once: a replica that never ran reported as stable)
    again = run_stability_study(
        [tiny_model],
        [_aspirin()],
        n_replicas=4,
        n_agents=1,
        out_dir=tmp_path,
        md={"steps": 100, "dt": 0.5, "temperature_K": 500, "seed": 1, "check_every": 10},
        checkpoint_every=50,
    )
    strip = [{k: v for k, v in r.items() if k != "traj_dir"} for r in res.rows]
    assert [{k: v for k, v in r.items() if k != "traj_dir"} for r in again.rows] == strip
    assert sorted(p.name for p in (tmp_path / model_dir_name(tiny_model)).iterdir()) == [
        "agent_00",
        "agent_01",
    ]
    with pytest.raises(ValueError, match="holds a stability study with other number of replicas"):
        run_stability_study(
            [tiny_model],
            [_aspirin()],
            n_replicas=5,
            out_dir=tmp_path,
            md={"steps": 100, "dt": 0.5, "temperature_K": 500, "seed": 1, "check_every": 10},
            checkpoint_every=50,
        )
    # a GPU device on a cluster without one: refused at once (agents once waited forever)
    with pytest.raises(ValueError, match="the Ray cluster has no GPU"):
        run_stability_study(
            [tiny_model],
            [_aspirin()],
            n_replicas=1,
            out_dir=tmp_path / "gpu",
            md={"steps": 20, "check_every": 10},
            device="cuda",
        )


def test_two_models_with_more_agents_than_cpus(ray_local, tiny_model, tmp_path):
    """4 agents on 2 CPUs: finished agents free their CPUs for the waiting ones (this hung
    when two checkpoints shared a name and finished actors kept their CPUs)."""
    import shutil
    from pathlib import Path

    from ase_mlff.agents import run_stability_study

    a = tmp_path / "scratch" / "best"
    b = tmp_path / "finetune" / "best"
    shutil.copytree(tiny_model, a)
    shutil.copytree(tiny_model, b)
    res = run_stability_study(
        [str(a), str(b)],
        [_aspirin()],
        n_replicas=2,
        n_agents=2,
        out_dir=tmp_path / "study",
        md={"steps": 20, "dt": 0.5, "temperature_K": 300, "seed": 1, "check_every": 10},
    )
    assert len(res.rows) == 4
    dirs = {Path(r["traj_dir"]).parent.name for r in res.rows}
    assert dirs == {"scratch-best", "finetune-best"}


def _lindemann_only(references, state):
    from ase_mlff.md.detectors import LindemannIndex, NonFinite

    return [NonFinite(), LindemannIndex(state, window=7)]


def test_killed_agent_resumes_from_checkpoint(ray_local, tiny_model, tmp_path):
    from ase_mlff.agents import TrajectoryAgent, TrajectorySpec
    from ase_mlff.md.runner import run_md
    from ase_mlff.models.io import load_model

    md = {
        "steps": 1500,
        "dt": 0.5,
        "temperature_K": 300,
        "seed": 3,
        "check_every": 10,
        "record_every": 50,
    }
    spec = TrajectorySpec(
        model=tiny_model,
        images=(_aspirin(), _aspirin()),
        replica_ids=(0, 1),
        traj_dir=str(tmp_path / "agent"),
        md=md,
        checkpoint_every=100,
        # a windowed judge whose windows (7 checks = 70 steps) straddle the checkpoints
        detector_factory=_lindemann_only,
    )
    import sys

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # ships _lindemann_only
    agent = ray.remote(max_restarts=1, max_task_retries=1, max_concurrency=2)(
        TrajectoryAgent
    ).remote(spec)
    pid = ray.get(agent.pid.remote())
    ref = agent.run.remote()
    ckpt = tmp_path / "agent" / "md_state.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert ckpt.exists(), "the agent wrote no checkpoint"
    # results stream back while the run goes on
    so_far = ray.get(agent.progress.remote())["replicas"]
    assert 0 < so_far["0"]["frames"] < 31
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)  # kill the worker on purpose
    res = ray.get(ref, timeout=300)
    assert ray.get(agent.pid.remote()) != pid  # Ray restarted the actor
    assert [r["frames"] for r in res["replicas"]] == [31, 31]
    assert read_summary(tmp_path / "agent")["replicas"]["1"]["frames"] == 31

    # the resumed trajectory is the one an uninterrupted run produces
    model, _ = load_model(tiny_model, dtype=torch.float64)
    clean = run_md(
        model,
        [_aspirin(), _aspirin()],
        replica_ids=[0, 1],
        detector_factory=_lindemann_only,
        **md,
    )
    assert [r["reason"] for r in res["replicas"]] == [r.reason for r in clean.replicas]
    np.testing.assert_array_equal(
        [r["t_inst_fs"] for r in res["replicas"]], [r.t_inst_fs for r in clean.replicas]
    )
    np.testing.assert_allclose(
        stored_positions(tmp_path / "agent", 1), clean.replicas[1].positions_tn3, atol=1e-9
    )


def test_stability_recipe_logs_parent_and_child_runs(ray_local, tiny_model, tmp_path):
    from mlflow.tracking import MlflowClient

    from ase_mlff.recipes import stability

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = stability.main(
        [
            "--model",
            tiny_model,
            "--replicas",
            "3",
            "--steps",
            "60",
            "--agents",
            "1",
            "--out",
            str(tmp_path / "study"),
            "--tracking-uri",
            uri,
            "--experiment",
            "stab",
        ]
    )
    client = MlflowClient(uri)
    parent = client.get_run(res["run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.params["md.integrator"] == "nose_hoover"
    exp = client.get_experiment_by_name("stab")
    children = client.search_runs(
        [exp.experiment_id], f"tags.mlflow.parentRunId = '{res['run_id']}'"
    )
    assert len(children) == 1
    m = children[0].data.metrics
    # the logged survival numbers are those of the study's own per-replica table
    from ase_mlff.agents.study import read_t_inst

    rows = read_t_inst(tmp_path / "study")
    total_fs = json.loads((tmp_path / "study" / "summary.json").read_text())["total_fs"]
    stable = np.array([r["stable"] for r in rows])
    t_inst = np.array([r["t_inst_fs"] for r in rows])
    assert len(rows) == m["n_replicas"] == 3
    assert m["n_unstable"] == int((~stable).sum())
    assert m["fraction_stable"] == pytest.approx(stable.mean(), abs=1e-12)
    # restricted mean survival time with censoring only at the end: the mean of min(t, τ)
    restricted = np.where(stable, total_fs, np.minimum(t_inst, total_fs)).mean()
    assert m["t_inst_mean_fs"] == pytest.approx(restricted, rel=1e-12)
    arts = {a.path for a in client.list_artifacts(children[0].info.run_id)}
    assert {"figures", "trajectories"} <= arts


def test_agent_with_calculator_spec_runs_gfn2_xtb(ray_local, tmp_path):
    """A reference method (GFN2-xTB via tblite) through an agent and the ASE-driven path."""
    from ase_mlff.agents import TrajectoryAgent, TrajectorySpec
    from ase_mlff.agents.specs import make_calculator

    spec = TrajectorySpec(
        model=None,
        calculator={"name": "tblite", "method": "GFN2-xTB"},
        images=(_aspirin(),),
        replica_ids=(0,),
        traj_dir=str(tmp_path),
        md={
            "steps": 20,
            "dt": 0.5,
            "temperature_K": 500,
            "seed": 0,
            "check_every": 5,
            "record_every": 5,
        },
    )
    agent = ray.remote(TrajectoryAgent).remote(spec)
    res = ray.get(agent.run.remote(), timeout=300)
    assert res["replicas"][0]["stable"] and res["replicas"][0]["frames"] == 5
    assert read_summary(tmp_path)["replicas"]["0"]["frames"] == 5
    with pytest.raises(ValueError, match="unknown calculator"):
        make_calculator({"name": "nope"})
    with pytest.raises(ValueError, match="exactly one of model and calculator"):
        TrajectoryAgent(TrajectorySpec(model=None, images=(), replica_ids=(), traj_dir="x"))


def test_model_dirs_are_distinct_for_checkpoints_of_the_same_name():
    from ase_mlff.agents.study import model_dirs

    dirs = model_dirs(["runs/x/scratch/best", "runs/x/finetune/best", "aspirin-painn"])
    assert dirs == {
        "runs/x/scratch/best": "scratch-best",
        "runs/x/finetune/best": "finetune-best",
        "aspirin-painn": "aspirin-painn",
    }
    with pytest.raises(ValueError, match="twice"):
        model_dirs(["a", "a"])
