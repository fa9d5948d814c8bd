import pytest
import torch

from ase_mlff.models import GNN_MODELS, MODELS, build_model
from tests.conftest import random_species_model
from tests.potential_checks import check_potential

SPECIES = [1, 6, 8, 14, 29]


@pytest.mark.parametrize("name", sorted(GNN_MODELS))
def test_potential_passes_shared_checks(name, molecules, periodic_cells, aspirin):
    model = random_species_model(MODELS[name], SPECIES, hidden=16, n_interactions=2, cutoff=4.0)
    check_potential(model, [*molecules, aspirin], periodic_cells)


@pytest.mark.parametrize("name", sorted(GNN_MODELS))
def test_build_model_roundtrips_config(name):
    m = build_model({"name": name, "hidden": 8, "n_interactions": 1, "species": [1, 8]})
    m2 = build_model(m.config)
    assert m2.config == m.config
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in m2.parameters())


def test_build_model_rejects_unknown():
    with pytest.raises(ValueError, match="unknown model"):
        build_model({"name": "nope"})
    with pytest.raises(ValueError, match="bad configuration"):
        build_model({"name": "painn", "widht": 3})


def test_atomref_fit_recovers_element_energies():
    import numpy as np

    from ase_mlff.data import Dataset

    rng = np.random.default_rng(0)
    e_true = {1: -13.6, 6: -1030.0, 8: -2040.0}
    frames, numbers = [], []
    for _ in range(20):
        z = rng.choice([1, 6, 8], size=rng.integers(3, 9))
        numbers.append(z)
        frames.append(sum(e_true[int(x)] for x in z))
    n = np.array([len(z) for z in numbers])
    ds = Dataset(
        numbers_n=np.concatenate(numbers),
        positions_nc=rng.normal(size=(n.sum(), 3)),
        n_atoms_s=n,
        cell_s33=np.zeros((20, 3, 3)),
        pbc_s3=np.zeros((20, 3), bool),
        energy_s=np.array(frames),
        forces_nc=rng.normal(scale=2.0, size=(n.sum(), 3)),
    )
    m = build_model({"name": "painn", "hidden": 8, "n_interactions": 1})
    stats = m.atomref.fit(ds)
    for z, e in e_true.items():
        assert float(m.atomref.e_ref[z]) == pytest.approx(e, abs=1e-6)
    assert stats["force_rms"] == pytest.approx(2.0, rel=0.2)


def test_float32_model_energy_keeps_float64_precision(aspirin):
    from ase_mlff.graph import Batch
    from ase_mlff.models import compute_properties

    m = random_species_model(MODELS["painn"], SPECIES, hidden=8, n_interactions=1)
    b = Batch.from_atoms(aspirin, cutoff=m.cutoff, dtype=torch.float32)
    out = compute_properties(m, b)
    assert out["energy"].dtype == torch.float64
    assert out["forces"].dtype == torch.float32
    assert not out["forces"].requires_grad
