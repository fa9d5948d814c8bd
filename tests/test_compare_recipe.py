"""The compare recipe on data the project never shipped (issue 15): a user's ethanol file
labelled by GFN2-xTB, fair budgets at equal optimiser steps, ffpt's force field for a new
molecule (GAFF through AmberTools, from the bonds RDKit perceives) and the errors a user
gets before any work."""

from __future__ import annotations

import json
import math
import shutil

import ase.io
import numpy as np
import pytest
from ase.build import molecule

from ase_mlff.agents.comparison import check_study_data, training_budget
from ase_mlff.recipes import compare

# the comparison trains through Ray tasks: one local Ray for this module, shut down after
# it, so no later test finds a Ray it did not start
pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def ethanol_file(tmp_path_factory):
    """40 rattled ethanol frames with GFN2-xTB (tblite) energies and forces, as extxyz."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from tblite.ase import TBLite

    rng = np.random.default_rng(0)
    base = molecule("CH3CH2OH")
    frames = []
    for _ in range(40):
        a = base.copy()
        a.positions += rng.normal(0.0, 0.06, a.positions.shape)
        a.calc = TBLite(method="GFN2-xTB", verbosity=0)
        e, f = a.get_potential_energy(), a.get_forces()
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
        frames.append(a)
    path = tmp_path_factory.mktemp("user") / "ethanol_gfn2.extxyz"
    ase.io.write(path, frames)
    return path


def _args(data, out, *extra):
    return [
        "--data",
        str(data),
        "--n-train",
        "16",
        "--n-val",
        "8",
        "--epochs",
        "2",
        "--steps",
        "40",
        "--replicas",
        "2",
        "--out",
        str(out),
        "--tracking-uri",
        f"sqlite:///{out}/mlflow.db",
        *extra,
    ]


def test_compare_runs_on_a_users_file_at_equal_steps(ethanol_file, tmp_path):
    """scratch and sam on a file never shipped: both take 2 epochs × ⌈16/16⌉ = 2 optimiser
    steps; the NVE gate and the active verdict come out; the starts are test frames."""
    out = tmp_path / "cmp"
    res = compare.main(
        _args(ethanol_file, out, "--variants", "scratch", "sam", "--nve-gate", "60")
        + ["--active", "--active-replicas", "2", "--active-rounds", "1"]
    )
    rows = {r["variant"]: r for r in res["rows"]}
    assert set(rows) == {"scratch", "sam"}
    for r in rows.values():
        assert (r["pretrain_steps"], r["train_steps"], r["time_guard_hit"]) == (0, 2, False)
        assert math.isfinite(r["forces_mae"]) and "nve_gate_pass" in r
    assert res["verdict"] is not None and len(res["verdict"]["pairs"]) == 1
    table = (out / "comparison.md").read_text()
    assert "NVE energy-drift gate" in table and "optimiser steps" in table
    from ase_mlff.data import Dataset

    test = Dataset.load_npz(out / "data" / "test.npz")
    starts = ase.io.read(out / "data" / "starts.extxyz", ":")
    test_pos = test.positions_nc.reshape(len(test), -1, 3)
    for s in starts:  # every start is one of the test frames
        assert np.min(np.abs(test_pos - s.positions).max(axis=(1, 2))) < 1e-8


def test_ffpt_parametrises_gaff_for_a_new_molecule(ethanol_file, tmp_path):
    """ffpt on ethanol: GAFF-2.11/AM1-BCC parametrised from the perceived bonds, rattled
    frames labelled by it, pre-training then fine-tuning; the steps are reported apart."""
    if shutil.which("antechamber") is None:
        pytest.fail("AmberTools is a test dependency (setup.cfg [test]); antechamber missing")
    out = tmp_path / "cmp"
    res = compare.main(
        _args(ethanol_file, out, "--variants", "scratch", "ffpt", "--pretrain-epochs", "1")
    )
    ffpt = next(r for r in res["rows"] if r["variant"] == "ffpt")
    pre = json.loads((out / "ff" / "parameters" / "molecule.json").read_text())
    assert sorted(pre["atom_types"]) == sorted(["c3", "c3", "oh", "ho", "h1", "h1"] + ["hc"] * 3)
    from ase_mlff.data import Dataset

    ds = Dataset.load_npz(out / "pretrain_ff.npz")
    n_batches = math.ceil(math.ceil(0.95 * len(ds)) / 32)  # 5 % held out, batch 32
    assert abs(ffpt["pretrain_steps"] - n_batches) <= 1 and ffpt["train_steps"] == 2
    assert ds.provenance["ff_source"] == "gaff:perceived:charge=0"
    np.testing.assert_array_equal(ds.numbers_n[:9], molecule("CH3CH2OH").numbers)


def test_bad_inputs_fail_before_any_work(ethanol_file, tmp_path, monkeypatch):
    """Each names the problem, and nothing is written."""
    from ase_mlff.forcefields.gaff import ParametrizationError

    out = tmp_path / "cmp"
    with pytest.raises(ValueError, match="does not fit and leave test frames"):
        compare.main(_args(ethanol_file, out, "--n-train", "35", "--n-val", "5"))
    with pytest.raises(ValueError, match="--temperature-end"):
        compare.main(_args(ethanol_file, out, "--protocol", "ramp"))
    with pytest.raises(FileNotFoundError, match="neither a shipped GAFF"):
        compare.main(_args(ethanol_file, out, "--variants", "scratch", "ffpt", "--ff", "nope"))
    with pytest.raises(ValueError, match="differ|match"):  # aspirin's parameters, ethanol data
        compare.main(_args(ethanol_file, out, "--variants", "scratch", "ffpt", "--ff", "aspirin"))
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no AmberTools
    with pytest.raises(ParametrizationError, match="AmberTools"):
        compare.main(_args(ethanol_file, out, "--variants", "scratch", "ffpt"))
    assert not out.exists()


def test_periodic_or_mixed_data_is_refused_clearly(tmp_path):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    cells = []
    for k in range(6):
        a = bulk("Cu", cubic=True) * (2, 1, 1)
        a.rattle(0.05, seed=k)
        a.calc = EMT()
        a.get_potential_energy()
        cells.append(a)
    path = tmp_path / "cu.extxyz"
    ase.io.write(path, cells)
    from ase_mlff.agents.ff_pretraining import resolve_force_field

    with pytest.raises(ValueError, match="periodic.*drop ffpt"):
        resolve_force_field(str(path), None)
    mixed = tmp_path / "mixed.extxyz"
    w = molecule("H2O")
    w.calc = EMT()
    w.get_potential_energy()
    ase.io.write(mixed, [*cells[:3], w])
    with pytest.raises(ValueError, match="one system"):
        check_study_data({"data": str(mixed), "n_train": 1, "n_val": 1})


def test_training_budget_counts_steps_and_flags_the_guard():
    """Steps per stage, the base's steps for a derived variant, and a stage the wall-clock
    guard cut short."""
    trained = {
        "scratch": {
            "seed": 0,
            "stages": {"train": {"optimizer_steps": 260, "stopped_because": "time_budget"}},
        }
    }
    info = {
        "variant": "continued",
        "seed": 0,
        "base": "scratch",
        "stages": {},
        "extra": {"rounds": [{"optimizer_steps": 30}, {"optimizer_steps": 40}]},
    }
    got = training_budget(info, trained, lambda v, s: v)
    assert got == {
        "pretrain_steps": 0,
        "train_steps": 70,
        "base_steps": 260,
        "time_guard_hit": True,
    }
    ffpt = {
        "seed": 0,
        "stages": {
            "pretrain": {"optimizer_steps": 594, "stopped_because": "epochs"},
            "finetune": {"optimizer_steps": 26, "stopped_because": "epochs"},
        },
    }
    got = training_budget(ffpt, trained, lambda v, s: v)
    assert got == {
        "pretrain_steps": 594,
        "train_steps": 26,
        "base_steps": 0,
        "time_guard_hit": False,
    }


def test_stop_early_off_trains_exactly_the_epochs(tmp_path):
    """A fixed budget: no early stop although the validation loss cannot improve (lr tiny),
    and the history counts ⌈n/batch⌉ optimiser steps per epoch."""
    import torch

    from ase_mlff.data import load_dataset
    from ase_mlff.models import build_model
    from ase_mlff.training.config import TrainConfig
    from ase_mlff.training.stage import optimizer_steps, run_stage

    ds = load_dataset("aspirin")
    tr, va = ds[list(range(10))], ds[list(range(10, 14))]
    torch.manual_seed(0)
    model = build_model({"name": "painn", "hidden": 8, "n_interactions": 1, "species": ds.species})
    common = dict(batch_size=4, lr=1e-9, early_stopping_patience=1, lr_patience=0, min_lr=1e-9)
    _, fixed = run_stage(
        "f", model, tr, va, TrainConfig(epochs=4, stop_early=False, **common), tmp_path / "a"
    )
    assert fixed.epochs_run == 4 and fixed.stopped_because == "epochs"
    assert optimizer_steps(fixed.history) == 4 * 3
    assert [h["optimizer_steps"] for h in fixed.history] == [3, 6, 9, 12]
    _, early = run_stage("e", model, tr, va, TrainConfig(epochs=4, **common), tmp_path / "b")
    assert early.epochs_run < 4


def _args_ns(*argv):
    return compare.parser({"data": "aspirin", "out": None}).parse_args(list(argv))


def test_options_reach_the_spec_and_unused_ones_are_refused(tmp_path):
    """--epochs is the budget of scratch, sam and ffpt's fine-tuning (reweighted and
    continued keep theirs); the showcase's ramp is its default protocol and --protocol nvt
    removes it; options that would be ignored are an error."""
    from pathlib import Path

    def spec(*argv):
        a = _args_ns(*argv, "--out", str(tmp_path))
        a.name, a.out = "t", Path(a.out)
        return compare.spec_from_args(a)

    s = spec("--epochs", "7")
    epochs = {v["name"]: v["train"].get("epochs", s["train"]["epochs"]) for v in s["variants"]}
    assert epochs == {"scratch": 7, "ffpt": 7, "sam": 7, "reweighted": 10, "continued": 5}
    show = spec("--profile", "showcase")
    assert show["md"]["temperature_end_K"] == 1000.0 and show["active"]["max_rounds"] == 8
    assert "temperature_end_K" not in spec("--profile", "showcase", "--protocol", "nvt")["md"]
    ramp = spec("--protocol", "ramp", "--temperature-end", "900")
    assert ramp["md"]["temperature_end_K"] == 900.0
    for bad, msg in (
        (("--variants", "scratch", "sam", "--smiles", "CCO"), "--smiles"),
        (("--nve-max-drift", "2"), "--nve-gate"),
        (("--active-rounds", "3"), "need --active"),
        (("--protocol", "nvt", "--temperature-end", "900"), "ramp"),
    ):
        with pytest.raises(ValueError, match=msg):
            spec(*bad)


def test_the_nve_gate_fails_a_drift_outside_the_bound_and_a_run_that_blew_up(tmp_path):
    """Read from a gate report (as written by energy_drift_report): inside ±bound passes,
    an interval reaching past it fails, and a replica that stopped non-finite fails even
    when the drift fitted before it is small; no passing model -> nothing registered."""
    from ase_mlff.agents.comparison import ComparisonAgent, best_by_criterion

    (tmp_path / "data").mkdir()
    ase.io.write(tmp_path / "data" / "starts.extxyz", [molecule("CH3CH2OH")] * 2)
    spec = {
        "name": "t",
        "variants": [{"name": "scratch", "kind": "scratch"}],
        "nve_gate": {"steps": 100, "n_starts": 2},
        "md": {"temperature_K": 500.0, "dt": 0.5},
    }
    agent = ComparisonAgent(spec, tmp_path)

    def rep(drift, lo, hi, stopped=None):
        return {
            "steps": 100,
            "temperature_K": 500.0,
            "dt_fs": 0.5,
            "n_replicas": 2,
            "drift_eV_per_atom_ps": drift,
            "drift_ci95": [lo, hi],
            "replicas": [{"stopped_fs": None}, {"stopped_fs": stopped}],
        }

    report = {
        "a": rep(2e-4, -1e-4, 5e-4),
        "b": rep(2e-4, -1e-4, 1.5e-3),
        "c": rep(1e-4, 0.0, 2e-4, stopped=35.0),
    }
    (tmp_path / "nve_gate").mkdir()
    (tmp_path / "nve_gate" / "energy_drift.json").write_text(json.dumps(report))
    got = agent.nve_gate({"A": "a", "B": "b", "C": "c"})
    assert [got[k]["nve_gate_pass"] for k in "ABC"] == [True, False, False]
    assert got["C"]["nve_blew_up"] and got["A"]["nve_drift_meV_per_atom_ps"] == pytest.approx(0.2)
    row = {"fraction_stable": 1.0, "t_inst_mean_fs": 10.0, "forces_mae": 0.1}
    rows = [{**row, "model": k, **got[k]} for k in "ABC"]
    assert best_by_criterion(rows) == "A"
    assert best_by_criterion([r for r in rows if r["model"] != "A"]) is None


def test_the_pretrained_variant_fine_tunes_a_checkpoint_in_its_architecture(
    ethanol_file, tmp_path
):
    """``--variants pretrained --checkpoint``: the shipped aspirin-painn (H, C, O) fine-tuned
    on the ethanol file, its architecture kept, its reference energies refitted; it starts
    from trained weights, so its first validation error is far below scratch's."""
    from ase_mlff.calculators.mlff import resolve_model_path
    from ase_mlff.models.io import read_metadata

    out = tmp_path / "pt"
    compare.main(_args(ethanol_file, out, "--variants", "scratch", "pretrained",
                       "--checkpoint", "aspirin-painn"))
    arch = read_metadata(resolve_model_path("aspirin-painn"))["model"]
    from ase_mlff.agents.comparison import read_variant_done

    info = read_variant_done(out / "variants" / "pretrained")
    scratch = read_variant_done(out / "variants" / "scratch")
    meta = read_metadata(info["checkpoint"])
    assert meta["model"] == arch and info["extra"]["architecture"] == arch
    assert read_metadata(scratch["checkpoint"])["model"]["hidden"] == 48  # the study's
    assert meta["init_from"].endswith("aspirin-painn")
    assert "refit_energy_mae_per_atom_after" in meta
    assert info["history"][0]["val_forces_mae"] < scratch["history"][0]["val_forces_mae"]
