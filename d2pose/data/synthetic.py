"""Procedurally rendered synthetic multi-person keypoint dataset: d2pose's built-in benchmark.

Each image holds 1-4 people posed by a 3D kinematic skeleton (realistic limb proportions, joint
angles within human ranges: standing, walking, gesturing, crouching, sitting), turned to face the
camera, face away or stand in profile, rotated in the image plane by up to 30 degrees, projected
orthographically and drawn back to front with anti-aliased cv2 primitives over a textured
background, with random occluders and mild photometric noise. Clothing colours are shared by both
body sides, so left and right can only be told apart by cues that survive mirroring: the face
(eyes, nose, mouth) or the back of the head (hair), exactly as for real people.

Labels follow COCO person keypoints. A keypoint is labelled visible (v=2) when its pixel shows the
body part it belongs to, occluded (v=1) when another person, an occluder or the person's own body
covers it, and unlabelled (v=0, x=y=0) when it lies outside the image or on the far side of the
head (eyes and nose of people facing away, the far eye and ear in profile). bbox, area and the RLE
segmentation come from each person's visible rendered silhouette. Extra annotation fields:
``facing`` ("front", "back", "profile_left": the person's left side faces the camera and the nose
points to image left, "profile_right"), ``person_height`` (standing height in pixels) and ``pose``.

Coordinate convention:
    The renderer works in continuous image coordinates where pixel (column i, row j) covers
    [i, i+1) x [j, j+1) and has its centre at (i + 0.5, j + 0.5). cv2's sub-pixel drawing (the
    ``shift`` argument) puts pixel centres at integer coordinates, so every primitive is drawn at
    ``p - 0.5`` (the intensity centroid of an anti-aliased cv2 disc matches its centre to ~0.03 px).
    The json stores COCO's convention ``x_json = x_continuous - 0.5`` (Detectron2 adds 0.5 back when
    loading). bbox is in pixel-edge coordinates, as pycocotools computes it from the silhouette.
"""
import colorsys
import json
import logging
import multiprocessing
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from .metadata import COCO_PERSON

__all__ = [
    "KEYPOINT_NAMES",
    "SKELETON",
    "SYNTHETIC_SPLITS",
    "SyntheticSplit",
    "ensure_synthetic_split",
    "generate_synthetic_pose",
    "render_sample_grid",
    "synthetic_root",
    "synthetic_split_paths",
]

logger = logging.getLogger(__name__)

VERSION = "synthetic_pose-1.0"  # bump on any change of the rendered output: it invalidates caches
KEYPOINT_NAMES = COCO_PERSON.keypoint_names
# the COCO person skeleton as 1-based keypoint index pairs (the COCO json "skeleton" field)
SKELETON = [[KEYPOINT_NAMES.index(a) + 1, KEYPOINT_NAMES.index(b) + 1] for a, b, _ in COCO_PERSON.skeleton]


@dataclass(frozen=True)
class SyntheticSplit:
    """Generation parameters of a named split: image count and seed (images are 384x384)."""

    num_images: int
    seed: int


#: Named splits; ``ensure_synthetic_split(name)`` generates them under ``synthetic_root()/name``.
SYNTHETIC_SPLITS: Dict[str, SyntheticSplit] = {
    "synthetic_pose_train": SyntheticSplit(num_images=4000, seed=1),
    "synthetic_pose_val": SyntheticSplit(num_images=500, seed=2),
    "synthetic_pose_val_mini": SyntheticSplit(num_images=64, seed=3),
}

_SHIFT = 4  # cv2 sub-pixel bits
_OCCLUDER_LABEL = 255  # label-map value of occluders; people use 32 * (index + 1) + part id
_MAX_PEOPLE = 4  # label values must fit in uint8: 32 * _MAX_PEOPLE + part < _OCCLUDER_LABEL
# body parts (label-map ids); a keypoint is visible when its pixel shows one of its parts
TORSO, PELVIS, NECK, HEAD = 0, 1, 2, 3
_LIMBS = ("upper", "fore", "hand", "thigh", "shin", "foot")


def _part(limb: str, side: int) -> int:
    """Label-map id of a limb part; side is +1 (person's left) or -1 (right)."""
    return 4 + 2 * _LIMBS.index(limb) + (side < 0)


_KP_PARTS = [{HEAD}] * 5 + [
    {TORSO, _part("upper", s)} for s in (1, -1)] + [
    {_part("upper", s), _part("fore", s)} for s in (1, -1)] + [
    {_part("fore", s), _part("hand", s)} for s in (1, -1)] + [
    {TORSO, PELVIS, _part("thigh", s)} for s in (1, -1)] + [
    {_part("thigh", s), _part("shin", s)} for s in (1, -1)] + [
    {_part("shin", s), _part("foot", s)} for s in (1, -1)
]  # fmt: skip
_SKIN = [(255, 224, 189), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 58, 38)]
_HAIR = [(20, 18, 16), (60, 40, 25), (110, 75, 40), (190, 150, 90), (150, 150, 150), (130, 55, 25)]


