"""Drawing of the synthetic images: ``Canvas`` paints anti-aliased cv2 primitives (discs, convex
polygons, ellipses, tapered capsules, a person's ``Shape``) into the image and hard labels into a
label map at once; random textured backgrounds and occluders.

Coordinates are continuous image coordinates (pixel centres at i + 0.5); cv2's sub-pixel drawing puts
pixel centres at integers, so every primitive is drawn at ``p - 0.5`` in fixed point (``_SHIFT`` bits).
"""
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from .people import Shape

__all__ = ["OCCLUDER_LABEL", "Canvas", "background", "draw_occluder"]

_SHIFT = 4  # cv2 sub-pixel bits
OCCLUDER_LABEL = 255  # label-map value of occluders; people use 32 * (index + 1) + part id


def _fix(p: np.ndarray) -> np.ndarray:
    """Continuous coordinates -> cv2 fixed-point coordinates (pixel centres at integers)."""
    return np.round((np.asarray(p, float) - 0.5) * (1 << _SHIFT)).astype(np.int32)


def _color(c: Sequence[float]) -> Tuple[int, int, int]:
    return tuple(int(round(min(max(v, 0.0), 255.0))) for v in c)


class Canvas:
    """An image and a label map drawn together: anti-aliased colour, hard labels."""

    def __init__(self, image: np.ndarray):
        self.image = image
        self.labels = np.zeros(image.shape[:2], np.uint8)

    def disc(self, c, r, color, label: Optional[int]) -> None:
        centre, radius = tuple(int(v) for v in _fix(c)), max(1, int(round(r * (1 << _SHIFT))))
        cv2.circle(self.image, centre, radius, _color(color), -1, cv2.LINE_AA, _SHIFT)
        if label is not None:
            cv2.circle(self.labels, centre, radius, label, -1, cv2.LINE_8, _SHIFT)

    def poly(self, pts, color, label: Optional[int]) -> None:
        fixed = _fix(pts).reshape(-1, 1, 2)
        cv2.fillConvexPoly(self.image, fixed, _color(color), cv2.LINE_AA, _SHIFT)
        if label is not None:
            cv2.fillConvexPoly(self.labels, fixed, label, cv2.LINE_8, _SHIFT)

    def ellipse(self, c, axes, angle, color, label: Optional[int]) -> None:
        centre = tuple(int(v) for v in _fix(c))
        ax = tuple(max(1, int(round(v * (1 << _SHIFT)))) for v in axes)
        cv2.ellipse(self.image, centre, ax, angle, 0, 360, _color(color), -1, cv2.LINE_AA, _SHIFT)
        if label is not None:
            cv2.ellipse(self.labels, centre, ax, angle, 0, 360, label, -1, cv2.LINE_8, _SHIFT)

    def segment(self, p0, p1, r0, r1, color, label: Optional[int]) -> None:
        """Tapered capsule: end discs joined by their outer tangents."""
        p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
        self.disc(p0, r0, color, label)
        self.disc(p1, r1, color, label)
        d = p1 - p0
        length = float(np.hypot(*d))
        if length <= abs(r0 - r1) + 1e-6:
            return
        d /= length
        n, sin = np.array([-d[1], d[0]]), (r0 - r1) / length
        m1, m2 = n * np.sqrt(1 - sin**2) + d * sin, -n * np.sqrt(1 - sin**2) + d * sin
        self.poly(np.array([p0 + r0 * m1, p1 + r1 * m1, p1 + r1 * m2, p0 + r0 * m2]), color, label)

    def shape(self, sh: Shape, offset: np.ndarray, label: int) -> None:
        """Draws a person's shape: outline (darker, grown by ``sh.outline``) then fill."""
        layers = [(sh.outline, np.asarray(sh.color) * 0.55, label), (0.0, sh.color, None)] if sh.outline > 0 else \
            [(0.0, sh.color, label)]
        for grow, color, lab in layers:
            if sh.kind == "seg":
                p0, p1, r0, r1 = sh.geom
                self.segment(p0 + offset, p1 + offset, r0 + grow, r1 + grow, color, lab)
            elif sh.kind == "poly":
                pts = sh.geom[0] + offset
                if grow > 0:
                    ring = grow * np.stack([np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], 1)
                    pts = cv2.convexHull(np.float32((pts[:, None] + ring[None]).reshape(-1, 2)))[:, 0]
                self.poly(pts, color, lab)
            elif sh.kind == "ellipse":
                c, (ax1, ax2), angle = sh.geom
                self.ellipse(c + offset, (ax1 + grow, ax2 + grow), angle, color, lab)
            else:
                p0, p1, thickness = sh.geom
                cv2.line(self.image, tuple(int(v) for v in _fix(p0 + offset)), tuple(int(v) for v in _fix(p1 + offset)),
                         _color(color), thickness, cv2.LINE_AA, _SHIFT)


