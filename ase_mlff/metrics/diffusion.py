"""Self-diffusion coefficient from the mean squared displacement (paper 003, Appendix A).

    D = ⟨|r_i(t0 + τ) − r_i(t0)|²⟩ / (6 τ),

averaged over atoms (of one element, e.g. water oxygens) and over *every* time window
[t0, t0 + τ] of the trajectory, t0 = 0, 1, ..., T − K (paper 003: "averaging over the
diffusivity computed from all applicable time windows"). Periodic trajectories are first
unwrapped by accumulating minimum-image frame-to-frame displacements, so atoms that cross
the cell boundary (or were wrapped by the engine) are followed correctly.
"""

from __future__ import annotations

import numpy as np

#: Å²/fs -> cm²/s
A2_PER_FS_TO_CM2_PER_S = 1e-16 / 1e-15


def unwrap(positions_tnc: np.ndarray, cell_33: np.ndarray | None = None) -> np.ndarray:
    """Continuous trajectories: x_0 + Σ minimum-image(x_t − x_{t−1}) (T, N, 3)."""
    pos = np.asarray(positions_tnc, dtype=np.float64)
    if cell_33 is None or not np.any(cell_33):
        return pos.copy()
    from ase_mlff.graph.geometry import minimum_image

    step = minimum_image(np.diff(pos, axis=0), np.asarray(cell_33, dtype=np.float64))
    return np.concatenate([pos[:1], pos[:1] + np.cumsum(step, axis=0)], axis=0)


def msd_windows(positions_tnc: np.ndarray, lag: int) -> float:
    """⟨|r(t0 + lag) − r(t0)|²⟩ over atoms and all windows t0 (unwrapped input), Å²."""
    pos = np.asarray(positions_tnc, dtype=np.float64)
    if not 0 < lag < len(pos):
        raise ValueError(f"lag must be in 1..{len(pos) - 1} frames, got {lag}")
    d = pos[lag:] - pos[:-lag]
    return float(np.mean(np.sum(d * d, axis=-1)))


def diffusion_coefficient(
    positions_tnc: np.ndarray,
    frame_dt_fs: float,
    window_fs: float,
    cell_33: np.ndarray | None = None,
    atoms: np.ndarray | None = None,
) -> float:
    """D in Å²/fs (× 0.1 for cm²/s) from frames ``frame_dt_fs`` apart, windows of
    ``window_fs``; ``atoms`` selects atoms (e.g. the oxygens)."""
    pos = unwrap(positions_tnc, cell_33)
    if atoms is not None:
        pos = pos[:, atoms]
    lag = int(round(window_fs / frame_dt_fs))
    return msd_windows(pos, lag) / (6.0 * lag * frame_dt_fs)
