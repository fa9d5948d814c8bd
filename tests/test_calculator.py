import json
import shutil

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from ase_mlff.calculators import MLFFCalculator, shipped_models
from ase_mlff.models import CheckpointError, PaiNN, save_model
from ase_mlff.models.io import META, WEIGHTS, load_model
from tests.conftest import random_species_model

CHON = [1, 6, 7, 8]


@pytest.fixture
def checkpoint(tmp_path):
    model = random_species_model(PaiNN, CHON, hidden=16, n_interactions=2)
    return save_model(model, tmp_path / "ckpt"), model


def test_checkpoint_roundtrip(checkpoint, aspirin):
    path, model = checkpoint
    a = aspirin.copy()
    a.calc = MLFFCalculator(path)
    b = aspirin.copy()
    b.calc = MLFFCalculator(model)
    assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=1e-9)
    assert a.get_potential_energy() == a.calc.results["free_energy"]
    meta = json.loads((path / META).read_text())
    assert meta["species"] == CHON and meta["units"]["energy"] == "eV"


def test_ase_caching(checkpoint, aspirin):
    path, _ = checkpoint
    calc = MLFFCalculator(path)
    aspirin.calc = calc
    e1 = aspirin.get_potential_energy()
    calc.results["energy"] = 123.0  # a cached value is returned while atoms are unchanged
    assert aspirin.get_potential_energy() == 123.0
    aspirin.positions[0, 0] += 0.01
    assert aspirin.get_potential_energy() != pytest.approx(e1, abs=1e-12)
    assert aspirin.get_potential_energy() != 123.0


def test_stress_only_for_periodic(checkpoint, aspirin):
    from ase.calculators.calculator import PropertyNotImplementedError

    path, _ = checkpoint
    aspirin.calc = MLFFCalculator(path)
    with pytest.raises(PropertyNotImplementedError):
        aspirin.get_stress()


def test_bad_inputs(checkpoint, tmp_path, aspirin):
    path, _ = checkpoint
    calc = MLFFCalculator(path)
    with pytest.raises(ValueError, match="never trained on element.*Si"):
        Atoms(
            "SiH4", positions=np.random.default_rng(0).normal(size=(5, 3)), calculator=calc
        ).get_potential_energy()
    bad = aspirin.copy()
    bad.positions[3] = np.nan
    bad.calc = calc
    with pytest.raises(ValueError, match="NaN"):
        bad.get_potential_energy()
    with pytest.raises(ValueError, match="empty"):
        Atoms(calculator=calc).get_potential_energy()
    with pytest.raises(CheckpointError, match="neither a shipped model"):
        MLFFCalculator(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        MLFFCalculator(tmp_path)  # exists but holds no checkpoint

    corrupt = tmp_path / "corrupt"
    shutil.copytree(path, corrupt)
    (corrupt / WEIGHTS).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="do not match the SHA-256 in model.json"):
        MLFFCalculator(corrupt)
    meta = json.loads((corrupt / META).read_text())
    del meta["weights_sha256"]  # as a checkpoint from before checksums
    (corrupt / META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="corrupted checkpoint weights"):
        MLFFCalculator(corrupt)
    (corrupt / META).write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupted checkpoint metadata"):
        MLFFCalculator(corrupt)

    old = tmp_path / "old"
    shutil.copytree(path, old)
    meta = json.loads((old / META).read_text())
    meta["format"] = "0.3"
    (old / META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="incompatible"):
        MLFFCalculator(old)


def test_langevin_md_runs(checkpoint, aspirin):
    path, _ = checkpoint
    aspirin.calc = MLFFCalculator(path)
    MaxwellBoltzmannDistribution(aspirin, temperature_K=300, rng=np.random.default_rng(0))
    dyn = Langevin(
        aspirin,
        0.5 * units.fs,
        temperature_K=300,
        friction=0.01 / units.fs,
        rng=np.random.default_rng(1),
        fixcm=False,
    )
    energies = []
    dyn.attach(lambda: energies.append(aspirin.get_potential_energy()), interval=5)
    dyn.run(40)
    assert len(energies) == 9 and np.all(np.isfinite(energies))
    assert np.all(np.isfinite(aspirin.positions))


def test_shipped_model_loads_and_is_accurate():
    """The shipped model exists, runs, and its recorded test force MAE meets the 80 meV/Å bar."""
    from ase_mlff.calculators.mlff import SHIPPED_MODELS_DIR
    from ase_mlff.data import load_dataset
    from ase_mlff.metrics import evaluate

    assert "aspirin-painn" in shipped_models()
    calc = MLFFCalculator("aspirin-painn")
    meta = calc.metadata
    assert meta["test_metrics"]["forces_mae"] < 0.080
    ds = load_dataset("aspirin")
    test = ds[ds.extra_s["traj_id"] == 4][::50]  # the held-out trajectory, thinned
    m = evaluate(calc.model, test, dtype=calc.dtype)
    assert m["forces_mae"] < 0.080, m
    atoms = test.to_atoms(0, with_labels=False)
    atoms.calc = calc
    assert np.all(np.isfinite(atoms.get_forces()))
    assert (SHIPPED_MODELS_DIR / "aspirin-painn" / WEIGHTS).exists()


# ------------------------------------------------------------ checkpoint precision (bugs)
def _off_grid_atomref(model):
    """e_ref values that float32 cannot hold (aspirin-sized: ~1e3 eV, 1e-9 eV digits)."""
    with torch.no_grad():
        model.atomref.e_ref[CHON] = torch.tensor(
            [-13.612345678, -1030.123456789, -1485.987654321, -2040.012345678],
            dtype=torch.float64,
        )
    return model


def test_float32_cast_and_reload_keep_the_float64_atomref(tmp_path):
    """model.float() and load_model(dtype=float32) keep the float64 per-element reference
    energies exactly (they used to round them through float32, ~1e-5 eV)."""
    model = _off_grid_atomref(random_species_model(PaiNN, CHON, hidden=8, n_interactions=1))
    e_ref = model.atomref.e_ref.clone()
    path = save_model(model, tmp_path / "ckpt")
    loaded, _ = load_model(path, dtype=torch.float32)
    assert torch.equal(loaded.atomref.e_ref, e_ref)
    assert torch.equal(model.float().atomref.e_ref, e_ref)


def test_float64_checkpoint_reloads_exactly_in_float64(tmp_path):
    """A float64 checkpoint comes back bit for bit (it used to be rounded to float32)."""
    model = random_species_model(PaiNN, CHON, hidden=8, n_interactions=1).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0 / 3.0)  # not representable in float32
    path = save_model(model, tmp_path / "ckpt")
    loaded, _ = load_model(path, dtype=torch.float64)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
