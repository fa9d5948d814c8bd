"""The ``pretrained`` variant (fine-tune a pre-trained checkpoint in its own architecture)
and paper 000's study recipe ``pretrain_finetune`` (issue 16). The checkpoint here is the
shipped ``aspirin-painn``: its elements cover aspirin, and a fine-tuning that did not start
from its weights would show at once in the first validation error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ase_mlff.agents.training import checkpoint_model
from ase_mlff.calculators.mlff import resolve_model_path
from ase_mlff.data import load_dataset
from ase_mlff.models.io import load_model, read_metadata

pytestmark = pytest.mark.usefixtures("ray_local")


def test_a_checkpoint_without_the_datas_elements_is_refused():
    md17 = load_dataset("md17")
    uracil = md17[np.flatnonzero(md17.extra_s["molecule"] == 7)[:3]]
    with pytest.raises(ValueError, match="aspirin-painn was trained on H, C, O; the data hold N"):
        checkpoint_model("aspirin-painn", uracil)
    path, model = checkpoint_model("aspirin-painn", load_dataset("aspirin")[:3])
    assert model.config == read_metadata(path)["model"]


def test_refit_keeps_the_reference_energy_of_an_element_the_data_lack():
    from ase_mlff.training.stage import refit_reference_energies

    model, _ = load_model(resolve_model_path("aspirin-painn"), dtype=torch.float64)
    model.atomref.e_ref[7] = -123.0  # an element aspirin lacks
    before = model.atomref.e_ref.clone()
    ethanol = load_dataset("md17")
    ethanol = ethanol[np.flatnonzero(ethanol.extra_s["molecule"] == 2)[:20]]
    stats = refit_reference_energies(model, ethanol)
    after = model.atomref.e_ref
    assert after[7] == -123.0
    assert not torch.equal(after[[1, 6, 8]], before[[1, 6, 8]])
    assert stats["energy_mae_per_atom_after"] < stats["energy_mae_per_atom_before"]


def test_compare_refuses_a_checkpoint_without_the_pretrained_variant(tmp_path):
    from ase_mlff.recipes import compare

    with pytest.raises(ValueError, match="--checkpoint would be ignored"):
        compare.main(["--data", "aspirin", "--variants", "scratch", "--checkpoint",
                      "aspirin-painn", "--out", str(tmp_path)])
    spec = compare.build_spec("quick", "aspirin", tmp_path / "p.npz", None, None, None)
    assert "pretrained" not in [v["name"] for v in spec["variants"]]  # only when named


def _run(tmp_path, *extra):
    from ase_mlff.recipes import pretrain_finetune

    return pretrain_finetune.main(
        ["--checkpoint", "aspirin-painn", "--epochs", "2", "--n-train", "24",
         "--probe-every", "1", "--probe-steps", "40", "--steps", "60", "--replicas", "2",
         "--out", str(tmp_path / "ptft"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db",
         *extra]
    )


@pytest.mark.slow
def test_pretrain_finetune_trains_both_from_the_same_architecture(tmp_path):
    summary = _run(tmp_path, "--no-analyses")
    out = tmp_path / "ptft"
    arch = read_metadata(resolve_model_path("aspirin-painn"))["model"]
    from ase_mlff.agents.comparison import read_variant_done

    done = {
        v: read_variant_done(out / "variants" / v)
        for v in ("scratch", "pretrained")  # one seed: folders without a seed suffix
    }
    for v, info in done.items():  # one architecture, one budget
        assert read_metadata(info["checkpoint"])["model"] == arch
        assert info["stages"][{"scratch": "train", "pretrained": "finetune"}[v]][
            "optimizer_steps"
        ] == 2 * 2  # 24 frames / 16 per batch -> 2 steps per epoch
    meta = read_metadata(done["pretrained"]["checkpoint"])
    assert meta["init_from"].endswith("aspirin-painn")
    # started from the trained weights: its first validation error is a trained model's
    first = {v: done[v]["history"][0]["val_forces_mae"] for v in done}
    assert first["pretrained"] < 0.2 < first["scratch"]
    assert set(summary["h_r"]) == {"scratch_early", "scratch_late", "pretrained_early",
                                   "pretrained_late"}
    assert {p["epoch"] for p in summary["probes"]["scratch"]} == {1, 2}
    assert (out / "t_inst_vs_epoch_seeds.png").exists() and (out / "h_r_early_late.png").exists()


@pytest.mark.slow
def test_pretrain_finetune_with_the_paper_000_analyses(tmp_path):
    summary = _run(tmp_path, "--latent-frames", "4")
    ana = summary["evaluation"]["analyses"]
    # classes: aspirin (test), the MD17 molecules an H/C/O model embeds, the CHO part of
    # the diverse set
    assert ana["latent"]["classes"] == "datasets" and ana["latent"]["samples"] == "frame"
    # the report names the models by variant and seed
    assert set(ana["latent"]["silhouette_mean"]) == {"scratch-s0", "pretrained-s0"}
    assert {"C11-O8", "C6-O12", "C10-O7"} <= set(ana["bond_scans"])
    assert ana["delta_f"]["n_frames"] == 100


def test_organic_painn_works_on_a_new_chno_molecule_and_refuses_sulfur():
    """The shipped general model on molecules outside its training geometries: finite
    energy, the shared potential checks (forces = −∇E, invariance, batching), and a clear
    refusal of an element it never saw."""
    from ase.build import molecule

    from ase_mlff.calculators import MLFFCalculator
    from tests.potential_checks import check_potential

    a = molecule("CH3CONH2")  # acetamide (its list has it; the geometry is ASE's, not its)
    a.calc = MLFFCalculator("organic-painn", dtype="float64")
    assert np.isfinite(a.get_potential_energy()) and np.isfinite(a.get_forces()).all()
    # the shared finite-difference, invariance and batching checks of every potential
    model, _ = load_model(resolve_model_path("organic-painn"), dtype=torch.float64)
    check_potential(model, [a, molecule("C5H5N"), molecule("HCOOH")])
    s = molecule("CH3SH")
    s.calc = MLFFCalculator("organic-painn")
    with pytest.raises(ValueError, match="never trained on element.*S; it knows H, C, N, O"):
        s.get_potential_energy()


def test_the_held_out_report_errors_are_the_direct_ones():
    """general_model_report's per-molecule force MAE against a direct evaluation through
    the ASE calculator (another path to the same model) on the same frames."""
    from ase_mlff.agents.general_model import held_out_report, report_markdown
    from ase_mlff.calculators import MLFFCalculator

    rep = held_out_report("organic-painn", "md17", temperatures_K=(300.0,), replicas=1, steps=20)
    md17 = load_dataset("md17")
    eth = md17[np.flatnonzero(md17.extra_s["molecule"] == 2)]
    calc = MLFFCalculator("organic-painn", dtype="float64")
    err = []
    for i in range(len(eth)):
        a = eth.to_atoms(i, with_labels=False)
        a.calc = calc
        err.append(np.abs(a.get_forces() - eth.forces_nc[eth.ptr_s[i] : eth.ptr_s[i + 1]]))
    direct = float(np.mean(err)) * 1e3
    assert rep["molecules"]["ethanol"]["forces_mae_meV_A"] == pytest.approx(direct, rel=1e-6)
    assert set(rep["molecules"]) == set(md17.provenance["molecules"])
    st = rep["molecules"]["uracil"]["stability"]["300K"]
    assert st["replicas"] == 1 and 0 <= st["fraction_stable_ci"][0] <= st["fraction_stable_ci"][1]
    assert report_markdown(rep).count("\n") == 2 + 8 - 1


def test_options_that_would_be_ignored_are_refused(tmp_path):
    from ase_mlff.recipes import make_diverse_reference, train

    with pytest.raises(ValueError, match="--nms-frames would be ignored"):
        make_diverse_reference.main(["--set", "md17", "--nms-frames", "3", "--out",
                                     str(tmp_path / "x.npz")])
    with pytest.raises(ValueError, match="--frames would be ignored"):
        make_diverse_reference.main(["--frames", "3", "--out", str(tmp_path / "x.npz")])
    with pytest.raises(ValueError, match="--hidden would be ignored"):
        train.main(["--init-from", "aspirin-painn", "--hidden", "32", "--out", str(tmp_path)])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  hidden: 32\n")
    with pytest.raises(ValueError, match="model section"):
        train.main(["--init-from", "aspirin-painn", "--config", str(cfg)])


def test_a_run_folder_is_not_resumed_from_other_weights(tmp_path):
    from ase_mlff.agents.training import check_run_start
    from ase_mlff.models.io import CheckpointError

    check_run_start(tmp_path, None)
    check_run_start(tmp_path, None)  # the same start: fine
    with pytest.raises(CheckpointError, match="started from scratch"):
        check_run_start(tmp_path, resolve_model_path("aspirin-painn"))
