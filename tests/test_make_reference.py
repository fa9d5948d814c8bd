"""The reference-data recipe runs GFN2-xTB MD as parallel Ray tasks and records provenance."""

import json

import numpy as np

from ase_mlff.data import load_dataset
from ase_mlff.data.io import provenance_path
from ase_mlff.recipes import make_reference


def test_make_reference_small(tmp_path):
    out = tmp_path / "ref.npz"
    make_reference.main(
        [
            "--trajectories",
            "2",
            "--frames-per-trajectory",
            "3",
            "--stride",
            "2",
            "--equilibration",
            "2",
            "--out",
            str(out),
            "--seed",
            "7",
        ]
    )
    ds = load_dataset(out)
    assert len(ds) == 6
    np.testing.assert_array_equal(ds.extra_s["traj_id"], [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(ds.extra_s["time_fs"], [3, 4, 5, 3, 4, 5])
    # the two trajectories have different seeds, so they differ
    assert not np.allclose(ds.positions_nc[:21], ds.positions_nc[63:84])
    prov = json.loads(provenance_path(out).read_text())
    assert prov["method"] == "GFN2-xTB" and prov["config"]["seed"] == 7
    assert not (tmp_path / "ref.npz.parts").exists()
    assert prov["runner"]["jobs"] == {"traj_000": [7, 0], "traj_001": [7, 1]}
    assert prov["runner"]["reused_parts"] == [] and prov["workers"] == 2

    # labels are GFN2-xTB energies/forces of the stored geometry
    from tblite.ase import TBLite

    atoms = ds.to_atoms(4, with_labels=False)
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    assert abs(atoms.get_potential_energy() - ds.energy_s[4]) < 1e-6
    # SCF restarts from the previous MD step: labels agree to the SCF tolerance (~2e-4 eV/Å)
    np.testing.assert_allclose(atoms.get_forces(), ds.forces_nc[84:105], atol=1e-3)
    # raw forces of a translation-invariant method have no net force
    assert np.abs(ds.forces_nc.reshape(6, 21, 3).sum(axis=1)).max() < 1e-6


def test_make_reference_does_not_depend_on_workers(tmp_path):
    """Each trajectory has its own random stream: one worker at a time gives the same set,
    bit for bit, as two at once."""
    args = ["--trajectories", "2", "--frames-per-trajectory", "2", "--stride", "2"]
    args += ["--equilibration", "1", "--seed", "5"]
    for workers in ("1", "2"):
        out = tmp_path / f"{workers}.npz"
        make_reference.main(args + ["--workers", workers, "--out", str(out)])
    one, two = load_dataset(tmp_path / "1.npz"), load_dataset(tmp_path / "2.npz")
    for key in ("positions_nc", "forces_nc", "energy_s"):
        np.testing.assert_array_equal(getattr(one, key), getattr(two, key))
    np.testing.assert_array_equal(one.extra_s["step"], two.extra_s["step"])
