"""One synthetic image and its COCO annotations: 1-4 people placed with limited overlap and drawn back
to front with random occluders over a background, COCO visibility flags read from the final label map
(see the package docstring), photometric noise and JPEG encoding. Image ``index`` of dataset ``seed``
depends on (seed, index) alone."""
from typing import List, Tuple

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from .drawing import Canvas, background, draw_occluder
from .people import KEYPOINT_PARTS, PELVIS, TORSO, Person, build_person

__all__ = ["render_sample"]

_MAX_PEOPLE = 4  # label values must fit in uint8: 32 * _MAX_PEOPLE + part < drawing.OCCLUDER_LABEL


def _place_people(rng: np.random.Generator, h: int, w: int) -> List[Person]:
    """Samples 1-4 people, places them (limited mutual overlap) and orders them back to front."""
    people, boxes = [], []
    for _ in range(rng.choice(np.arange(1, _MAX_PEOPLE + 1), p=[0.3, 0.3, 0.25, 0.15])):
        height = float(np.exp(rng.uniform(np.log(40), np.log(300))))
        person = build_person(rng, height)
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


def _visibility(person: Person, index: int, labels: np.ndarray) -> np.ndarray:
    """COCO v flags from the final label map (see the package docstring)."""
    h, w = labels.shape
    v = np.zeros(17, np.int64)
    for k, (x, y) in enumerate(person.keypoints):
        if not person.labelled[k] or not (0.5 <= x <= w - 0.5 and 0.5 <= y <= h - 0.5):
            continue
        parts = set(KEYPOINT_PARTS[k])
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


def render_sample(seed: int, index: int, image_size: Tuple[int, int]) -> Tuple[bytes, List[dict]]:
    """Renders image ``index`` of the dataset ``seed``: (JPEG bytes, annotations without ids)."""
    rng = np.random.default_rng([seed, index])
    h, w = image_size
    canvas = Canvas(background(rng, h, w))
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
            draw_occluder(np.random.default_rng([seed, index, sub_seed]), canvas, centre, size)
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
