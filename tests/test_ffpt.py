"""Rattling, batched labelling and pre-train -> fine-tune (paper 001)."""

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from ase_mlff.calculators import MLFFCalculator
from ase_mlff.data import Dataset
from ase_mlff.data.sampling import rattle, rattle_positions
from ase_mlff.forcefields.qforce import qforce_potential, relaxed_species
from ase_mlff.metrics.errors import evaluate
from ase_mlff.models import SchNet
from ase_mlff.reference.sampling import rattled_dataset
from ase_mlff.training import TrainConfig
from ase_mlff.training.finetune import paper_schedule
from ase_mlff.training.stage import (
    DONE_FILE,
    refit_reference_energies,
    run_stage,
    start_from_checkpoint,
)


def test_rattle_is_unscaled_gaussian_noise():
    a = relaxed_species("H2O2")
    pos = rattle_positions(a, n_frames=20_000, sigma=0.2, seed=1)
    noise = pos - a.positions[None]
    assert pos.shape == (20_000, 4, 3)
    assert np.std(noise) == pytest.approx(0.2, rel=0.01)
    assert abs(np.mean(noise)) < 0.005
    # x + σε, not √(1-σ²)x + σε: the mean frame is the structure itself
    np.testing.assert_allclose(pos.mean(0), a.positions, atol=0.01)
    np.testing.assert_array_equal(rattle_positions(a, 5, 0.2, seed=1), pos[:5])
    blocks = rattle([relaxed_species("H2O"), relaxed_species("O2")], n_frames=7, seed=0)
    assert [len(p) for _, p in blocks] == [4, 3]
    with pytest.raises(ValueError, match="sigma"):
        rattle_positions(a, 3, sigma=0.0)
    with pytest.raises(ValueError, match="n_frames"):
        rattle_positions(a, 0)


