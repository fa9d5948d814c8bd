"""The replicas' counter-based Gaussian noise (ase_mlff.md.noise) against an independent
implementation in Python integers, and against scipy.stats."""

import numpy as np
import pytest
import torch
from scipy import stats

from ase_mlff.md.noise import (
    DRAW_BLOCK,
    counter_words,
    mix64,
    replica_keys,
    replica_normals,
)

MASK = (1 << 64) - 1
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _mix_ref(x: int) -> int:
    """SplitMix64's finaliser (Steele, Lea & Flood 2014) on unsigned 64-bit integers."""
    x &= MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def _word_ref(key: int, counter: int) -> int:
    return _mix_ref(_mix_ref(counter * 0x9E3779B97F4A7C15) ^ (key & MASK))


def reference_normals(key: int, draw: int, n_atoms: int) -> np.ndarray:
    """(n_atoms, 3) normals of one replica's draw, computed in Python integers + numpy."""
    out = np.empty(3 * n_atoms)
    for e in range(3 * n_atoms):
        c = 2 * (draw * DRAW_BLOCK + e)
        u1 = ((_word_ref(key, c) >> 11) + 1) * 2.0**-53
        u2 = (_word_ref(key, c + 1) >> 11) * 2.0**-53
        out[e] = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return out.reshape(n_atoms, 3)


def _signed(u: int) -> int:
    return u - (1 << 64) if u >= (1 << 63) else u


@pytest.mark.parametrize("device", DEVICES)
def test_words_equal_python_integer_splitmix64(device):
    """Wrap-around int64 arithmetic on this device gives SplitMix64's unsigned words,
    including the extreme bit patterns."""
    rng = np.random.default_rng(0)
    xs = [0, 1, -1, (1 << 63) - 1, -(1 << 63)] + [
        _signed(int(v)) for v in rng.integers(0, 1 << 63, 200, dtype=np.int64) * 2 + 1
    ]
    got = mix64(torch.tensor(xs, dtype=torch.int64, device=device)).cpu().tolist()
    assert [g & MASK for g in got] == [_mix_ref(x) for x in xs]
    keys = torch.tensor(xs[:50], dtype=torch.int64, device=device)
    counters = torch.arange(50, dtype=torch.int64, device=device) * 7919 + 3
    words = counter_words(keys, counters).cpu().tolist()
    assert [w & MASK for w in words] == [
        _word_ref(k, int(c)) for k, c in zip(xs[:50], counters.tolist())
    ]


@pytest.mark.parametrize("device", DEVICES)
def test_batched_normals_equal_each_replica_alone(device):
    """A batch of replicas of different sizes and draw counts gives each replica exactly
    its own stream's draw (the Python reference), in float64 and float32."""
    keys = replica_keys(3, [0, 5, 2], device)
    counts = torch.tensor([0, 4, 17], dtype=torch.int64, device=device)
    n_atoms = torch.tensor([4, 1, 6], device=device)
    system = torch.repeat_interleave(torch.arange(3, device=device), n_atoms)
    xi = replica_normals(keys, counts, system, n_atoms).cpu().numpy()
    ref = np.concatenate(
        [reference_normals(k, d, n) for k, d, n in zip(keys.tolist(), [0, 4, 17], [4, 1, 6])]
    )
    np.testing.assert_allclose(xi, ref, rtol=1e-12, atol=1e-12)
    xi32 = replica_normals(keys, counts, system, n_atoms, torch.float32)
    assert xi32.dtype == torch.float32
    np.testing.assert_allclose(xi32.cpu().numpy(), ref, rtol=1e-6, atol=1e-6)


def test_normals_are_standard_normal_and_uncorrelated():
    """200,000 draws: Kolmogorov-Smirnov against N(0, 1) (scipy.stats), the first four
    moments within 5 standard errors, and no correlation (|r| < 5/√n) between neighbouring
    elements, consecutive draws of a replica, or replicas with neighbouring ids."""
    n_rep, n_atoms, draws = 50, 20, 67  # 50 × 60 × 67 = 201,000 numbers
    keys = replica_keys(11, range(n_rep))
    sizes = torch.full((n_rep,), n_atoms)
    system = torch.repeat_interleave(torch.arange(n_rep), sizes)
    x = np.stack(
        [
            replica_normals(keys, torch.full((n_rep,), d), system, sizes).numpy()
            for d in range(draws)
        ]
    ).reshape(draws, n_rep, 3 * n_atoms)
    flat = x.ravel()
    n = flat.size
    assert stats.kstest(flat, "norm").pvalue > 1e-3
    assert abs(flat.mean()) < 5 / np.sqrt(n)
    assert abs(flat.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(stats.skew(flat)) < 5 * np.sqrt(6 / n)
    assert abs(stats.kurtosis(flat)) < 5 * np.sqrt(24 / n)

    def r(a, b):
        return stats.pearsonr(a.ravel(), b.ravel()).statistic

    bound = 5 / np.sqrt(x[..., 1:].size)
    assert abs(r(x[..., :-1], x[..., 1:])) < bound  # neighbouring elements
    assert abs(r(x[:-1], x[1:])) < 5 / np.sqrt(x[1:].size)  # consecutive draws
    assert abs(r(x[:, :-1], x[:, 1:])) < 5 / np.sqrt(x[:, 1:].size)  # neighbouring replicas


def test_the_statistics_test_catches_a_planted_fault():
    """The same checks see a 2 % scale error in the normals (a wrong Box-Muller constant)."""
    keys = replica_keys(11, range(50))
    sizes = torch.full((50,), 20)
    system = torch.repeat_interleave(torch.arange(50), sizes)
    flat = np.concatenate(
        [
            replica_normals(keys, torch.full((50,), d), system, sizes).numpy().ravel()
            for d in range(67)
        ]
    )
    bad = 1.02 * flat
    assert abs(bad.var() - 1) > 5 * np.sqrt(2 / bad.size)


def test_a_replica_too_large_for_its_draw_is_refused_before_any_work():
    """A replica's draw holds 3N < DRAW_BLOCK normals (so that two draws never share a
    counter); a larger image is refused by ``init_state`` with its atom count and the
    limit, before its graph is built or the model called."""
    from ase import Atoms

    from ase_mlff.md import init_state
    from ase_mlff.models.analytic import PairDoubleWell

    limit = (DRAW_BLOCK - 1) // 3  # 3N < DRAW_BLOCK
    n = limit + 1
    big = Atoms(numbers=np.ones(n, dtype=int), positions=np.zeros((n, 3)))
    small = Atoms("C2", positions=[[0, 0, 0], [1.2, 0, 0]])
    model = PairDoubleWell(25.0, 1.2, 1.8)
    calls = []
    model.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError, match=f"image 1 has {n} atoms.*at most {limit} atoms"):
        init_state(model, [small, big], temperature_K=300.0, seed=0)
    assert not calls  # refused before the model saw anything
