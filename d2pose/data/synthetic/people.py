"""The synthetic people: a posed 3D kinematic body (limb proportions, trunk, head with face and hair),
clothed and shaded, turned and rolled in the image plane and projected orthographically to its COCO
keypoints, their depths and the drawing primitives (``Shape``) that render it, relative to the pelvis.

Body parts are label-map ids: TORSO, PELVIS, NECK, HEAD, then two per limb part (left, right);
``KEYPOINT_PARTS[k]`` are the parts whose pixels show keypoint k.
"""
import colorsys
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

from ..metadata import COCO_PERSON
from .geometry import axis_rotation, project_ellipsoid, rotate_about
from .poses import sample_facing, sample_pose

__all__ = ["HEAD", "KEYPOINT_NAMES", "KEYPOINT_PARTS", "NECK", "PELVIS", "TORSO", "Person", "Shape", "build_person"]

KEYPOINT_NAMES = COCO_PERSON.keypoint_names
# body parts (label-map ids); a keypoint is visible when its pixel shows one of its parts
TORSO, PELVIS, NECK, HEAD = 0, 1, 2, 3
_LIMBS = ("upper", "fore", "hand", "thigh", "shin", "foot")


def _part(limb: str, side: int) -> int:
    """Label-map id of a limb part; side is +1 (person's left) or -1 (right)."""
    return 4 + 2 * _LIMBS.index(limb) + (side < 0)


KEYPOINT_PARTS = [{HEAD}] * 5 + [
    {TORSO, _part("upper", s)} for s in (1, -1)] + [
    {_part("upper", s), _part("fore", s)} for s in (1, -1)] + [
    {_part("fore", s), _part("hand", s)} for s in (1, -1)] + [
    {TORSO, PELVIS, _part("thigh", s)} for s in (1, -1)] + [
    {_part("thigh", s), _part("shin", s)} for s in (1, -1)] + [
    {_part("shin", s), _part("foot", s)} for s in (1, -1)
]  # fmt: skip
_SKIN = [(255, 224, 189), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 58, 38)]
_HAIR = [(20, 18, 16), (60, 40, 25), (110, 75, 40), (190, 150, 90), (150, 150, 150), (130, 55, 25)]


@dataclass
class Shape:
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
class Person:
    """A posed person: keypoints, depth of each keypoint and the shapes that draw it."""

    keypoints: np.ndarray  # (17, 2) continuous image coordinates (after ``offset`` is applied)
    kp_z: np.ndarray  # (17,) depth towards the camera
    labelled: np.ndarray  # (17,) False for face points on the far side of the head
    shapes: List[Shape]
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


