"""Issue 17's lost-or-wrong-results cases: a second run into a busy folder, a resume with
another model or other data, budgets that cannot train. Each fails before anything is
written, with one message that names the problem."""

import fcntl
import json

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


# ------------------------------------------------------------- the calculator and models
def test_calculator_refuses_half_precision_and_broken_cells_and_warns_on_close_atoms():
    """float16 (once a bare KeyError, or silently poor), a NaN in the cell (an internal
    error), a cell 0.1 Å thin (−1.8e9 eV or an 8 GB allocation): clear errors before the
    model runs. Two atoms 0.05 Å apart (once −108 eV without a word): a warning naming
    them, and the numbers still come back."""
    import torch
    from ase import Atoms
    from ase.build import bulk, molecule

    from ase_mlff.calculators import MLFFCalculator

    for dtype in ("float16", torch.float16, "bfloat16"):
        with pytest.raises(ValueError, match="dtype must be float32 or float64"):
            MLFFCalculator("aspirin-painn", dtype=dtype)
    calc = MLFFCalculator("aspirin-painn")
    diamond = bulk("C", "diamond", 3.57)
    diamond.calc = calc
    cell = diamond.cell[:].copy()
    cell[0, 0] = np.nan
    diamond.set_cell(cell)
    with pytest.raises(ValueError, match="atoms.cell contains NaN or inf"):
        diamond.get_potential_energy()
    thin = Atoms("C", positions=[[0, 0, 0]], cell=[5.0, 5.0, 0.1], pbc=True, calculator=calc)
    with pytest.raises(ValueError, match=r"thinner than 0.5 Å \(c: 0.1 Å\)"):
        thin.get_potential_energy()
    slab = Atoms("C", positions=[[0, 0, 0]], cell=[5.0, 5.0, 0.1], pbc=[True, True, False])
    slab.calc = calc  # the thin direction is not periodic: fine
    assert np.isfinite(slab.get_potential_energy())
    methane = molecule("CH4")
    methane.positions[1] = methane.positions[0] + [0.05, 0.0, 0.0]
    methane.calc = calc
    with pytest.warns(RuntimeWarning, match=r"atoms 0 and 1 are 0.05 Å apart"):
        e = methane.get_potential_energy()
    assert np.isfinite(e)


@pytest.mark.parametrize(
    ("species", "message"),
    [
        ("CHO", r"species must be a list of atomic numbers or element symbols.*got 'CHO'"),
        ([1, "Xx"], r"'Xx' in \[1, 'Xx'\] is not an element"),
        ([0, 6], r"0 in \[0, 6\] is not an element"),
        ([], "species must be"),
    ],
)
def test_bad_species_are_named(species, message):
    """``species: "CHO"`` once gave an internal error; element symbols are accepted."""
    from ase_mlff.models import build_model

    with pytest.raises(ValueError, match=message):
        build_model({"name": "painn", "hidden": 8, "species": species})
    model = build_model({"name": "painn", "hidden": 8, "species": ["H", "C", "O"]})
    assert model.config["species"] == [1, 6, 8]


# --------------------------------------------------------------------- recipes' messages
def _recipe(*args, cwd):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "ase_mlff.recipes.train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_recipe_prints_one_line_for_a_user_error_and_the_traceback_with_debug(workdir):
    """A bad value: one line on stderr naming it, exit status 2, no traceback (once 14-50
    lines); ``--debug`` shows the traceback."""
    args = ["--data", str(workdir / "small.npz"), "--batch-size", "-4", "--out", "never"]
    args += ["--tracking-uri", f"sqlite:///{workdir / 'cli.db'}"]
    res = _recipe(*args, cwd=workdir)
    assert res.returncode == 2, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert errors == [
        "error: TrainConfig needs epochs >= 1, batch_size >= 1 and eval_batch_size >= 1, "
        "got epochs=8, batch_size=-4, eval_batch_size=64"
    ]
    assert "Traceback" not in res.stderr
    debug = _recipe(*args, "--debug", cwd=workdir)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    assert "ValueError: TrainConfig needs" in debug.stderr
    assert not (workdir / "never").exists()