# ----------------------------------------------------------------------------------------- geometry
def _rot(axis: int, deg: float) -> np.ndarray:
    """3x3 rotation by ``deg`` degrees about axis 0 (x), 1 (y) or 2 (z)."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def _rotate_about(v: np.ndarray, axis: np.ndarray, deg: float) -> np.ndarray:
    """Rotates vector ``v`` about the unit vector ``axis`` (Rodrigues' formula)."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return v * c + np.cross(axis, v) * s + axis * np.dot(axis, v) * (1 - c)


def _project_ellipsoid(rotation: np.ndarray, axes: Sequence[float]) -> Tuple[Tuple[float, float], float]:
    """Orthographic image outline of an ellipsoid: ((semi-axis 1, semi-axis 2), angle in degrees).

    The ellipsoid {R diag(axes) s : |s| <= 1} projects to {A s} with A the image rows of
    R diag(axes) (image y points down), whose outline has shape matrix A A^T.
    """
    a = (rotation * np.asarray(axes)[None, :])[:2] * np.array([[1.0], [-1.0]])
    vals, vecs = np.linalg.eigh(a @ a.T)
    semi_axes = (float(np.sqrt(vals[1])), float(np.sqrt(max(vals[0], 1e-6))))
    return semi_axes, float(np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1])))


# ---------------------------------------------------------------------------------------- poses
_POSE_KINDS = ("stand", "walk", "gesture", "crouch", "sit", "free")
_POSE_PROBS = (0.25, 0.25, 0.22, 0.1, 0.12, 0.06)


def _sample_arm(rng: np.random.Generator, kind: str) -> Tuple[float, ...]:
    """(flexion, abduction, elbow flexion, inward twist) of one arm, in degrees."""
    u = rng.uniform
    if kind == "gesture":
        mode = rng.random()
        if mode < 0.3:
            return u(100, 178), u(0, 30), u(0, 100), u(-20, 40)  # raised
        if mode < 0.55:
            return u(-10, 30), u(60, 170), u(0, 120), u(-30, 60)  # sideways
        if mode < 0.8:
            return u(30, 100), u(0, 45), u(0, 150), u(-20, 90)  # reaching / bent in front
        kind = "stand"
    if kind == "crouch":
        return u(10, 90), u(0, 40), u(20, 130), u(0, 60)
    if kind == "sit":
        return u(0, 60), u(0, 30), u(20, 110), u(0, 70)
    if kind == "free":
        return u(-40, 178), u(0, 170), u(0, 150), u(-30, 90)
    return u(-15, 30), u(2, 25), u(0, 40), u(-20, 60)  # stand


def _sample_leg(rng: np.random.Generator, kind: str) -> Tuple[float, ...]:
    """(hip flexion, abduction, knee flexion, toe-out) of one leg, in degrees."""
    u = rng.uniform
    if kind == "crouch":
        return u(70, 125), u(0, 25), u(80, 150), u(0, 30)
    if kind == "sit":
        return u(70, 100), u(-5, 20), u(60, 110), u(0, 25)
    if kind == "free":
        return u(-25, 120), u(-10, 45), u(0, 150), u(-10, 40)
    return u(-8, 12), u(-3, 12), u(0, 15), u(0, 25)  # stand / gesture


def _sample_pose(rng: np.random.Generator) -> Tuple[str, Dict[str, float], Dict[int, tuple], Dict[int, tuple]]:
    """Samples a pose kind, trunk/head angles and per-side arm and leg angles (degrees)."""
    kind = _POSE_KINDS[rng.choice(len(_POSE_KINDS), p=_POSE_PROBS)]
    u = rng.uniform
    trunk = {"lean": u(-5, 8), "bend": u(-5, 5), "twist": u(-10, 10), "head_yaw": u(-15, 15), "head_pitch": u(-10, 15)}
    if kind == "crouch":
        trunk["lean"] = u(20, 55)
    elif kind == "free":
        trunk.update(lean=u(-15, 60), bend=u(-25, 25), twist=u(-30, 30))
    arms = {side: _sample_arm(rng, kind) for side in (1, -1)}
    legs = {side: _sample_leg(rng, kind) for side in (1, -1)}
    if kind == "walk":  # opposite arm/leg swing; which leg leads is random (left/right symmetric)
        lead, arm_amp, leg_amp = rng.choice([-1, 1]), u(10, 40), u(8, 30)
        for side in (1, -1):
            hip = -side * lead * leg_amp
            arms[side] = (side * lead * arm_amp + u(-5, 5), u(3, 15), u(10, 70), u(0, 40))
            legs[side] = (hip, u(-3, 6), u(0, 20) if hip > 0 else u(10, 60), u(0, 25))
    return kind, trunk, arms, legs


def _sample_facing(rng: np.random.Generator) -> Tuple[str, float]:
    """Facing label and whole-body yaw (degrees; 0 faces the camera, -90 shows the left side)."""
    facing = ("front", "back", "profile_left", "profile_right")[rng.choice(4, p=(0.4, 0.25, 0.175, 0.175))]
    centre = {"front": 0.0, "back": 180.0, "profile_left": -90.0, "profile_right": 90.0}[facing]
    return facing, centre + rng.uniform(-25, 25) * (0.8 if facing.startswith("profile") else 1.0)