def test_batched_labels_equal_the_calculator_frame_by_frame():
    species = [relaxed_species("H2O"), relaxed_species("HO2")]
    ds = rattled_dataset(species, qforce_potential, n_frames=40, seed=3, reference_name="qforce")
    assert len(ds) == 40 and set(ds.config_type_s) == {"rattled"}
    assert ds.provenance["sigma_A"] == 0.2 and ds.provenance["reference"] == "qforce"
    # the same frames through the ASE calculator, one by one, with each species' topology
    # (perceived once on the relaxed structure, not on the rattled frame)
    for k in (0, 19, 20, 39):
        a = ds.to_atoms(k, with_labels=False)
        calc = MLFFCalculator(qforce_potential(species[k // 20]))
        a.calc = calc
        e, f = a.get_potential_energy(), a.get_forces(apply_constraint=False)
        assert ds.energy_s[k] == pytest.approx(e, rel=1e-12)
        np.testing.assert_allclose(ds.forces_nc[ds.atom_index(np.array([k]))], f, atol=1e-10)
    path = ds.save_npz("/tmp/_ase_mlff_rattled_test.npz")
    again = Dataset.load_npz(path)
    np.testing.assert_array_equal(again.energy_s, ds.energy_s)
    assert again.provenance["n_frames"] == 40


@pytest.fixture(scope="module")
def water_sets():
    """Pre-training labels (Q-Force H2O) and 'another level of theory': the same PES with a
    per-atom offset of -13.6 eV and forces scaled by 1.1."""
    h2o = relaxed_species("H2O")
    pt = rattled_dataset(h2o, qforce_potential(h2o), n_frames=300, sigma=0.1, seed=0)
    ft = rattled_dataset(h2o, qforce_potential(h2o), n_frames=120, sigma=0.1, seed=1)
    ft.energy_s = 1.1 * ft.energy_s - 13.6 * 3
    ft.forces_nc = 1.1 * ft.forces_nc
    return pt, ft


def tiny_model():
    torch.manual_seed(0)
    return SchNet(species=[1, 8], hidden=16, n_filters=16, n_interactions=2, n_rbf=16, cutoff=4.0)


def test_pretrain_then_finetune(tmp_path, water_sets):
    pt, ft = water_sets
    cfg = TrainConfig(epochs=4, batch_size=32, dtype="float64", lr_patience=50)
    pre_model, pre = run_stage(
        "pretrain",
        tiny_model(),
        pt[:250],
        pt[250:],
        paper_schedule(cfg, "pretrain"),
        tmp_path / "pt",
    )
    assert pre.epochs_run == 4 and (tmp_path / "pt" / DONE_FILE).exists()
    pre_model_e_ref = pre_model.atomref.e_ref.detach().clone()
    scale = float(pre_model.atomref.scale)
    before = evaluate(pre_model, ft, dtype=torch.float64)
    # refitting the reference energies removes the offset, leaves the forces as they were
    stats = refit_reference_energies(pre_model, ft[:100])
    after = evaluate(pre_model, ft, dtype=torch.float64)
    assert stats["energy_mae_per_atom_before"] > 10.0
    assert after["energy_mae_per_atom"] < 0.05 * before["energy_mae_per_atom"]
    assert after["forces_mae"] == pytest.approx(before["forces_mae"], rel=1e-10)
    assert float(pre_model.atomref.scale) == scale

    ft_model, fine = run_stage(
        "finetune",
        tiny_model(),
        ft[:100],
        ft[100:],
        paper_schedule(cfg, "finetune"),
        tmp_path / "ft",
        init_from=pre.best_dir,
    )
    assert fine.extra["init_from"] == str(pre.best_dir)
    assert fine.extra["refit_energy_mae_per_atom_after"] < 0.5
    assert float(ft_model.atomref.scale) == pytest.approx(scale)  # kept, not refitted
    # a finished stage is not trained again
    again_model, again = run_stage(
        "finetune",
        tiny_model(),
        ft[:100],
        ft[100:],
        paper_schedule(cfg, "finetune"),
        tmp_path / "ft",
        init_from=pre.best_dir,
    )
    assert again.best_epoch == fine.best_epoch and again.history == fine.history
    for p, q in zip(again_model.parameters(), ft_model.parameters()):
        torch.testing.assert_close(p, q)
    # ... nor after its folder was copied elsewhere and the original removed: its
    # checkpoints are found in the new place
    shutil.copytree(tmp_path / "ft", tmp_path / "moved" / "ft")
    shutil.rmtree(tmp_path / "ft")
    moved_model, moved = run_stage(
        "finetune",
        tiny_model(),
        ft[:100],
        ft[100:],
        paper_schedule(cfg, "finetune"),
        tmp_path / "moved" / "ft",
        init_from=pre.best_dir,
    )
    assert moved.best_dir == tmp_path / "moved" / "ft" / "best" and moved.history == fine.history
    for p, q in zip(moved_model.parameters(), ft_model.parameters()):
        torch.testing.assert_close(p, q)
    shutil.copytree(tmp_path / "moved" / "ft", tmp_path / "ft")
    # a longer budget continues the stage from its last state: epochs 5-6 only
    longer = replace(paper_schedule(cfg, "finetune"), epochs=6)
    _, more = run_stage("finetune", tiny_model(), ft[:100], ft[100:], longer, tmp_path / "ft")
    assert more.epochs_run == 6 and [r["epoch"] for r in more.history] == list(range(1, 7))

    def timeless(h):
        return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in h]

    assert timeless(more.history[:4]) == timeless(fine.history)
    # continued training on the same labels keeps the checkpoint's reference energies
    kept = tiny_model()
    info = start_from_checkpoint(kept, pre.best_dir, ft[:100], refit=False)
    assert info == {"init_from": str(pre.best_dir)}
    torch.testing.assert_close(kept.atomref.e_ref, pre_model_e_ref, rtol=0, atol=0)


def test_finetune_needs_the_same_architecture(tmp_path, water_sets):
    pt, _ = water_sets
    cfg = TrainConfig(epochs=1, batch_size=64, dtype="float64")
    _, pre = run_stage("pretrain", tiny_model(), pt[:200], pt[200:], cfg, tmp_path / "pt")
    other = SchNet(species=[1, 8], hidden=8, n_filters=8, n_interactions=1, n_rbf=8, cutoff=4.0)
    with pytest.raises(ValueError, match="same architecture"):
        run_stage("ft", other, pt[:200], pt[200:], cfg, tmp_path / "ft", init_from=pre.best_dir)


def test_paper_schedule():
    cfg = paper_schedule(TrainConfig(), "scratch")
    assert (cfg.lr, cfg.lr_factor, cfg.min_lr, cfg.force_weight) == (1e-3, 0.7, 1e-5, 20.0)
    assert paper_schedule(TrainConfig(), "finetune").lr == 1e-4