def test_user_errors_and_bugs_are_told_apart():
    from ase_mlff.recipes.cli import is_user_error, run_recipe

    assert is_user_error(ValueError("x")) and is_user_error(CheckpointError("x"))
    assert is_user_error(RunDirectoryBusy("x")) and is_user_error(FileNotFoundError("x"))
    assert not is_user_error(KeyError("x")) and not is_user_error(ZeroDivisionError())

    def buggy(argv):
        return {}["missing"]

    with pytest.raises(KeyError):  # a bug keeps its traceback
        run_recipe(buggy, [])

    def multi(argv):
        raise ValueError("first line\nsecond line")

    with pytest.raises(SystemExit) as e:
        run_recipe(multi, [])
    assert e.value.code == 2


# ------------------------------------------------------------------------------- hangs
def _closed_port() -> int:
    import socket

    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_ray_address_or_mlflow_server_where_nothing_answers_fails_within_seconds(
    monkeypatch,
):
    """RAY_ADDRESS pointing at nothing and an MLflow server that refuses connections once
    hung (Ray's retries, 250 s of MLflow retries then a traceback): a ConnectionError that
    names the address, in seconds."""
    import time

    from ase_mlff.recipes.cli import is_user_error
    from ase_mlff.tracking import Tracker
    from ase_mlff.utils import ensure_ray

    port = _closed_port()
    t0 = time.perf_counter()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(ConnectionError, match=f"RAY_ADDRESS 127.0.0.1:{port}: nothing answers"):
        ensure_ray()
    with pytest.raises(ConnectionError, match="the MLflow tracking server http://127.0.0.1"):
        Tracker("x", uri=f"http://127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 30.0
    assert is_user_error(ConnectionError("x"))


# -------------------------------------------------------------------- data and geometry
def test_foreign_files_and_incomplete_npz_are_named(tmp_path):
    """A .txt, a text .xyz that is not XYZ and a dataset npz without forces once gave an
    internal error deep in ASE or a KeyError."""
    from ase_mlff.data import Dataset, DatasetError

    (tmp_path / "notes.txt").write_text("hello\nworld\n")
    (tmp_path / "bad.xyz").write_text("this is not\nan xyz file\n")
    for name in ("notes.txt", "bad.xyz"):
        with pytest.raises(DatasetError, match=rf"{name}: not a structure file ase.io.read"):
            load_dataset(tmp_path / name)
    ds = load_dataset("aspirin")[np.arange(3)]
    ds.save_npz(tmp_path / "full.npz")
    with np.load(tmp_path / "full.npz") as f:
        arrays = {k: f[k] for k in f.files if k != "forces_nc"}
    np.savez(tmp_path / "no_forces.npz", **arrays)
    with pytest.raises(
        DatasetError, match=r"no_forces.npz: an ase_mlff dataset npz without forces_nc"
    ):
        Dataset.load_npz(tmp_path / "no_forces.npz")


def test_a_slab_with_zero_c_is_accepted_as_in_ase():
    """pbc = (T, T, F) with c = 0 is legal in ASE; the energy and forces equal those with a
    30 Å vacuum vector (it was refused as a singular cell)."""
    from ase import Atoms

    from ase_mlff.calculators import MLFFCalculator

    flat = Atoms(
        "CHO",
        positions=[[0, 0, 0], [1.1, 0, 0], [-0.7, 1.0, 0.2]],
        cell=[[5.0, 0, 0], [1.0, 4.5, 0], [0, 0, 0]],
        pbc=[True, True, False],
    )
    tall = flat.copy()
    tall.cell[2] = [0, 0, 30.0]
    for a in (flat, tall):
        a.calc = MLFFCalculator("aspirin-painn")
    assert flat.get_potential_energy() == pytest.approx(tall.get_potential_energy(), abs=1e-10)
    np.testing.assert_allclose(flat.get_forces(), tall.get_forces(), atol=1e-10)
    line = Atoms("CC", positions=[[0, 0, 0], [1.4, 0, 0]], cell=[[2.8, 0, 0], [0, 0, 0], [0, 0, 0]])
    line.pbc = [True, False, False]
    line.calc = MLFFCalculator("aspirin-painn")
    assert np.isfinite(line.get_potential_energy())


def test_float32_far_from_the_origin_keeps_its_precision():
    """Aspirin moved by 1e6 Å: float32 forces once differed by 2.5 eV/Å; centred before
    the cast they equal the float64 forces at the origin to 1e-4 eV/Å."""
    import ase.io

    from ase_mlff.calculators import MLFFCalculator
    from ase_mlff.data.io import SHIPPED_DIR

    atoms = ase.io.read(SHIPPED_DIR / "aspirin_md17_order.xyz")
    ref = atoms.copy()
    ref.calc = MLFFCalculator("aspirin-painn")
    far = atoms.copy()
    far.positions += 1e6
    far.calc = MLFFCalculator("aspirin-painn", dtype="float32")
    np.testing.assert_allclose(far.get_forces(), ref.get_forces(), atol=1e-4)
    assert far.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-4)