# -------------------------------------------------------------------------------------- people
@dataclass
class _Shape:
    """One drawing primitive of a person, in coordinates relative to the person's pelvis.

    kind "seg": geom = (p0, p1, r0, r1) tapered capsule; "poly": geom = (points,) convex polygon;
    "ellipse": geom = (centre, (axis1, axis2), angle_deg); "line": geom = (p0, p1, thickness).
    """

    kind: str
    geom: tuple
    color: Tuple[float, float, float]
    part: int
    z: float
    outline: float = 0.0


@dataclass
class _Person:
    """A posed person: keypoints, depth of each keypoint and the shapes that draw it."""

    keypoints: np.ndarray  # (17, 2) continuous image coordinates (after ``offset`` is applied)
    kp_z: np.ndarray  # (17,) depth towards the camera
    labelled: np.ndarray  # (17,) False for face points on the far side of the head
    shapes: List[_Shape]
    facing: str
    pose: str
    height: float
    offset: np.ndarray
    depth: float = 0.0


def _random_colors(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """Per-person colours (BGR): skin, hair, shirt, trousers, shoes, and forearm/shin coverings."""

    def clothing() -> np.ndarray:
        r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.05, 0.85), rng.uniform(0.15, 0.95))
        return np.array([b, g, r]) * 255

    def jitter(rgb: Tuple[int, int, int]) -> np.ndarray:
        return np.clip(np.array(rgb[::-1], float) * rng.uniform(0.9, 1.1) + rng.uniform(-8, 8, 3), 0, 255)

    skin = jitter(_SKIN[rng.integers(len(_SKIN))])
    c = {"skin": skin, "hair": jitter(_HAIR[rng.integers(len(_HAIR))]), "shirt": clothing(), "trousers": clothing()}
    c["shoes"] = clothing() * 0.5 if rng.random() < 0.5 else np.full(3, rng.uniform(15, 60))
    c["sleeve"] = c["shirt"] if rng.random() < 0.5 else skin
    c["shin"] = c["trousers"] if rng.random() < 0.75 else skin
    return c


def _shade(color: np.ndarray, z: float, torso_z: float, scale: float) -> Tuple[float, float, float]:
    """Darkens parts further from the camera than the torso (a near/far cue, symmetric in left/right)."""
    factor = 1.0 - 0.22 * float(np.clip((torso_z - z) / (0.15 * scale), 0.0, 1.0))
    return tuple(float(v) for v in color * factor)


def _build_person(rng: np.random.Generator, height: float) -> _Person:
    """Samples a pose, facing and clothing and builds the person's keypoints and shapes (pelvis at 0)."""
    s, u = height, rng.uniform
    kind, trunk, arms, legs = _sample_pose(rng)
    facing, yaw = _sample_facing(rng)
    roll = float(np.clip(rng.normal(0.0, 10.0), -30.0, 30.0))
    world = _rot(2, roll) @ _rot(1, yaw)  # body frame: x = person's left, y = up, z = forward
    build = u(0.85, 1.2)
    length = {k: f * s * u(0.95, 1.05) for k, f in
              dict(upper=0.175, fore=0.15, hand=0.075, thigh=0.245, shin=0.245, torso=0.29, neck=0.085).items()}
    width = {k: f * s * build for k, f in
             dict(shoulder=0.11, hip=0.055, upper=0.034, fore=0.027, hand=0.022, thigh=0.046, shin=0.034).items()}
    colors = _random_colors(rng)

    torso_rot = _rot(1, trunk["twist"]) @ _rot(0, trunk["lean"]) @ _rot(2, trunk["bend"])
    joints: Dict[str, np.ndarray] = {}
    segments = []  # (p0, p1, r0, r1, colour, part) in the body frame
    for side, name in ((1, "left"), (-1, "right")):
        for chain in (_arm(side, arms[side], torso_rot, length, width, colors),
                      _leg(side, legs[side], length, width, colors, s * build)):
            joints.update({f"{name}_{joint}": p for joint, p in chain[0].items()})
            segments += chain[1]
    neck = torso_rot @ [0.0, length["torso"] + 0.02 * s, 0.0]
    head_rot = torso_rot @ _rot(1, trunk["head_yaw"]) @ _rot(0, -trunk["head_pitch"])
    head_centre = neck + head_rot @ [0.0, length["neck"], 0.01 * s]
    segments.append((neck - torso_rot @ [0, 0.03 * s, 0], head_centre, 0.026 * s * build, 0.024 * s * build,
                     colors["skin"], NECK))

    def to_image(p: np.ndarray) -> Tuple[np.ndarray, float]:
        q = world @ p
        return np.array([q[0], -q[1]]), float(q[2])

    torso_z = to_image(torso_rot @ [0, length["torso"] / 2, 0])[1]
    ow = max(0.5, 0.012 * s)  # outline width
    shapes = []
    for p0, p1, r0, r1, color, part in segments:
        (a, za), (b, zb) = to_image(p0), to_image(p1)
        z = (za + zb) / 2 - (0.01 * s if part == NECK else 0.0)
        shapes.append(_Shape("seg", (a, b, r0, r1), _shade(color, z, torso_z, s), part, z, ow))
    for part, color, hull_points in _trunk_hulls(torso_rot, width, length, s, build, colors):
        pts = np.array([to_image(p)[0] for p in hull_points])
        z = torso_z - 0.02 * s if part == TORSO else to_image(np.zeros(3))[1] - 0.015 * s
        shapes.append(_Shape("poly", (pts,), tuple(float(v) for v in color), part, z, ow))

    head_shapes, labelled_face = _head_shapes(rng, world @ head_rot, to_image(head_centre), s, colors, ow)
    shapes += head_shapes
    face_points = [head_centre + head_rot @ p for p in _face_points(s)]
    points = [to_image(p) for p in face_points] + [to_image(joints[n]) for n in KEYPOINT_NAMES[5:]]
    labelled = np.concatenate([labelled_face, np.ones(12, bool)])
    return _Person(np.array([p for p, _ in points]), np.array([z for _, z in points]), labelled, shapes,
                   facing, kind, float(height), np.zeros(2))


