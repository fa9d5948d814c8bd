"""Paper 004: the stress term of the loss (EAM fitted to energy, force and stress errors),
training potentials without an atomref (the EAM), and the hybrid E = E_MLIP + E_EAM of
appendix B (parts, part forces, force angles, checkpoints, freezing)."""

import copy

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from ase_mlff.data import Dataset
from ase_mlff.graph import Batch
from ase_mlff.graph.batch import restrict_graph
from ase_mlff.metrics.bond_forces import force_angles
from ase_mlff.models import EAM, PaiNN, build_model, compute_properties
from ase_mlff.models.hybrid import HybridPotential, part_forces
from ase_mlff.models.io import load_model, save_model
from ase_mlff.models.prediction import predict
from ase_mlff.training import TrainConfig, Trainer
from ase_mlff.training.losses import stress_norm, training_loss
from tests.potential_checks import check_potential

CU = 29


def _eam(seed=None, cutoff=4.5):
    m = EAM(species=[CU], cutoff=cutoff).double()
    if seed is not None:
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.3 * torch.randn_like(p))
    return m


def _cells(n, seed=0):
    """Rattled, randomly strained 4-atom fcc Cu cells."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = bulk("Cu", "fcc", a=3.61, cubic=True)
        strain = np.eye(3) + 0.03 * rng.uniform(-1, 1, size=(3, 3))
        a.set_cell(a.cell[:] @ (0.5 * (strain + strain.T)), scale_atoms=True)
        a.positions += 0.08 * rng.normal(size=a.positions.shape)
        out.append(a)
    return out


def _label(teacher, images) -> Dataset:
    """Energies, forces and stress of ``images`` by ``teacher`` (a fixed EAM)."""
    b = Batch.from_atoms(images, cutoff=teacher.cutoff, dtype=torch.float64)
    out = compute_properties(teacher, b, forces=True, stress=True)
    return Dataset(
        numbers_n=np.concatenate([a.numbers for a in images]),
        positions_nc=np.concatenate([a.positions for a in images]),
        n_atoms_s=[len(a) for a in images],
        cell_s33=np.array([a.cell[:] for a in images]),
        pbc_s3=np.array([a.pbc for a in images]),
        energy_s=out["energy"].numpy(),
        forces_nc=out["forces"].numpy(),
        stress_s33=out["stress"].numpy(),
    )


@pytest.fixture(scope="module")
def cu_data():
    teacher = _eam(seed=1)
    ds = _label(teacher, _cells(16))
    return ds[np.arange(12)], ds[np.arange(12, 16)]


# ----------------------------------------------------------------------- stress loss
def test_stress_loss_equals_formula():
    images = _cells(2, seed=3)
    b = Batch.from_atoms(images, cutoff=3.0, dtype=torch.float64)
    rng = np.random.default_rng(0)
    b.energy_s = torch.tensor([1.0, 2.0], dtype=torch.float64)
    b.forces_nc = torch.as_tensor(rng.normal(size=(8, 3)))
    sigma = rng.normal(size=(2, 3, 3)) * 0.01
    d = rng.normal(size=(2, 3, 3)) * 0.01
    b.stress_s33 = torch.as_tensor(sigma)
    v = np.array([1.0, 3.0])
    b.weight_s = torch.as_tensor(v)
    out = {"energy": b.energy_s.clone(), "forces": b.forces_nc.clone()}
    out["stress"] = torch.as_tensor(sigma + d)
    lam = 250.0
    got = training_loss(out, b, stress_weight=lam)
    want = lam * np.sum(v * (d**2).sum(axis=(1, 2))) / (9 * v.sum())
    assert float(got) == pytest.approx(want, rel=1e-12)
    assert float(training_loss(out, b)) == 0.0  # off by default
    # a frame without a stress label drops out of the term and of its normaliser
    b.stress_s33 = torch.as_tensor(np.stack([sigma[0], np.full((3, 3), np.nan)]))
    got = training_loss(out, b, stress_weight=lam)
    assert float(got) == pytest.approx(lam * (d[0] ** 2).sum() / 9, rel=1e-12)


def test_stress_loss_shards_add_up(cu_data):
    """Data-parallel semantics: shards normalised by the global Σ v_s add up to the loss."""
    train, _ = cu_data
    model = _eam(seed=2)
    v_all = np.linspace(0.5, 2.0, len(train))
    frames = np.arange(6)

    def loss(fr, norms=None, s_norm=None):
        b = Batch.from_dataset(train, fr, cutoff=model.cutoff, dtype=torch.float64)
        b.weight_s = torch.as_tensor(v_all[fr])
        out = compute_properties(model, b, stress=True)
        return float(training_loss(out, b, norms=norms, stress_weight=1e3, stress_norm=s_norm))

    v = v_all[frames]
    norms = (float(v.sum()), float((v * train.n_atoms_s[frames]).sum()))
    s_norm = stress_norm(train, frames, v_all)
    assert s_norm == pytest.approx(v.sum())
    shards = sum(loss(frames[r::2], norms, s_norm) for r in range(2))
    assert shards == pytest.approx(loss(frames), rel=1e-12)


def test_stress_weight_needs_stress(cu_data, tmp_path):
    train, val = cu_data
    no_stress = copy.copy(train)
    no_stress.stress_s33 = None
    cfg = TrainConfig(epochs=1, stress_weight=10.0, dtype="float64")
    with pytest.raises(ValueError, match="no stress labels"):
        Trainer(_eam(), no_stress, val, cfg, tmp_path)
    with pytest.raises(ValueError, match="stress_weight"):
        TrainConfig(stress_weight=-1.0)


def _errors(model, ds):
    p = predict(model, ds, dtype=torch.float64, stress=True)
    return (
        np.mean(np.abs(p["energy"] - ds.energy_s) / ds.n_atoms_s),
        np.mean(np.abs(p["forces"] - ds.forces_nc)),
        np.mean(np.abs(p["stress"] - ds.stress_s33)),
    )


def test_eam_trained_on_energy_forces_stress(cu_data, tmp_path):
    """A student EAM (no atomref) learns a teacher EAM's energies, forces and stresses."""
    train, val = cu_data
    student = _eam(seed=5)
    before = _errors(student, val)
    cfg = TrainConfig(
        epochs=25,
        batch_size=4,
        lr=2e-2,
        dtype="float64",
        stress_weight=1e3,
        early_stopping_patience=100,
        lr_patience=100,
    )
    trainer = Trainer(student, train, val, cfg, tmp_path)  # refit_atomref: skipped
    assert trainer.atomref_stats == {}
    res = trainer.fit(resume=False)
    after = _errors(trainer.model, val)
    assert all(a < 0.7 * b for a, b in zip(after, before)), (before, after)
    row = res.history[-1]
    assert {"val_stress_mae", "val_stress_rmse", "val_stress_mae_GPa"} <= set(row)
    assert row["val_stress_mae_GPa"] == pytest.approx(row["val_stress_mae"] * 160.21766208)
    # the validation loss includes λ_S·RMSE_σ²
    want = (
        row["val_energy_rmse_per_atom"] ** 2
        + 20.0 * row["val_forces_rmse"] ** 2
        + 1e3 * row["val_stress_rmse"] ** 2
    )
    assert row["val_loss"] == pytest.approx(want, rel=1e-9)