@pytest.mark.parametrize(
    ("model", "field", "value", "message"),
    [
        ("painn", "hidden", 0, "PaiNN: hidden must be an integer >= 1, got 0"),
        ("painn", "n_interactions", 0, "PaiNN: n_interactions must be an integer >= 1"),
        ("painn", "hidden", "8", "PaiNN: hidden must be an integer >= 1, got '8'"),
        ("schnet", "n_filters", 0, "SchNet: n_filters must be an integer >= 1"),
        ("schnet", "cutoff", -1.0, r"SchNet: cutoff must be a number > 0 Å, got -1.0"),
    ],
)
def test_empty_networks_are_refused(model, field, value, message):
    """hidden 0 once built a network with empty layers that trained to nothing."""
    from ase_mlff.models import build_model

    with pytest.raises(ValueError, match=message):
        build_model({"name": model, "species": [1, 6, 8], field: value})


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--check-every", "0"], "--check-every: check_every must be an integer >= 1, got 0"),
        (["--agents", "0"], "--agents must be >= 1, got 0"),
        (["--replicas", "0"], "--replicas must be >= 1, got 0"),
    ],
)
def test_stability_flags_that_cannot_run_are_named(flag, message, capsys):
    from ase_mlff.recipes import stability

    with pytest.raises(SystemExit) as e:
        stability.main(["--replicas", "1", *flag])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_a_truncated_trainer_state_is_refused_in_one_line(tmp_path):
    """A trainer state cut off by a full disk once raised a bare OSError."""
    from ase_mlff.models import PaiNN
    from ase_mlff.training import Trainer

    ds = load_dataset("aspirin")[np.arange(0, 200, 20)]
    cfg = TrainConfig(epochs=1, batch_size=5)
    Trainer(
        PaiNN(hidden=8, n_interactions=1, species=[1, 6, 8]), ds[:8], ds[8:], cfg, tmp_path
    ).fit()
    state = tmp_path / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    again = Trainer(
        PaiNN(hidden=8, n_interactions=1, species=[1, 6, 8]), ds[:8], ds[8:], cfg, tmp_path
    )
    with pytest.raises(
        CheckpointError, match=r"^cannot resume from .*trainer_state.pt cannot be read"
    ):
        again.try_resume()


# ------------------------------------------------- moved here: one module for issue 17
def test_a_run_left_running_by_a_killed_process_is_closed_at_the_next_start(tmp_path):
    """A run whose process died without closing it (SIGKILL: no handler runs) is marked
    FAILED, with the reason, when the next run of the experiment starts on this host; a
    run of a live process and one of another host stay RUNNING."""
    import os
    import socket
    import subprocess
    import sys

    from ase_mlff.tracking import HOST_TAG, PID_TAG, Tracker

    tracker = Tracker("stale", uri=f"sqlite:///{tmp_path / 'm.db'}")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    host = socket.gethostname()
    runs = {}
    for name, pid, h in (
        ("killed", dead.stdout.strip(), host),
        ("alive", str(os.getpid()), host),
        ("elsewhere", dead.stdout.strip(), "another-host"),
    ):
        r = tracker.client.create_run(
            tracker.experiment_id, run_name=name, tags={PID_TAG: pid, HOST_TAG: h}
        )
        runs[name] = r.info.run_id
    with tracker.run("next") as run:
        assert tracker.get_run(run.run_id).data.tags[PID_TAG] == str(os.getpid())
    status = {n: tracker.get_run(i).info.status for n, i in runs.items()}
    assert status == {"killed": "FAILED", "alive": "RUNNING", "elsewhere": "RUNNING"}
    error = tracker.get_run(runs["killed"]).data.tags["error"]
    assert error.startswith(f"the process (pid {dead.stdout.strip()} on {host}) ended")