def _arm(side: int, angles: Tuple[float, ...], torso_rot: np.ndarray, length: Dict[str, float],
         width: Dict[str, float], colors: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], list]:
    """Joints (body frame) and capsules (upper arm, forearm, hand) of one arm; side +1 = left."""
    flex, abd, elbow, twist = angles
    frame = torso_rot @ _rot(0, -flex) @ _rot(2, side * abd)
    down, fwd = frame @ [0.0, -1.0, 0.0], frame @ [0.0, 0.0, 1.0]
    bend_dir = _rotate_about(fwd, down, side * twist)  # positive twist turns the forearm inwards
    fore_dir = np.cos(np.radians(elbow)) * down + np.sin(np.radians(elbow)) * bend_dir
    sh = torso_rot @ [side * width["shoulder"], length["torso"], 0.0]
    el = sh + length["upper"] * down
    wr = el + length["fore"] * fore_dir
    segments = [(sh, el, width["upper"], width["upper"] * 0.85, colors["shirt"], _part("upper", side)),
                (el, wr, width["fore"], width["fore"] * 0.8, colors["sleeve"], _part("fore", side)),
                (wr, wr + length["hand"] * fore_dir, width["hand"], width["hand"] * 0.85, colors["skin"],
                 _part("hand", side))]
    return {"shoulder": sh, "elbow": el, "wrist": wr}, segments


def _leg(side: int, angles: Tuple[float, ...], length: Dict[str, float], width: Dict[str, float],
         colors: Dict[str, np.ndarray], foot_scale: float) -> Tuple[Dict[str, np.ndarray], list]:
    """Joints (body frame) and capsules (thigh, shin, foot) of one leg; side +1 = left."""
    hip_flex, hip_abd, knee, toe = angles
    frame = _rot(0, -hip_flex) @ _rot(2, side * hip_abd)
    down, fwd = frame @ [0.0, -1.0, 0.0], frame @ [0.0, 0.0, 1.0]
    k = np.radians(knee)  # the knee bends the shin backwards; the foot stays perpendicular to it
    shin_dir, foot_dir = np.cos(k) * down - np.sin(k) * fwd, np.cos(k) * fwd + np.sin(k) * down
    foot_dir = _rotate_about(foot_dir, shin_dir, -side * toe)
    hp = np.array([side * width["hip"], 0.0, 0.0])
    kn = hp + length["thigh"] * down
    an = kn + length["shin"] * shin_dir
    f = foot_scale
    heel, toe_tip = an + 0.02 * f * shin_dir - 0.02 * f * foot_dir, an + 0.035 * f * shin_dir + 0.11 * f * foot_dir
    segments = [(hp, kn, width["thigh"], width["thigh"] * 0.8, colors["trousers"], _part("thigh", side)),
                (kn, an, width["shin"], width["shin"] * 0.75, colors["shin"], _part("shin", side)),
                (heel, toe_tip, 0.027 * f, 0.022 * f, colors["shoes"], _part("foot", side))]
    return {"hip": hp, "knee": kn, "ankle": an}, segments


def _trunk_hulls(
    torso_rot: np.ndarray, width: Dict[str, float], length: Dict[str, float], s: float, build: float,
    colors: Dict[str, np.ndarray],
) -> List[Tuple[int, np.ndarray, List[np.ndarray]]]:
    """3D point sets whose projected convex hulls are the shirt (torso) and the trousers' pelvis."""
    ring = np.stack([np.cos(np.linspace(0, 2 * np.pi, 12, endpoint=False)),
                     np.sin(np.linspace(0, 2 * np.pi, 12, endpoint=False))], 1)

    def section(half_w: float, y: float, half_d: float, rot: np.ndarray) -> List[np.ndarray]:
        return [rot @ [half_w * cx, y, half_d * cz] for cx, cz in ring]

    shoulder_w = width["shoulder"] + 0.025 * s * build
    torso = (section(shoulder_w, length["torso"] - 0.01 * s, 0.065 * s * build, torso_rot)
             + section(0.05 * s * build, length["torso"] + 0.03 * s, 0.04 * s, torso_rot)
             + section(0.095 * s * build, 0.03 * s, 0.06 * s * build, np.eye(3)))
    pelvis = (section(0.095 * s * build, 0.05 * s, 0.06 * s * build, np.eye(3))
              + section(width["hip"] + 0.04 * s * build, -0.02 * s, 0.065 * s * build, np.eye(3))
              + section(0.03 * s * build, -0.07 * s, 0.04 * s, np.eye(3)))
    return [(TORSO, colors["shirt"], torso), (PELVIS, colors["trousers"], pelvis)]