# ----------------------------------------------------------------------- hybrid
def _hybrid(seed=0):
    torch.manual_seed(seed)
    mlip = PaiNN(species=[CU], hidden=8, n_interactions=1, n_rbf=6, cutoff=3.0)
    return HybridPotential(mlip, _eam(seed=seed + 1, cutoff=4.0)).double()


def _cluster():
    a = Atoms("Cu4", positions=[[0, 0, 0], [2.5, 0, 0], [1.2, 2.2, 0], [1.2, 0.8, 2.1]])
    a.positions += np.random.default_rng(0).normal(size=(4, 3)) * 0.05
    return a


def test_hybrid_is_sum_of_parts():
    model = _hybrid()
    assert model.cutoff == 4.0 and model.species == [CU]
    images = [_cluster(), *_cells(2, seed=7)]
    b = Batch.from_atoms(images, cutoff=model.cutoff, dtype=torch.float64)
    parts = model.parts(b)
    energy = model(b)
    assert torch.equal(energy, parts["mlip"] + parts["eam"])
    for name in ("mlip", "eam"):  # each part computes what it computes alone
        part = getattr(model, name)
        alone = part(Batch.from_atoms(images, cutoff=part.cutoff, dtype=torch.float64))
        torch.testing.assert_close(parts[name], alone.double(), rtol=0, atol=1e-12)
    forces = compute_properties(model, b)["forces"]
    pf = part_forces(model, b)
    assert float(pf["mlip"].abs().max()) > 1e-3 and float(pf["eam"].abs().max()) > 1e-3
    torch.testing.assert_close(pf["mlip"] + pf["eam"], forces, rtol=0, atol=1e-12)
    eam_alone = compute_properties(
        model.eam, Batch.from_atoms(images, cutoff=4.0, dtype=torch.float64)
    )["forces"]
    torch.testing.assert_close(pf["eam"], eam_alone, rtol=0, atol=1e-12)


def test_hybrid_potential_checks():
    check_potential(_hybrid(), [_cluster()], periodic=_cells(1, seed=11))


def test_hybrid_checkpoint_roundtrip(tmp_path):
    model = _hybrid(seed=3)
    cfg = {"name": "hybrid", "mlip": model.mlip.config, "eam": model.eam.config}
    assert model.config == cfg and isinstance(build_model(cfg), HybridPotential)
    save_model(model, tmp_path / "ckpt")
    loaded, meta = load_model(tmp_path / "ckpt", dtype=torch.float64)
    assert meta["model"]["name"] == "hybrid"
    b = Batch.from_atoms(_cells(2, seed=4), cutoff=model.cutoff, dtype=torch.float64)
    assert torch.equal(loaded(b), model.eval()(b))