def build_person(rng: np.random.Generator, height: float) -> Person:
    """Samples a pose, facing and clothing and builds the person's keypoints and shapes (pelvis at 0)."""
    s, u = height, rng.uniform
    kind, trunk, arms, legs = sample_pose(rng)
    facing, yaw = sample_facing(rng)
    roll = float(np.clip(rng.normal(0.0, 10.0), -30.0, 30.0))
    world = axis_rotation(2, roll) @ axis_rotation(1, yaw)  # body frame: x = person's left, y = up, z = forward
    build = u(0.85, 1.2)
    length = {k: f * s * u(0.95, 1.05) for k, f in
              dict(upper=0.175, fore=0.15, hand=0.075, thigh=0.245, shin=0.245, torso=0.29, neck=0.085).items()}
    width = {k: f * s * build for k, f in
             dict(shoulder=0.11, hip=0.055, upper=0.034, fore=0.027, hand=0.022, thigh=0.046, shin=0.034).items()}
    colors = _random_colors(rng)

    torso_rot = axis_rotation(1, trunk["twist"]) @ axis_rotation(0, trunk["lean"]) @ axis_rotation(2, trunk["bend"])
    joints: Dict[str, np.ndarray] = {}
    segments = []  # (p0, p1, r0, r1, colour, part) in the body frame
    for side, name in ((1, "left"), (-1, "right")):
        for chain in (_arm(side, arms[side], torso_rot, length, width, colors),
                      _leg(side, legs[side], length, width, colors, s * build)):
            joints.update({f"{name}_{joint}": p for joint, p in chain[0].items()})
            segments += chain[1]
    neck = torso_rot @ [0.0, length["torso"] + 0.02 * s, 0.0]
    head_rot = torso_rot @ axis_rotation(1, trunk["head_yaw"]) @ axis_rotation(0, -trunk["head_pitch"])
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
        shapes.append(Shape("seg", (a, b, r0, r1), _shade(color, z, torso_z, s), part, z, ow))
    for part, color, hull_points in _trunk_hulls(torso_rot, width, length, s, build, colors):
        pts = np.array([to_image(p)[0] for p in hull_points])
        z = torso_z - 0.02 * s if part == TORSO else to_image(np.zeros(3))[1] - 0.015 * s
        shapes.append(Shape("poly", (pts,), tuple(float(v) for v in color), part, z, ow))

    head_shapes, labelled_face = _head_shapes(rng, world @ head_rot, to_image(head_centre), s, colors, ow)
    shapes += head_shapes
    face_points = [head_centre + head_rot @ p for p in _face_points(s)]
    points = [to_image(p) for p in face_points] + [to_image(joints[n]) for n in KEYPOINT_NAMES[5:]]
    labelled = np.concatenate([labelled_face, np.ones(12, bool)])
    return Person(np.array([p for p, _ in points]), np.array([z for _, z in points]), labelled, shapes,
                   facing, kind, float(height), np.zeros(2))


def _arm(side: int, angles: Tuple[float, ...], torso_rot: np.ndarray, length: Dict[str, float],
         width: Dict[str, float], colors: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], list]:
    """Joints (body frame) and capsules (upper arm, forearm, hand) of one arm; side +1 = left."""
    flex, abd, elbow, twist = angles
    frame = torso_rot @ axis_rotation(0, -flex) @ axis_rotation(2, side * abd)
    down, fwd = frame @ [0.0, -1.0, 0.0], frame @ [0.0, 0.0, 1.0]
    bend_dir = rotate_about(fwd, down, side * twist)  # positive twist turns the forearm inwards
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
    frame = axis_rotation(0, -hip_flex) @ axis_rotation(2, side * hip_abd)
    down, fwd = frame @ [0.0, -1.0, 0.0], frame @ [0.0, 0.0, 1.0]
    k = np.radians(knee)  # the knee bends the shin backwards; the foot stays perpendicular to it
    shin_dir, foot_dir = np.cos(k) * down - np.sin(k) * fwd, np.cos(k) * fwd + np.sin(k) * down
    foot_dir = rotate_about(foot_dir, shin_dir, -side * toe)
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
) -> Tuple[List[Shape], np.ndarray]:
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

    def ellipsoid(off, ax, color, z_eps, outline=0.0) -> Shape:
        """An ellipsoid at head-frame offset ``off``, drawn in order ``cz + z_eps`` (None: its own depth)."""
        p, z = place(off)
        geom, color = (p, *project_ellipsoid(rot, ax)), tuple(float(v) for v in color)
        return Shape("ellipse", geom, color, HEAD, z if z_eps is None else cz + z_eps, outline)

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
        features.append(Shape("poly", (hull,), tuple(float(v) for v in colors["skin"] * 0.75), HEAD, cz + 6e-4))
    if facing_z > 0.0:
        m0, m1 = place([0.3 * a, -0.5 * b, 0.85 * c])[0], place([-0.3 * a, -0.5 * b, 0.85 * c])[0]
        features.append(Shape("line", (m0, m1, max(1, int(round(0.06 * a)))), (60, 50, 150), HEAD, cz + 7e-4))
    return shapes + features, labelled