def _head_axes(s: float) -> np.ndarray:
    """Semi-axes (width, height, depth) of the head ellipsoid."""
    return np.array([0.046, 0.066, 0.058]) * s


def _face_points(s: float) -> List[np.ndarray]:
    """Head-frame positions of nose tip, left/right eye and left/right ear."""
    a, b, c = _head_axes(s)
    return [np.array([0.0, -0.18 * b, 1.2 * c]), np.array([0.4 * a, 0.08 * b, 0.9 * c]),
            np.array([-0.4 * a, 0.08 * b, 0.9 * c]), np.array([a, -0.02 * b, -0.05 * c]),
            np.array([-a, -0.02 * b, -0.05 * c])]


def _head_shapes(
    rng: np.random.Generator, rot: np.ndarray, centre: Tuple[np.ndarray, float], s: float,
    colors: Dict[str, np.ndarray], ow: float,
) -> Tuple[List[_Shape], np.ndarray]:
    """Head shapes (hair, face, ears, eyes, nose, mouth) and which face keypoints are labelled.

    ``rot`` maps the head frame (x = person's left, y = up, z = forward) to camera space; a face
    point is labelled (and drawn) when its surface normal is not turned away from the camera.
    """
    (c2d, cz), axes = centre, _head_axes(s)
    a, b, c = axes
    facing_z = rot[2] @ [0.0, 0.0, 1.0]
    normals = np.array([[0, 0, 1], [0.4, 0.08, 0.9], [-0.4, 0.08, 0.9], [1, 0, -0.1], [-1, 0, -0.1]])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    labelled = normals @ rot[2] > np.array([-0.45, -0.1, -0.1, -0.5, -0.5])

    def place(p: Sequence[float]) -> Tuple[np.ndarray, float]:
        q = rot @ np.asarray(p, float)
        return c2d + np.array([q[0], -q[1]]), cz + float(q[2])

    def ellipsoid(off, ax, color, z_eps, outline=0.0) -> _Shape:
        """An ellipsoid at head-frame offset ``off``, drawn in order ``cz + z_eps`` (None: its own depth)."""
        p, z = place(off)
        geom, color = (p, *_project_ellipsoid(rot, ax)), tuple(float(v) for v in color)
        return _Shape("ellipse", geom, color, HEAD, z if z_eps is None else cz + z_eps, outline)

    shapes = []
    if rng.random() < 0.3:  # long hair hanging behind the head
        shapes.append(ellipsoid([0, -0.45 * b, -0.35 * c], [1.05 * a, 1.1 * b, 0.6 * c], colors["hair"], None, ow))
    shapes.append(ellipsoid([0, 0, 0], axes, colors["skin"], 0.0, outline=ow))  # skull; shows at the nape
    shapes.append(ellipsoid([0, 0.1 * b, -0.25 * c], axes * [1.06, 0.98, 0.86], colors["hair"], 1e-4))
    if facing_z > -0.2:
        shapes.append(ellipsoid([0, -0.14 * b, 0.25 * c], axes * [0.82, 0.84, 0.8], colors["skin"], 2e-4))
    features = []
    for k, p in enumerate(_face_points(s)):
        if not labelled[k]:
            continue
        if k >= 3:  # ears
            features.append(ellipsoid(p, [0.12 * a, 0.3 * b, 0.2 * c], colors["skin"] * 0.92, 3e-4, outline=ow * 0.5))
        elif k >= 1:  # eyes: white and iris at large scale, a dark dot otherwise
            if a > 12:
                features.append(ellipsoid(p, [0.17 * a, 0.1 * b, 0.1 * c], (235, 235, 235), 4e-4))
            features.append(ellipsoid(p, [0.1 * a, 0.08 * b, 0.08 * c], (40, 30, 25), 5e-4))
    if labelled[0]:
        nose = [place(q)[0] for q in ([0.15 * a, -0.24 * b, 0.93 * c], [-0.15 * a, -0.24 * b, 0.93 * c],
                                      _face_points(s)[0], [0, 0.05 * b, 0.95 * c])]
        hull = cv2.convexHull(np.float32(nose))[:, 0].astype(float)
        features.append(_Shape("poly", (hull,), tuple(float(v) for v in colors["skin"] * 0.75), HEAD, cz + 6e-4))
    if facing_z > 0.0:
        m0, m1 = place([0.3 * a, -0.5 * b, 0.85 * c])[0], place([-0.3 * a, -0.5 * b, 0.85 * c])[0]
        features.append(_Shape("line", (m0, m1, max(1, int(round(0.06 * a)))), (60, 50, 150), HEAD, cz + 7e-4))
    return shapes + features, labelled


# ------------------------------------------------------------------------------------- drawing
def _fix(p: np.ndarray) -> np.ndarray:
    """Continuous coordinates -> cv2 fixed-point coordinates (pixel centres at integers)."""
    return np.round((np.asarray(p, float) - 0.5) * (1 << _SHIFT)).astype(np.int32)