def test_a_flipped_bit_or_an_edited_config_does_not_load(tmp_path):
    """One flipped bit in the weights (it once loaded and gave +90,840 eV) and a model.json
    whose cutoff was edited (it once loaded and was silently wrong) are refused, naming
    the cause; the intact copy loads and predicts as the original."""
    import shutil

    import ase.io

    from ase_mlff.calculators import MLFFCalculator
    from ase_mlff.calculators.mlff import resolve_model_path
    from ase_mlff.data.io import SHIPPED_DIR
    from ase_mlff.models.io import META, WEIGHTS, load_model

    path = resolve_model_path("aspirin-painn")
    aspirin = ase.io.read(SHIPPED_DIR / "aspirin_md17_order.xyz")
    flipped = tmp_path / "flipped"
    shutil.copytree(path, flipped)
    data = bytearray((flipped / WEIGHTS).read_bytes())
    data[len(data) // 2] ^= 0x10
    (flipped / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted or was replaced"):
        load_model(flipped)
    edited = tmp_path / "edited"
    shutil.copytree(path, edited)
    meta = json.loads((edited / META).read_text())
    meta["model"]["cutoff"] = meta["model"]["cutoff"] + 1.0
    (edited / META).write_text(json.dumps(meta))
    with pytest.raises(
        CheckpointError, match=r"differs from the one saved with the weights \(cutoff"
    ):
        load_model(edited)
    intact = tmp_path / "intact"
    shutil.copytree(path, intact)
    a, b = aspirin.copy(), aspirin.copy()
    a.calc, b.calc = MLFFCalculator(path), MLFFCalculator(intact)
    assert a.get_potential_energy() == b.get_potential_energy()


def test_non_finite_labels_are_refused_before_any_run_naming_the_frames(workdir):
    """NaN forces in a test frame, NaN energy in a training frame: a ValueError that names
    the set and the frames, raised before an MLflow run or a file exists (the test frame
    once gave "test force MAE nan" and exit 0, a validation frame "no checkpoint")."""
    from ase_mlff.data.splits import split_dataset

    ds = load_dataset(workdir / "small.npz")
    cfg = train_recipe.build_config(
        train_recipe.build_parser().parse_args(_args(workdir, workdir / "x"))
    )
    split = split_dataset(ds, cfg.data)
    for kind, frame, what in (
        ("forces", split.test[3], "test"),
        ("energy", split.train[5], "training"),
    ):
        bad = load_dataset(workdir / "small.npz")
        if kind == "forces":
            bad.forces_nc[bad.ptr_s[frame] + 2, 1] = np.nan
        else:
            bad.energy_s[frame] = np.nan
        bad.save_npz(workdir / f"nan_{kind}.npz")
        args = _args(workdir, workdir / f"nan_{kind}_run", data=f"nan_{kind}.npz")
        sub = split.test if what == "test" else split.train
        index = int(np.flatnonzero(np.asarray(sub) == frame)[0])  # its index in that set
        with pytest.raises(ValueError, match=f"^the {what} set has non-finite labels: {kind}") as e:
            train_recipe.main(args)
        assert f"in 1 frame(s) ({index})" in str(e.value)
        assert not (workdir / f"nan_{kind}_run").exists()


# ------------------------------------------------------------- studies (no agent starts)
def test_a_study_resumed_with_other_settings_or_on_a_missing_gpu_is_refused(ray_local, tmp_path):
    """A stability study's folder records its models, replicas and MD settings (and its
    agents' split, which a rerun keeps: see ``test_agents.py``): a rerun with other MD
    settings is refused before any agent starts; ``device="cuda"`` on a cluster without a
    GPU (once: agents waiting forever) too."""
    import ase.io

    from ase_mlff.agents.study import LAYOUT_FILE, run_stability_study
    from ase_mlff.data.io import SHIPPED_DIR

    start = ase.io.read(SHIPPED_DIR / "aspirin_md17_order.xyz")
    md = {"steps": 20, "check_every": 10}
    layout = {"models": ["aspirin-painn"], "agents": [[0], [1]], "md": {**md, "steps": 40}}
    (tmp_path / LAYOUT_FILE).write_text(json.dumps(layout))
    with pytest.raises(ValueError, match=r"holds a stability study with other md \(2 replicas, md"):
        run_stability_study(
            ["aspirin-painn"], [start], n_replicas=2, n_agents=1, out_dir=tmp_path, md=md
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == [LAYOUT_FILE]
    with pytest.raises(ValueError, match="the Ray cluster has no GPU"):
        run_stability_study(
            ["aspirin-painn"],
            [start],
            n_replicas=1,
            out_dir=tmp_path / "gpu",
            md=md,
            device="cuda",
        )


# ------------------------------------------------------------------ more bad inputs
def _calc_case(kind):
    from ase import Atoms
    from ase.build import molecule

    from ase_mlff.calculators import MLFFCalculator

    calc = MLFFCalculator("aspirin-painn")
    if kind == "empty":
        atoms = Atoms()
    elif kind == "nan":
        atoms = molecule("CH4")
        atoms.positions[0, 1] = np.nan
    elif kind == "element":
        atoms = molecule("SiH4")
    else:
        atoms = molecule("CH4")
    atoms.calc = calc
    return atoms


@pytest.mark.parametrize(
    ("kind", "call", "error", "message"),
    [
        ("empty", "get_potential_energy", ValueError, "MLFFCalculator got an empty Atoms object"),
        ("nan", "get_potential_energy", ValueError, "atoms.positions contain NaN or inf"),
        ("element", "get_forces", ValueError, "never trained on element.*Si; it knows H, C, O"),
        ("stress", "get_stress", Exception, "stress is only defined for 3-D periodic systems"),
    ],
)
def test_calculator_inputs_it_cannot_evaluate(kind, call, error, message):
    atoms = _calc_case(kind)
    with pytest.raises(error, match=message):
        getattr(atoms, call)()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(optimizer="lbfgs"), r"TrainConfig.optimizer must be one of \('adamw', 'sam'\)"),
        (dict(loss="huber"), "TrainConfig.loss must be one of"),
        (dict(select_by="stability"), r'select_by="stability" needs probe_every > 0'),
        (dict(sam_rho=0.0), "TrainConfig.sam_rho must be > 0, got 0.0"),
        (dict(stress_weight=-1.0), "TrainConfig.stress_weight must be >= 0, got -1.0"),
    ],
)
def test_training_settings_that_do_not_exist_are_named(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(steps=100, dt=0.0), "dt must be > 0 fs, got 0.0"),
        (dict(steps=100, integrator="verlet2"), "unknown integrator 'verlet2'; choose from"),
        (dict(steps=100, temperature_K=-5.0), "temperature_K must be >= 0 K, got -5.0"),
        (dict(steps=0), "steps must be an integer >= 1, got 0"),
        (dict(), r"an MD protocol needs steps \(the run length\)"),
    ],
)
def test_md_protocols_that_cannot_run_are_named(fields, message):
    """(a protocol without steps once gave a TypeError from the dataclass)"""
    from ase_mlff.md.protocol import make_protocol
    from ase_mlff.md.validation import MDParameterError

    with pytest.raises(MDParameterError, match=message):
        make_protocol(None, **fields)