def test_part_force_angles():
    eam = _eam(seed=2)
    same = HybridPotential(copy.deepcopy(eam), eam)  # parallel parts
    b = Batch.from_atoms(_cells(2, seed=5), cutoff=same.cutoff, dtype=torch.float64)
    pf = part_forces(same, b)
    ang = force_angles(pf["mlip"].numpy(), pf["eam"].numpy())
    assert len(ang) == 8 and np.allclose(ang, 0.0, atol=1e-4)
    other = HybridPotential(_eam(seed=9), eam)
    pf = part_forces(other, b)
    assert np.max(force_angles(pf["mlip"].numpy(), pf["eam"].numpy())) > 1.0


def test_hybrid_trains_with_frozen_eam(cu_data, tmp_path):
    train, val = cu_data
    model = _hybrid(seed=4)
    eam0 = {k: v.clone() for k, v in model.eam.state_dict().items()}
    mlip0 = {k: v.clone() for k, v in model.mlip.named_parameters()}
    cfg = TrainConfig(epochs=1, batch_size=6, lr=1e-2, dtype="float64", freeze=("eam",))
    trainer = Trainer(model, train, val, cfg, tmp_path)
    assert trainer.atomref_stats == {} and all(n.startswith("eam.") for n in trainer.frozen)
    trainer.fit(resume=False)
    for k, v in model.eam.state_dict().items():
        assert torch.equal(v, eam0[k]), k
    assert any(not torch.equal(p, mlip0[n]) for n, p in model.mlip.named_parameters())


def test_restrict_graph_matches_smaller_cutoff():
    images = [_cluster(), *_cells(2, seed=8)]
    big = Batch.from_atoms(images, cutoff=4.5, dtype=torch.float64)
    small = Batch.from_atoms(images, cutoff=3.0, dtype=torch.float64)
    cut = restrict_graph(big, 3.0)
    assert cut.cutoff == 3.0 and restrict_graph(small, 4.5) is small
    key = lambda b: sorted(  # noqa: E731
        map(tuple, torch.cat([b.edge_index_2e.T, b.shift_e3.long()], 1).tolist())
    )
    assert big.edge_index_2e.shape[1] > cut.edge_index_2e.shape[1]
    assert key(cut) == key(small)


def test_predict_with_stress_under_no_grad():
    """metrics.errors.predict(stress=True) runs under torch.no_grad(); the strain must
    still reach autograd (it did not), and agree with the calculator's stress."""
    from ase.build import bulk

    from ase_mlff.calculators import MLFFCalculator
    from ase_mlff.data import Dataset
    from ase_mlff.models import EAM
    from ase_mlff.models.prediction import predict

    torch.manual_seed(0)
    model = EAM(species=[29], cutoff=4.5).double()
    atoms = bulk("Cu", "fcc", 3.6, cubic=True)
    atoms.rattle(0.05, seed=2)
    atoms.calc = MLFFCalculator(model)
    ref = atoms.get_stress(voigt=False)
    ds = Dataset.from_atoms([atoms])
    got = predict(model, ds, dtype=torch.float64, stress=True)["stress"][0]
    np.testing.assert_allclose(got, ref, atol=1e-10)


def test_eam_and_hybrid_calculators(tmp_path):
    from ase.build import bulk

    from ase_mlff.calculators import EAMCalculator, HybridCalculator, MLFFCalculator
    from ase_mlff.models import EAM, HybridPotential, build_model, save_model

    torch.manual_seed(0)
    eam = EAM(species=[8, 14], cutoff=4.5).double()
    mlip = build_model(
        {"name": "schnet", "hidden": 16, "n_interactions": 1, "cutoff": 4.0, "species": [8, 14]}
    ).double()
    save_model(eam, tmp_path / "eam")
    save_model(mlip, tmp_path / "mlip")
    save_model(HybridPotential(mlip, eam), tmp_path / "hybrid")
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.numbers[::2] = 8
    atoms.rattle(0.05, seed=1)
    results = {}
    for name, calc in {
        "eam": EAMCalculator(tmp_path / "eam"),
        "mlip": MLFFCalculator(tmp_path / "mlip"),
        "hybrid": HybridCalculator(tmp_path / "hybrid"),
        "sum": HybridCalculator(mlip=tmp_path / "mlip", eam=tmp_path / "eam"),
    }.items():
        a = atoms.copy()
        a.calc = calc
        results[name] = (a.get_potential_energy(), a.get_forces(), a.get_stress())
    for k in range(3):
        expected = results["eam"][k] + results["mlip"][k]
        assert np.allclose(results["hybrid"][k], expected, atol=1e-10)
        assert np.allclose(results["sum"][k], expected, atol=1e-10)
    with pytest.raises(TypeError, match="needs an EAM"):
        EAMCalculator(tmp_path / "mlip")
    with pytest.raises(TypeError, match="not a hybrid"):
        HybridCalculator(tmp_path / "eam")
    with pytest.raises(ValueError, match="either a hybrid model"):
        HybridCalculator()
    with pytest.raises(ValueError, match="both mlip= and eam="):
        HybridCalculator(mlip=tmp_path / "mlip")