def _color(c: Sequence[float]) -> Tuple[int, int, int]:
    return tuple(int(round(min(max(v, 0.0), 255.0))) for v in c)


class _Canvas:
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

    def shape(self, sh: _Shape, offset: np.ndarray, label: int) -> None:
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


# ---------------------------------------------------------------------------------- backgrounds
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


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
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


def _draw_occluder(rng: np.random.Generator, canvas: _Canvas, centre: np.ndarray, size: np.ndarray) -> None:
    """Draws a rectangle, ellipse, textured patch or pole centred at ``centre`` and labels it."""
    h, w = canvas.labels.shape
    kind, angle = rng.integers(4), rng.uniform(0, 180)
    if kind == 2:  # axis-aligned textured patch
        x0, y0 = np.clip((centre - size / 2).astype(int), 0, [w - 1, h - 1])
        x1, y1 = np.clip((centre + size / 2).astype(int), [x0 + 1, y0 + 1], [w, h])
        canvas.image[y0:y1, x0:x1] = np.clip(_texture(rng, y1 - y0, x1 - x0), 0, 255).astype(np.uint8)
        canvas.labels[y0:y1, x0:x1] = _OCCLUDER_LABEL
        return
    color = _random_bgr(rng)
    if kind == 1:
        canvas.ellipse(centre, size / 2, angle, color, _OCCLUDER_LABEL)
        return
    if kind == 3:  # a thin long pole
        size = np.array([max(size) * 2.0, max(3.0, min(size) * 0.3)])
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * size / 2
    canvas.poly(centre + corners @ np.array([[c, s], [-s, c]]), color, _OCCLUDER_LABEL)


# ------------------------------------------------------------------------------------- samples
def _place_people(rng: np.random.Generator, h: int, w: int) -> List[_Person]:
    """Samples 1-4 people, places them (limited mutual overlap) and orders them back to front."""
    people, boxes = [], []
    for _ in range(rng.choice(np.arange(1, _MAX_PEOPLE + 1), p=[0.3, 0.3, 0.25, 0.15])):
        height = float(np.exp(rng.uniform(np.log(40), np.log(300))))
        person = _build_person(rng, height)
        lo, hi = person.keypoints.min(0) - 0.08 * height, person.keypoints.max(0) + 0.08 * height
        extent = hi - lo
        margin = np.zeros(2) if rng.random() < 0.15 else np.minimum(0.4 * extent, [w / 2, h / 2])
        for _attempt in range(8):
            box_centre = rng.uniform(margin, [w, h] - margin)
            box = np.concatenate([box_centre - extent / 2, box_centre + extent / 2])
            inter = [np.prod(np.clip(np.minimum(box[2:], b[2:]) - np.maximum(box[:2], b[:2]), 0, None))
                     / min(np.prod(extent), np.prod(b[2:] - b[:2])) for b in boxes]
            if max(inter, default=0.0) < 0.5:
                person.offset = box_centre - (lo + hi) / 2
                person.keypoints = person.keypoints + person.offset
                person.depth = np.log(height) + rng.normal(0, 0.4)  # bigger people tend to be nearer
                people.append(person)
                boxes.append(box)
                break
    return sorted(people, key=lambda p: p.depth)


def _visibility(person: _Person, index: int, labels: np.ndarray) -> np.ndarray:
    """COCO v flags from the final label map (see the module docstring)."""
    h, w = labels.shape
    v = np.zeros(17, np.int64)
    for k, (x, y) in enumerate(person.keypoints):
        if not person.labelled[k] or not (0.5 <= x <= w - 0.5 and 0.5 <= y <= h - 0.5):
            continue
        parts = set(_KP_PARTS[k])
        if 5 <= k <= 6 or 11 <= k <= 12:  # the trunk hides the far shoulder/hip once turned > 30 deg
            other = k + 1 if k % 2 else k - 1
            dz = person.kp_z[other] - person.kp_z[k]
            if dz > 0.5 * np.hypot(np.hypot(*(person.keypoints[other] - person.keypoints[k])), dz):
                parts -= {TORSO, PELVIS}
        allowed = {32 * (index + 1) + p for p in parts}
        px, py = min(int(x), w - 1), min(int(y), h - 1)
        if labels[py, px] in allowed:
            v[k] = 2
        elif labels[py, px] == 0 and set(np.unique(labels[max(py - 1, 0):py + 2, max(px - 1, 0):px + 2])) & allowed:
            v[k] = 2  # thin parts on bare background: tolerate the hard label map's rounding
        else:
            v[k] = 1
    return v