def test_unknown_data_and_a_study_folder_without_a_study_are_named(tmp_path):
    from ase_mlff.agents.evaluation import EvaluationOptions, evaluation_report

    with pytest.raises(FileNotFoundError, match=r"no dataset named 'nonexistent_set' \(shipped"):
        load_dataset("nonexistent_set")
    with pytest.raises(FileNotFoundError, match="is not a stability study directory"):
        evaluation_report(EvaluationOptions(stability=tmp_path, out=tmp_path / "r"))
    with pytest.raises(ValueError, match="latent_pool='frame' needs latent_data"):
        evaluation_report(
            EvaluationOptions(model=["aspirin-painn"], latent_pool="frame", out=tmp_path / "r")
        )


def test_fine_tuning_from_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    from ase_mlff.models import PaiNN, SchNet, save_model
    from ase_mlff.training.stage import run_stage

    ds = load_dataset("aspirin")[np.arange(0, 100, 10)]
    ckpt = save_model(
        SchNet(hidden=8, n_filters=8, n_interactions=1, species=[1, 6, 8]), tmp_path / "schnet"
    )
    model = PaiNN(hidden=8, n_interactions=1, species=[1, 6, 8])
    cfg = TrainConfig(epochs=1, batch_size=5)
    with pytest.raises(ValueError, match="needs the same architecture"):
        run_stage("ft", model, ds[:8], ds[8:], cfg, tmp_path / "ft", init_from=ckpt)


