"""3D geometry of the synthetic renderer: axis rotations, Rodrigues' rotation about a vector and the
orthographic image outline of a rotated ellipsoid (image y points down)."""
from typing import Sequence, Tuple

import numpy as np

__all__ = ["axis_rotation", "project_ellipsoid", "rotate_about"]


def axis_rotation(axis: int, deg: float) -> np.ndarray:
    """3x3 rotation by ``deg`` degrees about axis 0 (x), 1 (y) or 2 (z)."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def rotate_about(v: np.ndarray, axis: np.ndarray, deg: float) -> np.ndarray:
    """Rotates vector ``v`` about the unit vector ``axis`` (Rodrigues' formula)."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return v * c + np.cross(axis, v) * s + axis * np.dot(axis, v) * (1 - c)


def project_ellipsoid(rotation: np.ndarray, axes: Sequence[float]) -> Tuple[Tuple[float, float], float]:
    """Orthographic image outline of an ellipsoid: ((semi-axis 1, semi-axis 2), angle in degrees).

    The ellipsoid {R diag(axes) s : |s| <= 1} projects to {A s} with A the image rows of
    R diag(axes) (image y points down), whose outline has shape matrix A A^T.
    """
    a = (rotation * np.asarray(axes)[None, :])[:2] * np.array([[1.0], [-1.0]])
    vals, vecs = np.linalg.eigh(a @ a.T)
    semi_axes = (float(np.sqrt(vals[1])), float(np.sqrt(max(vals[0], 1e-6))))
    return semi_axes, float(np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1])))