def _photometric(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Brightness/contrast, an illumination gradient, slight blur and sensor noise."""
    out = img.astype(np.float32) * rng.uniform(0.75, 1.25) + rng.uniform(-25, 25)
    if rng.random() < 0.5:
        h, w = img.shape[:2]
        gx, gy = rng.uniform(-0.25, 0.25, 2) / max(h, w)
        gain = 1.0 + np.float32(gx) * (np.arange(w, dtype=np.float32) - w / 2)[None, :] \
            + np.float32(gy) * (np.arange(h, dtype=np.float32) - h / 2)[:, None]
        out *= gain[..., None]
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 1.0))
    grain = int(rng.integers(0, 10))  # uniform sensor noise in [-grain, grain]
    if grain:
        out += rng.integers(-grain, grain + 1, out.shape, dtype=np.int16)
    return np.clip(out, 0, 255).astype(np.uint8)


def _render_sample(seed: int, index: int, image_size: Tuple[int, int]) -> Tuple[bytes, List[dict]]:
    """Renders image ``index`` of the dataset ``seed``: (JPEG bytes, annotations without ids)."""
    rng = np.random.default_rng([seed, index])
    h, w = image_size
    canvas = _Canvas(_background(rng, h, w))
    people = _place_people(rng, h, w)
    layers = [(p.depth, i) for i, p in enumerate(people)]
    occluders = []
    for _ in range(rng.choice([0, 1, 2, 3], p=[0.3, 0.35, 0.25, 0.1])):
        if people and rng.random() < 0.7:  # aimed at a person, usually in front of them
            target = people[rng.integers(len(people))]
            size = np.clip(rng.uniform(0.12, 0.5, 2) * target.height, 6, 0.4 * min(h, w))
            centre = target.keypoints[rng.integers(17)] + rng.uniform(-0.5, 0.5, 2) * size
            depth = target.depth + 1e-3 if rng.random() < 0.8 else target.depth - 1e-3
        else:
            size, centre = rng.uniform(0.05, 0.3, 2) * [w, h], rng.uniform(0, 1, 2) * [w, h]
            depth = rng.uniform(2, 7)
        occluders.append((centre, size, int(rng.integers(1 << 30))))
        layers.append((depth, -len(occluders)))
    for _, item in sorted(layers):
        if item >= 0:
            person = people[item]
            for sh in sorted(person.shapes, key=lambda sh: sh.z):
                canvas.shape(sh, person.offset, 32 * (item + 1) + sh.part)
        else:
            centre, size, sub_seed = occluders[-item - 1]
            _draw_occluder(np.random.default_rng([seed, index, sub_seed]), canvas, centre, size)
    annotations = []
    for i, person in enumerate(people):
        silhouette = np.asfortranarray((canvas.labels // 32 == i + 1).astype(np.uint8))
        area = int(silhouette.sum())
        if area == 0:
            continue
        rle = mask_utils.encode(silhouette)
        v = _visibility(person, i, canvas.labels)
        kps = [[round(float(x) - 0.5, 2), round(float(y) - 0.5, 2), int(f)] if f > 0 else [0, 0, 0]
               for (x, y), f in zip(person.keypoints, v)]
        annotations.append({
            "category_id": 1, "iscrowd": 0, "keypoints": [c for kp in kps for c in kp],
            "num_keypoints": int((v > 0).sum()), "bbox": [float(c) for c in mask_utils.toBbox(rle)],
            "area": float(area), "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
            "facing": person.facing, "person_height": round(person.height, 2), "pose": person.pose,
        })  # fmt: skip
    image = _photometric(rng, canvas.image)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(65, 96))])
    assert ok, "JPEG encoding failed"
    return jpeg.tobytes(), annotations


# ---------------------------------------------------------------------------------- public API
def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _generate_one(args: Tuple[str, int, int, Tuple[int, int]]) -> Tuple[dict, List[dict]]:
    """Renders and writes one image; returns its COCO image entry and annotations."""
    image_dir, seed, index, image_size = args
    jpeg, annotations = _render_sample(seed, index, image_size)
    file_name = f"{index:06d}.jpg"
    _write_atomic(os.path.join(image_dir, file_name), jpeg)
    entry = {"id": index + 1, "file_name": file_name, "height": image_size[0], "width": image_size[1]}
    return entry, annotations


def _categories() -> List[dict]:
    return [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(KEYPOINT_NAMES),
             "skeleton": [list(pair) for pair in SKELETON]}]


def generate_synthetic_pose(
    output_dir: str,
    num_images: int,
    seed: int,
    image_size: Tuple[int, int] = (384, 384),
    num_workers: int = 0,
    progress: bool = True,
) -> str:
    """Generates (or reuses) a synthetic dataset: ``output_dir/images/*.jpg`` + ``annotations.json``.

    Args:
        output_dir: directory of the dataset.
        num_images: number of images.
        seed: dataset seed; image ``i`` depends only on (seed, i), so output is identical for
            any ``num_workers``.
        image_size: (height, width) of every image.
        num_workers: worker processes (0: render in this process).
        progress: show a tqdm progress bar.

    Returns:
        Path of the COCO person_keypoints json; it is written atomically and last, and kept when
        it already exists with the same generation parameters (json["info"]["generation"]).
    """
    if num_images < 1:
        raise ValueError(f"num_images must be positive, got {num_images}")
    image_size = (int(image_size[0]), int(image_size[1]))
    params = {"version": VERSION, "num_images": int(num_images), "seed": int(seed), "image_size": list(image_size)}
    json_path = os.path.join(output_dir, "annotations.json")
    image_dir = os.path.join(output_dir, "images")
    if os.path.isfile(json_path):
        try:
            with open(json_path) as f:
                cached = json.load(f).get("info", {}).get("generation")
        except (OSError, ValueError):
            cached = None
        if cached == params and os.path.isfile(os.path.join(image_dir, f"{num_images - 1:06d}.jpg")):
            logger.info("Using cached synthetic pose dataset at %s", json_path)
            return json_path
    os.makedirs(image_dir, exist_ok=True)
    logger.info("Generating %d synthetic pose images (seed %d) into %s", num_images, seed, output_dir)
    tasks = [(image_dir, int(seed), i, image_size) for i in range(num_images)]
    images, annotations = [], []
    bar = tqdm(total=num_images, desc="synthetic pose", disable=not progress)
    pool = multiprocessing.Pool(num_workers) if num_workers > 0 else None
    try:
        results = pool.imap(_generate_one, tasks, chunksize=8) if pool else map(_generate_one, tasks)
        for entry, anns in results:
            images.append(entry)
            for ann in anns:
                annotations.append({"id": len(annotations) + 1, "image_id": entry["id"], **ann})
            bar.update(1)
    finally:
        bar.close()
        if pool:
            pool.close()
            pool.join()
    dataset = {
        "info": {"description": "d2pose procedurally rendered synthetic multi-person keypoints",
                 "version": VERSION, "generation": params},
        "images": images, "annotations": annotations, "categories": _categories(),
    }  # fmt: skip
    _write_atomic(json_path, json.dumps(dataset).encode("utf-8"))
    logger.info("Wrote %d images, %d people to %s", len(images), len(annotations), json_path)
    return json_path


def synthetic_root() -> str:
    """Root of the synthetic splits: $D2POSE_SYNTHETIC_ROOT, else $DETECTRON2_DATASETS/synthetic_pose."""
    if os.environ.get("D2POSE_SYNTHETIC_ROOT"):
        return os.environ["D2POSE_SYNTHETIC_ROOT"]
    return os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "synthetic_pose")


def ensure_synthetic_split(name: str, root: Optional[str] = None) -> Tuple[str, str]:
    """Generates the named split of ``SYNTHETIC_SPLITS`` if needed; returns (json_file, image_root)."""
    if name not in SYNTHETIC_SPLITS:
        raise KeyError(f"unknown synthetic split {name!r}; known: {sorted(SYNTHETIC_SPLITS)}")
    split = SYNTHETIC_SPLITS[name]
    json_file, image_root = synthetic_split_paths(name, root)
    generate_synthetic_pose(os.path.dirname(json_file), split.num_images, split.seed)
    return json_file, image_root


def synthetic_split_paths(name: str, root: Optional[str] = None) -> Tuple[str, str]:
    """(json_file, image_root) of a named split, generated or not."""
    output_dir = os.path.join(root or synthetic_root(), name)
    return os.path.join(output_dir, "annotations.json"), os.path.join(output_dir, "images")


_LIMB_COLORS = [tuple(int(c) for c in cv2.cvtColor(np.uint8([[[h, 220, 255]]]), cv2.COLOR_HSV2BGR)[0, 0])
                for h in np.linspace(0, 179, len(SKELETON), endpoint=False)]


def render_sample_grid(json_file: str, image_root: str, out_path: str, num: int = 16, cols: int = 4) -> str:
    """Draws the annotations of the first ``num`` images into a PNG grid and returns its path.

    Skeleton limbs have a fixed colour per keypoint pair; keypoints are green discs when visible
    (v=2) and red rings when occluded (v=1); boxes are grey, with the facing written above.
    """
    with open(json_file) as f:
        data = json.load(f)
    images = sorted(data["images"], key=lambda im: im["id"])[:num]
    by_image: Dict[int, List[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    tiles = []
    for im in images:
        tile = cv2.imread(os.path.join(image_root, im["file_name"]))
        for ann in by_image.get(im["id"], []):
            kps = np.array(ann["keypoints"], float).reshape(17, 3)
            x, y, bw, bh = ann["bbox"]
            cv2.rectangle(tile, (int(x), int(y)), (int(x + bw), int(y + bh)), (160, 160, 160), 1)
            cv2.putText(tile, ann.get("facing", ""), (int(x), max(int(y) - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                        (255, 255, 255), 1, cv2.LINE_AA)
            for (a, b), color in zip(SKELETON, _LIMB_COLORS):
                if kps[a - 1, 2] > 0 and kps[b - 1, 2] > 0:
                    cv2.line(tile, tuple(int(v) for v in np.round(kps[a - 1, :2] * 16)),
                             tuple(int(v) for v in np.round(kps[b - 1, :2] * 16)), color, 1, cv2.LINE_AA, 4)
            for x, y, v in kps:
                centre = (int(round(x * 16)), int(round(y * 16)))
                if v == 2:
                    cv2.circle(tile, centre, 40, (0, 255, 0), -1, cv2.LINE_AA, 4)
                elif v == 1:
                    cv2.circle(tile, centre, 40, (0, 0, 255), 1, cv2.LINE_AA, 4)
        tiles.append(tile)
    if not tiles:
        raise ValueError(f"no images in {json_file}")
    th, tw = tiles[0].shape[:2]
    rows = (len(tiles) + cols - 1) // cols
    grid = np.zeros((rows * th, cols * tw, 3), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = cv2.resize(tile, (tw, th))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    cv2.imwrite(out_path, grid)
    return out_path
