"""Counter-based Gaussian noise for a batch of replicas, drawn in one vectorised pass.

Every replica needs its own random stream, so that its trajectory does not depend on
which other replicas share its batch (a replica run alone, or resumed, or joining a
running batch, follows the same path). One ``torch.Generator`` per replica gives that,
but drawing from R generators takes R kernel launches per step: on an H200 that loop
was most of the 47 % overhead of a batched aspirin step at R = 1,024 (docs/benchmarks.md).
Here the noise is instead a pure function of (replica key, draw counter, element index):

    u(key, c) = mix(mix(c · γ) ⊕ key),

``mix`` being SplitMix64's output function (Steele, Lea & Flood, OOPSLA 2014; the
finaliser also used to seed xoshiro generators) and γ its odd constant 0x9E3779B97F4A7C15.
``mix`` is a bijection of 64-bit words, so distinct counters give distinct words for one
key; the outer ``mix`` after XOR with the key makes the replicas' streams unrelated
rather than shifted copies of one sequence (as ``mix(key + c·γ)`` would give). Two
words give one standard normal by Box-Muller,

    ξ = √(−2 ln u₁) cos(2π u₂),   u₁ ∈ (0, 1], u₂ ∈ [0, 1) from the top 53 bits,

computed in float64. The counter of element e (atom-major, then x, y, z) in a replica's
draw number d is c = 2 (d · 2²⁴ + e) for u₁ and that + 1 for u₂; each replica carries
its draw count d (``MDState.noise_count_s``), so its draws are numbered by its own
history, not the batch's step.

The arithmetic is on int64 with wrap-around (two's complement) multiplication, as
SplitMix64's unsigned 64-bit arithmetic; ``tests/test_md_noise.py`` checks the words
against a Python-integer implementation with explicit mod 2⁶⁴ on the device the tests run
on, and the normals against scipy.stats (Kolmogorov-Smirnov, moments, correlations).
Written here rather than taken from a library: torch has no counter-based generator
with per-element keys, and numpy's Philox runs on the host, one key at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

#: SplitMix64's constants as the int64 values of their bit patterns
GAMMA = 0x9E3779B97F4A7C15 - (1 << 64)
_M1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_M2 = 0x94D049BB133111EB - (1 << 64)
#: counters reserved per draw of one replica: 3 × atoms must stay below this
DRAW_BLOCK = 1 << 24


def _srl(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 bit patterns (``>>`` on int64 is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def mix64(x: Tensor) -> Tensor:
    """SplitMix64's output function on int64 bit patterns (wrapping arithmetic)."""
    x = (x ^ _srl(x, 30)) * _M1
    x = (x ^ _srl(x, 27)) * _M2
    return x ^ _srl(x, 31)


def counter_words(key: Tensor, counter: Tensor) -> Tensor:
    """The 64-bit word u(key, c) = mix(mix(c · γ) ⊕ key) (module doc), broadcast."""
    return mix64(mix64(counter * GAMMA) ^ key)


def replica_keys(
    seed: int, replica_ids: Sequence[int], device: torch.device | str = "cpu"
) -> Tensor:
    """(R,) int64 keys: replica r's is ``SeedSequence([seed, r]).generate_state(1,
    uint64)[0]`` as an int64 bit pattern, so it depends only on (seed, r)."""
    words = [
        int(np.random.SeedSequence([int(seed), int(r)]).generate_state(1, dtype=np.uint64)[0])
        for r in replica_ids
    ]
    signed = [w - (1 << 64) if w >= (1 << 63) else w for w in words]
    return torch.tensor(signed, dtype=torch.int64, device=device)


def replica_normals(
    key_s: Tensor,
    count_s: Tensor,
    system_n: Tensor,
    n_atoms_s: Tensor,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """(N, 3) standard normals: replica s's block is draw number ``count_s[s]`` of its
    stream ``key_s[s]`` (module doc), whatever else is in the batch. Replicas must have
    fewer than ``DRAW_BLOCK / 3`` atoms (checked by ``init_state``, not here: no host
    sync in the step)."""
    device = system_n.device
    key_s, count_s = key_s.long(), count_s.long()
    first_n = (torch.cumsum(n_atoms_s, 0) - n_atoms_s)[system_n]
    local_n = torch.arange(len(system_n), device=device) - first_n
    element = local_n[:, None] * 3 + torch.arange(3, device=device)
    c = 2 * (count_s[system_n][:, None] * DRAW_BLOCK + element)
    key = key_s[system_n][:, None]
    scale = 2.0**-53
    u1 = (_srl(counter_words(key, c), 11).double() + 1.0) * scale
    u2 = _srl(counter_words(key, c + 1), 11).double() * scale
    xi = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * torch.pi * u2)
    return xi.to(dtype)