def test_a_terminated_run_leaves_no_ray_processes_behind(tmp_path):
    """SIGTERM (``kill``, a scheduler's time limit) on a process that started a local Ray:
    every helper process of that Ray session (GCS server, raylet, dashboard, monitors) is
    gone within seconds. (SIGKILL cannot be handled by the process; see
    ``Tracker.close_stale_runs`` for what a later start does about its MLflow run.)"""
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import os, time\n"
        "import ray._private.worker as w\n"
        "from ase_mlff.utils import ensure_ray\n"
        "ensure_ray(num_cpus=1)\n"
        "print(w._global_node.get_session_dir_path(), flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    session = proc.stdout.readline().strip().rsplit("/", 1)[-1]
    assert session.startswith("session_")

    def helpers() -> list[str]:
        out = subprocess.run(["pgrep", "-f", session], capture_output=True, text=True)
        return out.stdout.split()

    assert helpers(), "the Ray session started helper processes"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    deadline = time.time() + 30
    while helpers() and time.time() < deadline:
        time.sleep(1)
    assert helpers() == []


def test_an_extxyz_without_energies_is_refused_before_training(tmp_path):
    """Structures without labels (once: "lower the learning rate" after the first batch):
    the missing energies and forces are named at the start, frame by frame."""
    import ase.io

    from ase_mlff.models import PaiNN
    from ase_mlff.training import Trainer

    ds = load_dataset("aspirin")[np.arange(0, 120, 10)]
    ase.io.write(tmp_path / "bare.extxyz", ds.to_atoms_list(with_labels=False))
    bare = load_dataset(tmp_path / "bare.extxyz")
    model = PaiNN(hidden=8, n_interactions=1, species=[1, 6, 8])
    with pytest.raises(
        ValueError,
        match=r"^the training set has non-finite labels: energy in 8 frame\(s\) \(0, 1, 2",
    ):
        Trainer(model, bare[:8], bare[8:], TrainConfig(epochs=1), tmp_path / "run")


def test_placement_does_not_make_another_stage_and_species_may_be_left_open(tmp_path):
    """A finished stage rerun with only another thread count is read back, not retrained
    (data-parallel ranks differ in their device); a model built without species saves,
    loads and trains (its checkpoint once failed to load after training)."""
    from dataclasses import replace

    from ase_mlff.models import build_model, load_model, save_model
    from ase_mlff.training.stage import run_stage

    ds = load_dataset("aspirin")[np.arange(0, 100, 10)]
    cfg = TrainConfig(epochs=1, batch_size=5)
    model = build_model({"name": "painn", "hidden": 8, "n_interactions": 1})
    assert model.config["species"] is None
    _, first = run_stage("s", model, ds[:8], ds[8:], cfg, tmp_path / "s")
    again_model = build_model({"name": "painn", "hidden": 8, "n_interactions": 1})
    _, again = run_stage("s", again_model, ds[:8], ds[8:], replace(cfg, threads=2), tmp_path / "s")
    assert again.history == first.history and again.epochs_run == 1
    save_model(model, tmp_path / "open")
    assert load_model(tmp_path / "open")[0].config["species"] is None
