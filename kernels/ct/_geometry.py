"""Scan geometry shared by fan-beam FBP and FDK: angle checks and redundancy weights.

Convention (all angles in radians here, degrees at the public API): view angle beta
puts the source at S = -D (sin beta, cos beta) and the central ray along
d = (sin beta, cos beta); the detector axis is e = (cos beta, -sin beta). A ray at fan
angle gamma then has direction cos(gamma) d + sin(gamma) e, i.e. it is the parallel
ray of skimage's angle theta = beta + gamma at t = D sin(gamma), and its conjugate
is (beta + pi + 2 gamma, -gamma).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


def angle_step(beta: F64) -> float:
    """Spacing of strictly increasing, evenly spaced view angles (radians)."""
    if beta.shape[0] < 2:
        raise ValueError("fan/cone reconstruction needs at least 2 views")
    steps = np.diff(beta)
    step = float((beta[-1] - beta[0]) / (beta.shape[0] - 1))
    if step <= 0 or np.abs(steps - step).max() > 1e-3 * step:
        raise ValueError("angles must be strictly increasing and evenly spaced")
    return step


def redundancy_weights(beta: F64, gamma: F64) -> F64:
    """w(beta, gamma) (views, detectors) so that each line's weights sum to one.

    A full 360-degree scan measures every line twice: w = 1/2. A short scan over
    [0, pi + 2 delta] with delta >= max|gamma| uses Parker's weights (Parker, Med.
    Phys. 9(2):254, 1982; Kak & Slaney sec. 3.5), with beta from the first view:

        sin^2(pi/4 * beta / (delta - gamma))              0 <= beta <= 2(delta - gamma)
        1                                    2(delta - gamma) <= beta <= pi - 2 gamma
        sin^2(pi/4 * (pi + 2 delta - beta) / (delta + gamma))  pi - 2 gamma <= beta

    Taking delta from the actual range rather than the fan half-angle extends the
    weights to any range between a short and a full scan.
    """
    step = angle_step(beta)
    coverage = step * beta.shape[0]
    if abs(coverage - 2 * np.pi) <= 0.5 * step:
        return np.full((beta.shape[0], gamma.shape[0]), 0.5)
    if coverage > 2 * np.pi:
        raise ValueError(f"angles cover {np.rad2deg(coverage):.1f} degrees; at most 360")
    delta = 0.5 * ((beta[-1] - beta[0]) - np.pi)
    fan = float(np.abs(gamma).max())
    if delta < fan - 1e-9:
        need = np.rad2deg(np.pi + 2 * fan)
        raise ValueError(f"a short scan needs at least {need:.1f} degrees (180 + fan angle)")
    return _parker(beta[:, None] - beta[0], gamma[None, :], delta)


def _parker(b: F64, g: F64, delta: float) -> F64:
    with np.errstate(divide="ignore", invalid="ignore"):
        rise = np.sin(np.pi / 4 * b / (delta - g)) ** 2
        fall = np.sin(np.pi / 4 * (np.pi + 2 * delta - b) / (delta + g)) ** 2
    w = np.ones(np.broadcast(b, g).shape)
    w = np.where(b < 2 * (delta - g), rise, w)
    w = np.where(b > np.pi - 2 * g, fall, w)
    return np.nan_to_num(np.clip(w, 0.0, 1.0))
