"""Random human poses of the synthetic people: a pose kind (standing, walking, gesturing, crouching,
sitting, free), trunk and head angles, per-side arm and leg joint angles within human ranges, and
which way the body faces the camera. Angles are in degrees."""
from typing import Dict, Tuple

import numpy as np

__all__ = ["POSE_KINDS", "POSE_PROBS", "sample_facing", "sample_pose"]

#: pose kinds and their probabilities
POSE_KINDS = ("stand", "walk", "gesture", "crouch", "sit", "free")
POSE_PROBS = (0.25, 0.25, 0.22, 0.1, 0.12, 0.06)


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


def sample_pose(rng: np.random.Generator) -> Tuple[str, Dict[str, float], Dict[int, tuple], Dict[int, tuple]]:
    """Samples a pose kind, trunk/head angles and per-side arm and leg angles (degrees)."""
    kind = POSE_KINDS[rng.choice(len(POSE_KINDS), p=POSE_PROBS)]
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


def sample_facing(rng: np.random.Generator) -> Tuple[str, float]:
    """Facing label and whole-body yaw (degrees; 0 faces the camera, -90 shows the left side)."""
    facing = ("front", "back", "profile_left", "profile_right")[rng.choice(4, p=(0.4, 0.25, 0.175, 0.175))]
    centre = {"front": 0.0, "back": 180.0, "profile_left": -90.0, "profile_right": 90.0}[facing]
    return facing, centre + rng.uniform(-25, 25) * (0.8 if facing.startswith("profile") else 1.0)