def _random_bgr(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3)


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random float32 (h, w, 3) texture: gradient, smooth noise, stripes or checkers."""
    kind = rng.integers(4)
    if kind == 1:
        grid = rng.uniform(0, 255, (int(rng.integers(2, 12)), int(rng.integers(2, 12)), 3)).astype(np.float32)
        return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    angle = rng.uniform(0, np.pi)
    xs, ys = np.arange(w, dtype=np.float32)[None, :], np.arange(h, dtype=np.float32)[:, None]
    t = xs * np.float32(np.cos(angle)) + ys * np.float32(np.sin(angle))
    c0, c1 = _random_bgr(rng).astype(np.float32), _random_bgr(rng).astype(np.float32)
    if kind == 0:
        weight = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    else:
        period = np.float32(rng.uniform(4, 60))
        weight = ((t / period) % 1.0 < rng.uniform(0.3, 0.7)).astype(np.float32)
        if kind == 3:
            t2 = ys * np.float32(np.cos(angle)) - xs * np.float32(np.sin(angle))
            weight = np.abs(weight - ((t2 / period) % 1.0 < 0.5))
    return (c0 + weight[..., None] * (c1 - c0)).astype(np.float32)


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A uint8 background mixing textures, blurred blobs and sharp shapes."""
    img = _texture(rng, h, w)
    if rng.random() < 0.5:
        alpha = rng.uniform(0.2, 0.7)
        img = cv2.addWeighted(img, 1.0 - alpha, _texture(rng, h, w), alpha, 0.0)
    if rng.random() < 0.6:  # blurred blobs, drawn at quarter resolution
        small = cv2.resize(img, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
        for _ in range(rng.integers(2, 9)):
            cv2.ellipse(small, (int(rng.integers(w // 4)), int(rng.integers(h // 4))),
                        (int(rng.integers(2, w // 6)), int(rng.integers(2, h // 6))), float(rng.uniform(0, 180)),
                        0, 360, _random_bgr(rng).tolist(), -1)
        small = cv2.GaussianBlur(small, (0, 0), rng.uniform(1, 4))
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    img = np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8))
    for _ in range(rng.integers(0, 8)):  # sharp shapes and limb-like distractors
        color, kind = _color(_random_bgr(rng)), rng.integers(3)
        p = rng.uniform(0, 1, (4, 2)) * [w, h]
        if kind == 0:
            cv2.fillConvexPoly(img, cv2.convexHull(_fix(p[:3])), color, cv2.LINE_AA, _SHIFT)
        elif kind == 1:
            p1 = p[0] + rng.uniform(-60, 60, 2)
            cv2.line(img, tuple(int(v) for v in _fix(p[0])), tuple(int(v) for v in _fix(p1)), color,
                     int(rng.integers(2, 14)), cv2.LINE_AA, _SHIFT)
        else:
            size = rng.uniform(5, 60, 2)
            cv2.rectangle(img, tuple(int(v) for v in p[0]), tuple(int(v) for v in p[0] + size), color, -1)
    return img


def draw_occluder(rng: np.random.Generator, canvas: Canvas, centre: np.ndarray, size: np.ndarray) -> None:
    """Draws a rectangle, ellipse, textured patch or pole centred at ``centre`` and labels it."""
    h, w = canvas.labels.shape
    kind, angle = rng.integers(4), rng.uniform(0, 180)
    if kind == 2:  # axis-aligned textured patch
        x0, y0 = np.clip((centre - size / 2).astype(int), 0, [w - 1, h - 1])
        x1, y1 = np.clip((centre + size / 2).astype(int), [x0 + 1, y0 + 1], [w, h])
        canvas.image[y0:y1, x0:x1] = np.clip(_texture(rng, y1 - y0, x1 - x0), 0, 255).astype(np.uint8)
        canvas.labels[y0:y1, x0:x1] = OCCLUDER_LABEL
        return
    color = _random_bgr(rng)
    if kind == 1:
        canvas.ellipse(centre, size / 2, angle, color, OCCLUDER_LABEL)
        return
    if kind == 3:  # a thin long pole
        size = np.array([max(size) * 2.0, max(3.0, min(size) * 0.3)])
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * size / 2
    canvas.poly(centre + corners @ np.array([[c, s], [-s, c]]), color, OCCLUDER_LABEL)
