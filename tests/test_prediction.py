"""The one batched prediction loop (ase_mlff.models.prediction) against ASE: the same model
through MLFFCalculator, frame by frame, for molecules and periodic cells (with stress),
with chunk boundaries inside the set and frames of different systems mixed in a chunk."""

import numpy as np
import pytest
import torch

from ase_mlff.calculators import MLFFCalculator
from ase_mlff.data import Dataset, load_dataset
from ase_mlff.models import PaiNN
from ase_mlff.models.prediction import (
    frame_chunks,
    iter_predictions,
    label_dataset,
    predict,
    predict_frames,
)

torch.set_num_threads(1)


def test_frame_chunks_cover_every_frame_once_in_order():
    assert frame_chunks([21] * 5, 50) == [(0, 2), (2, 4), (4, 5)]
    assert frame_chunks([21] * 5, 42) == [(0, 2), (2, 4), (4, 5)]
    assert frame_chunks([21] * 5, 41) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    # a frame larger than the chunk goes alone; small ones after it are grouped again
    assert frame_chunks([100, 5, 5, 60], 50) == [(0, 1), (1, 3), (3, 4)]
    assert frame_chunks([], 10) == []
    with pytest.raises(ValueError, match="^chunk_atoms must be >= 1, got 0$"):
        frame_chunks([3], 0)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return PaiNN(species=[1, 6, 8, 14], hidden=8, n_interactions=1).double()


def _ase(model, atoms, stress=False):
    a = atoms.copy()
    a.calc = MLFFCalculator(model, dtype="float64")
    out = (a.get_potential_energy(), a.get_forces())
    return (*out, a.get_stress(voigt=False)) if stress else out


def test_predict_mixed_systems_equals_ase_frame_by_frame(model):
    asp = load_dataset("aspirin")
    sil = load_dataset("silica")
    mixed = Dataset.concatenate([asp[np.arange(3)], sil[np.arange(2)], asp[np.arange(3, 5)]])
    for kw in ({"chunk_atoms": 50}, {"chunk_atoms": 10**6}, {"batch_size": 3}):
        p = predict(model, mixed, **kw)
        assert p["energy"].dtype == np.float64 and "stress" not in p
        for k in range(len(mixed)):
            e, f = _ase(model, mixed.to_atoms(k, with_labels=False))
            assert p["energy"][k] == pytest.approx(e, rel=1e-12, abs=1e-12), (kw, k)
            sl = slice(mixed.ptr_s[k], mixed.ptr_s[k + 1])
            np.testing.assert_allclose(p["forces"][sl], f, rtol=1e-10, atol=1e-12)


def test_predict_stress_and_labelling_of_periodic_cells(model):
    sil = load_dataset("silica")[np.arange(3)]
    p = predict(model, sil, stress=True, chunk_atoms=40)
    for k in range(3):
        e, f, s = _ase(model, sil.to_atoms(k, with_labels=False), stress=True)
        np.testing.assert_allclose(p["stress"][k], s, rtol=1e-9, atol=1e-12)
    lab = label_dataset(model, sil, chunk_atoms=40, desc=None)
    np.testing.assert_array_equal(lab.energy_s, p["energy"])
    np.testing.assert_array_equal(lab.stress_s33, p["stress"])  # periodic: stress by default
    np.testing.assert_array_equal(lab.positions_nc, sil.positions_nc)
    assert lab.provenance["labels"]["potential"] == "painn"
    assert lab.provenance["labels"]["stress"] is True
    assert not np.array_equal(sil.energy_s, lab.energy_s)  # the input set is untouched


def test_predict_frames_of_one_system(model):
    asp = load_dataset("aspirin")
    atoms = asp.to_atoms(0, with_labels=False)
    pos = asp.positions_nc[: 4 * 21].reshape(4, 21, 3)
    e, f = predict_frames(model, atoms, pos, chunk_atoms=30)
    assert e.shape == (4,) and f.shape == (4, 21, 3)
    p = predict(model, asp[np.arange(4)])
    np.testing.assert_allclose(e, p["energy"], rtol=1e-12)
    np.testing.assert_allclose(f.reshape(-1, 3), p["forces"], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"^positions must be \(frames, 21, 3\) for this"):
        predict_frames(model, atoms, pos[:, :20])
    with pytest.raises(ValueError, match="^batch_size must be >= 1, got 0$"):
        predict(model, asp[np.arange(2)], batch_size=0)


def test_iter_predictions_takes_another_evaluation_per_chunk(model):
    """``evaluate`` replaces the energy/forces call on the same chunks: here a function of
    the batch alone (2 × positions), which must come back in frame order, float64."""
    ds = load_dataset("aspirin")[np.arange(7)]
    chunks = list(
        iter_predictions(
            model,
            ds,
            batch_size=3,
            dtype=torch.float32,
            evaluate=lambda m, b: {"twice": 2 * b.pos_nc},
        )
    )
    assert [(lo, hi) for lo, hi, _ in chunks] == [(0, 3), (3, 6), (6, 7)]
    got = np.concatenate([out["twice"] for _, _, out in chunks])
    assert got.dtype == np.float64 and set(chunks[0][2]) == {"twice"}
    np.testing.assert_allclose(got, 2 * ds.positions_nc, rtol=1e-6)
