import json

import numpy as np
import pytest
from ase import units

from ase_mlff.data import (
    Dataset,
    DatasetError,
    group_split,
    load_dataset,
    random_split,
    read_ase,
    read_db,
    read_md17,
    read_rmd17,
    write_db,
    write_extxyz,
)
from ase_mlff.data.io import SHIPPED_DATASETS, SHIPPED_DIR

KCAL = units.kcal / units.mol
ASPIRIN_Z = [6, 6, 6, 6, 6, 6, 6, 8, 8, 8, 6, 6, 8, 1, 1, 1, 1, 1, 1, 1, 1]


def _md17_arrays(rng, n_frames=7):
    z = np.array(ASPIRIN_Z)
    r = rng.normal(scale=1.5, size=(n_frames, len(z), 3))
    e = rng.normal(-406000.0, 5.0, size=(n_frames, 1))  # kcal/mol, MD17 stores (S, 1)
    f = rng.normal(scale=30.0, size=(n_frames, len(z), 3))  # kcal/mol/Å
    return z, r, e, f


def test_md17_reader_converts_units(tmp_path, rng):
    z, r, e, f = _md17_arrays(rng)
    np.savez(tmp_path / "md17_aspirin.npz", z=z, R=r, E=e, F=f, name="aspirin", theory="PBE")
    ds = read_md17(tmp_path / "md17_aspirin.npz")
    assert len(ds) == 7 and ds.same_molecule()
    np.testing.assert_allclose(ds.energy_s, e[:, 0] * KCAL)
    np.testing.assert_allclose(ds.forces_nc, f.reshape(-1, 3) * KCAL)
    np.testing.assert_allclose(ds.positions_nc, r.reshape(-1, 3))
    assert KCAL == pytest.approx(0.0433641, rel=1e-5)
    assert load_dataset(tmp_path / "md17_aspirin.npz").energy_s[0] == ds.energy_s[0]


def test_rmd17_reader_converts_units(tmp_path, rng):
    z, r, e, f = _md17_arrays(rng)
    np.savez(
        tmp_path / "rmd17_aspirin.npz",
        nuclear_charges=z,
        coords=r,
        energies=e[:, 0],
        forces=f,
        old_indices=np.arange(7),
        old_energies=e[:, 0],
        old_forces=f,
    )
    ds = read_rmd17(tmp_path / "rmd17_aspirin.npz")
    np.testing.assert_allclose(ds.energy_s, e[:, 0] * KCAL)
    np.testing.assert_allclose(ds.forces_nc, f.reshape(-1, 3) * KCAL)
    assert load_dataset(tmp_path / "rmd17_aspirin.npz").provenance["format"] == "rmd17"


def test_md17_reader_errors(tmp_path):
    np.savez(tmp_path / "bad.npz", z=np.array([1]), R=np.zeros((2, 1, 3)))
    with pytest.raises(DatasetError, match="missing keys"):
        read_md17(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        read_rmd17(tmp_path / "nothing.npz")
    with pytest.raises(FileNotFoundError, match="no dataset named"):
        load_dataset("no-such-set")


def _mixed_dataset(rng) -> Dataset:
    from ase.build import bulk, molecule
    from ase.calculators.singlepoint import SinglePointCalculator

    images = []
    for k, a in enumerate([molecule("H2O"), molecule("CH4"), bulk("Si", cubic=True)]):
        a.calc = SinglePointCalculator(
            a,
            energy=-10.0 * k - 1.5,
            forces=rng.normal(size=(len(a), 3)),
            **({"stress": rng.normal(size=6)} if a.pbc.all() else {}),
        )
        a.info["config_type"] = "crystal" if a.pbc.all() else "molecule"
        images.append(a)
    return Dataset.from_atoms(images, provenance={"method": "test"})


def test_extxyz_and_db_roundtrip(tmp_path, rng):
    ds = _mixed_dataset(rng)
    for path, reader, writer in [
        (tmp_path / "d.extxyz", read_ase, write_extxyz),
        (tmp_path / "d.db", read_db, write_db),
    ]:
        writer(ds, path)
        back = reader(path)
        assert len(back) == 3
        np.testing.assert_allclose(back.positions_nc, ds.positions_nc)
        np.testing.assert_allclose(back.energy_s, ds.energy_s)
        np.testing.assert_allclose(back.forces_nc, ds.forces_nc)
        np.testing.assert_allclose(back.stress_s33[2], ds.stress_s33[2])
        np.testing.assert_array_equal(back.pbc_s3, ds.pbc_s3)
    assert list(read_ase(tmp_path / "d.extxyz").config_type_s) == list(ds.config_type_s)


def test_native_npz_roundtrip_and_subset(tmp_path, rng):
    ds = _mixed_dataset(rng)
    ds.extra_s["traj_id"] = np.array([0, 1, 1])
    ds.save_npz(tmp_path / "d.npz")
    back = load_dataset(tmp_path / "d.npz")
    assert back.provenance == {"method": "test"}
    np.testing.assert_array_equal(back.extra_s["traj_id"], [0, 1, 1])
    sub = back[[2, 0]]
    assert list(sub.n_atoms_s) == [8, 3]
    np.testing.assert_allclose(sub.forces_nc[:8], ds.forces_nc[-8:])
    atoms = sub.to_atoms(0)
    np.testing.assert_allclose(atoms.get_forces(), ds.forces_nc[-8:])
    assert atoms.info["traj_id"] == 1


def test_dataset_validation_errors(rng):
    with pytest.raises(DatasetError, match="n_atoms_s sums"):
        Dataset(
            np.ones(3),
            np.zeros((3, 3)),
            [2],
            np.zeros((1, 3, 3)),
            np.zeros((1, 3)),
            [0.0],
            np.zeros((3, 3)),
        )
    with pytest.raises(DatasetError, match="NaN"):
        Dataset(
            np.ones(1),
            [[np.nan, 0, 0]],
            [1],
            np.zeros((1, 3, 3)),
            np.zeros((1, 3)),
            [0.0],
            np.zeros((1, 3)),
        )
    with pytest.raises(DatasetError, match="empty"):
        Dataset.from_atoms([])


def test_splits_are_seeded_and_disjoint():
    a = random_split(1000, 950, 30, seed=1)
    b = random_split(1000, 950, 30, seed=1)
    c = random_split(1000, 950, 30, seed=2)
    np.testing.assert_array_equal(a.train, b.train)
    assert not np.array_equal(a.train, c.train)
    assert len(a.test) == 20
    assert not (set(a.train) & set(a.val) | set(a.train) & set(a.test) | set(a.val) & set(a.test))
    with pytest.raises(ValueError, match="cannot split"):
        random_split(100, 95, 10)
    groups = np.repeat(np.arange(5), 10)
    g = group_split(groups, [4], 30, 5)
    assert set(groups[g.test]) == {4} and not set(groups[g.train]) & {4}


def test_shipped_aspirin_dataset():
    """The shipped GFN2-xTB set: size, provenance, MD17 atom order, continuous trajectories."""
    ds = load_dataset("aspirin")
    assert len(ds) >= 5000
    assert ds.same_molecule()
    np.testing.assert_array_equal(ds.numbers_n[:21], ASPIRIN_Z)
    traj = ds.extra_s["traj_id"]
    assert len(np.unique(traj)) >= 4
    prov = json.loads(
        (SHIPPED_DIR / SHIPPED_DATASETS["aspirin"])
        .with_name("aspirin_gfn2_500K.provenance.json")
        .read_text()
    )
    assert prov["method"] == "GFN2-xTB" and prov["program"] == "tblite"
    assert prov["config"]["temperature_K"] == 500.0 and prov["config"]["timestep_fs"] == 0.5
    # MD17 connectivity (docs/data.md): ring C5-C6-C1-C3-C2-C0, COOH on C5, OAc on C6
    pos = ds.positions_nc.reshape(len(ds), 21, 3)
    d = np.linalg.norm(pos[:, :, None] - pos[:, None], axis=-1).mean(axis=0)
    for i, j in [
        (5, 6),
        (6, 1),
        (1, 3),
        (3, 2),
        (2, 0),
        (0, 5),
        (5, 10),
        (10, 7),
        (10, 9),
        (9, 13),
        (6, 12),
        (12, 11),
        (11, 8),
        (11, 4),
        (4, 18),
        (0, 14),
    ]:
        assert d[i, j] < 1.6, (i, j, d[i, j])
    # each trajectory is continuous in time with a fixed stride
    for t in np.unique(traj):
        times = ds.extra_s["time_fs"][traj == t]
        assert np.all(np.diff(times) == times[1] - times[0])
    assert np.all(np.isfinite(ds.energy_s)) and np.all(np.isfinite(ds.forces_nc))


def test_the_shipped_split_rule_holds_out_whole_trajectories():
    """held_out_frames / shipped_split / start_structures: the frames of the shipped test
    trajectory (aspirin: traj 4), checked against the traj_id column directly; a set
    without a shipped split gets a random split and starts from all frames."""
    from ase_mlff.data.splits import held_out_frames, shipped_split, start_structures

    ds = load_dataset("aspirin")
    traj = ds.extra_s["traj_id"]
    test = held_out_frames("aspirin", ds)
    np.testing.assert_array_equal(test, [i for i in range(len(ds)) if traj[i] == 4])
    sp = shipped_split("aspirin", ds, 50, 10, seed=3)
    np.testing.assert_array_equal(sp.test, test)
    assert len(sp.train) == 50 and len(sp.val) == 10
    assert not set(traj[np.concatenate([sp.train, sp.val])]) & {4}
    assert not set(sp.train) & set(sp.val)
    starts = start_structures("aspirin", 3)
    picked = test[[0, (len(test) - 1) // 2, len(test) - 1]]
    for atoms, i in zip(starts, picked, strict=True):
        np.testing.assert_array_equal(
            atoms.positions, ds.positions_nc[ds.ptr_s[i] : ds.ptr_s[i + 1]]
        )
        assert atoms.calc is None
    assert held_out_frames("mine", ds) is None
    other = shipped_split("mine", ds, 50, 10, seed=3)
    assert len(other.test) == len(ds) - 60 and set(traj[other.test]) != {4}


def test_pretraining_holdout_is_five_percent_seeded_and_disjoint():
    from ase_mlff.data.splits import holdout_split

    ds = load_dataset("aspirin")[np.arange(101)]
    ds.extra_s["frame"] = np.arange(101)
    train, val = holdout_split(ds, seed=4)
    assert (len(train), len(val)) == (96, 5)  # 101 // 20 = 5
    t, v = train.extra_s["frame"], val.extra_s["frame"]
    assert sorted(np.concatenate([t, v]).tolist()) == list(range(101))
    order = np.random.default_rng(4).permutation(101)
    np.testing.assert_array_equal(v, order[:5])  # the permutation's first 5 % are held out
    st, sv = holdout_split(ds, seed=4, sort=True)
    np.testing.assert_array_equal(sv.extra_s["frame"], np.sort(v))
    np.testing.assert_array_equal(st.extra_s["frame"], np.sort(t))
    assert len(holdout_split(ds[np.arange(10)], seed=0)[1]) == 1  # at least one frame
    assert not np.array_equal(holdout_split(ds, seed=5)[1].extra_s["frame"], v)
