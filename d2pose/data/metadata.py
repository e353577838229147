"""Keypoint metadata: names, flip map, skeleton, OKS sigmas and body parts, as data.

Built-in sets are available by name (`"coco_person"`, `"crowdpose"`, `"mpii"`; OCHuman uses COCO's);
`get_keypoint_metadata` also accepts a dict describing any keypoint set and validates it, so that a
length mismatch is reported at registration rather than mid-training.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Sequence, Tuple, Union

__all__ = ["KeypointMetadata", "get_keypoint_metadata", "BUILTIN_KEYPOINT_METADATA"]


@dataclass(frozen=True)
class KeypointMetadata:
    """Everything a keypoint set needs besides the images.

    Attributes:
        name: identifier of the set.
        keypoint_names: the K keypoint names, in annotation order.
        flip_map: pairs of names swapped by a horizontal flip.
        sigmas: K OKS sigmas (COCO's per-keypoint falloff, already divided by 10).
        skeleton: (name, name, (r, g, b)) connection rules for Detectron2's Visualizer.
        upper_body: names used by half-body augmentation as the upper body (the rest is lower).
    """

    name: str
    keypoint_names: Tuple[str, ...]
    flip_map: Tuple[Tuple[str, str], ...]
    sigmas: Tuple[float, ...]
    skeleton: Tuple[Tuple[str, str, Tuple[int, int, int]], ...] = ()
    upper_body: Tuple[str, ...] = field(default=())

    def __post_init__(self):
        names = self.keypoint_names
        where = f"keypoint metadata {self.name!r}"
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: keypoint_names has duplicates")
        if len(self.sigmas) != len(names):
            raise ValueError(f"{where}: {len(self.sigmas)} sigmas for {len(names)} keypoint_names")
        if any(s <= 0 for s in self.sigmas):
            raise ValueError(f"{where}: sigmas must be positive")
        for a, b in self.flip_map:
            for n in (a, b):
                if n not in names:
                    raise ValueError(f"{where}: flip_map names {n!r}, which is not in keypoint_names")
        flat = [n for pair in self.flip_map for n in pair]
        if len(set(flat)) != len(flat):
            raise ValueError(f"{where}: a keypoint appears twice in flip_map")
        for a, b, _ in self.skeleton:
            if a not in names or b not in names:
                raise ValueError(f"{where}: skeleton rule ({a!r}, {b!r}) names an unknown keypoint")
        for n in self.upper_body:
            if n not in names:
                raise ValueError(f"{where}: upper_body names {n!r}, which is not in keypoint_names")

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    @property
    def flip_indices(self) -> List[int]:
        """flip_indices[k] is the keypoint that k becomes after a horizontal flip."""
        index = {n: i for i, n in enumerate(self.keypoint_names)}
        out = list(range(self.num_keypoints))
        for a, b in self.flip_map:
            out[index[a]], out[index[b]] = index[b], index[a]
        return out

    @property
    def upper_body_ids(self) -> List[int]:
        return [self.keypoint_names.index(n) for n in self.upper_body]

    def as_catalog_dict(self) -> Dict:
        """Fields for Detectron2's MetadataCatalog (keypoint_names, keypoint_flip_map,
        keypoint_connection_rules as Detectron2 names them, plus OKS sigmas and flip indices)."""
        return dict(
            keypoint_set=self.name,
            keypoint_names=list(self.keypoint_names),
            keypoint_flip_map=[tuple(p) for p in self.flip_map],
            keypoint_connection_rules=[tuple(r) for r in self.skeleton],
            keypoint_oks_sigmas=list(self.sigmas),
            keypoint_flip_indices=self.flip_indices,
            keypoint_upper_body_ids=self.upper_body_ids,
        )


_COCO_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)


def _lr_pairs(names: Sequence[str], left: str = "left_", right: str = "right_") -> Tuple[Tuple[str, str], ...]:
    return tuple((n, right + n[len(left):]) for n in names if n.startswith(left) and right + n[len(left):] in names)


_ORANGE, _BLUE, _GREEN, _PINK = (255, 128, 0), (51, 153, 255), (0, 255, 0), (255, 51, 255)

# limbs COCO and CrowdPose share (same names, same colours: left green, right orange, across blue)
_ARMS = (
    ("left_shoulder", "left_elbow", _GREEN), ("right_shoulder", "right_elbow", _ORANGE),
    ("left_elbow", "left_wrist", _GREEN), ("right_elbow", "right_wrist", _ORANGE),
)
_HIPS_AND_LEGS = (
    ("left_hip", "right_hip", _BLUE), ("left_hip", "left_knee", _GREEN), ("right_hip", "right_knee", _ORANGE),
    ("left_knee", "left_ankle", _GREEN), ("right_knee", "right_ankle", _ORANGE),
)
_FLANKS = (("left_shoulder", "left_hip", _BLUE), ("right_shoulder", "right_hip", _BLUE))

COCO_PERSON = KeypointMetadata(
    name="coco_person",
    keypoint_names=_COCO_NAMES,
    flip_map=_lr_pairs(_COCO_NAMES),
    sigmas=(0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
            0.087, 0.087, 0.089, 0.089),
    skeleton=(
        ("left_ear", "left_eye", _GREEN), ("right_ear", "right_eye", _ORANGE), ("left_eye", "nose", _GREEN),
        ("nose", "right_eye", _ORANGE), ("left_shoulder", "right_shoulder", _BLUE),
        *_ARMS, *_HIPS_AND_LEGS, *_FLANKS,
    ),
    upper_body=_COCO_NAMES[:11],
)

_CROWDPOSE_NAMES = _COCO_NAMES[5:] + ("head", "neck")
CROWDPOSE = KeypointMetadata(
    name="crowdpose",
    keypoint_names=_CROWDPOSE_NAMES,
    flip_map=_lr_pairs(_CROWDPOSE_NAMES),
    sigmas=(0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089, 0.079, 0.079),
    skeleton=(
        ("head", "neck", _PINK), ("neck", "left_shoulder", _GREEN), ("neck", "right_shoulder", _ORANGE),
        *_ARMS, *_FLANKS, *_HIPS_AND_LEGS,
    ),
    upper_body=("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                "head", "neck"),
)

_MPII_NAMES = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
    "left_wrist",
)
MPII = KeypointMetadata(
    name="mpii",
    keypoint_names=_MPII_NAMES,
    flip_map=_lr_pairs(_MPII_NAMES),
    # MPII is scored with PCKh; these sigmas (MMPose's) only serve OKS-based tools such as OKS-NMS
    sigmas=(0.089, 0.083, 0.107, 0.107, 0.083, 0.089, 0.026, 0.026, 0.026, 0.026, 0.062, 0.072, 0.179, 0.179,
            0.072, 0.062),
    skeleton=(
        ("right_ankle", "right_knee", _ORANGE), ("right_knee", "right_hip", _ORANGE), ("right_hip", "pelvis", _ORANGE),
        ("left_ankle", "left_knee", _GREEN), ("left_knee", "left_hip", _GREEN), ("left_hip", "pelvis", _GREEN),
        ("pelvis", "thorax", _BLUE), ("thorax", "upper_neck", _BLUE), ("upper_neck", "head_top", _PINK),
        ("right_wrist", "right_elbow", _ORANGE), ("right_elbow", "right_shoulder", _ORANGE),
        ("right_shoulder", "thorax", _ORANGE), ("left_wrist", "left_elbow", _GREEN),
        ("left_elbow", "left_shoulder", _GREEN), ("left_shoulder", "thorax", _GREEN),
    ),
    upper_body=("thorax", "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder",
                "left_shoulder", "left_elbow", "left_wrist"),
)

BUILTIN_KEYPOINT_METADATA: Dict[str, KeypointMetadata] = {
    m.name: m for m in (COCO_PERSON, CROWDPOSE, MPII)
}
BUILTIN_KEYPOINT_METADATA["ochuman"] = COCO_PERSON


def get_keypoint_metadata(spec: Union[str, Mapping, KeypointMetadata]) -> KeypointMetadata:
    """A validated KeypointMetadata from a built-in name, a dict or an instance.

    A dict needs `keypoint_names`, `flip_map` and `sigmas`; `skeleton`, `upper_body` and `name` are
    optional. Lengths and names are checked here, with errors naming the field at fault.
    """
    if isinstance(spec, KeypointMetadata):
        return spec
    if isinstance(spec, str):
        if spec not in BUILTIN_KEYPOINT_METADATA:
            raise KeyError(f"unknown keypoint metadata {spec!r}; built-in: {sorted(BUILTIN_KEYPOINT_METADATA)}")
        return BUILTIN_KEYPOINT_METADATA[spec]
    if isinstance(spec, Mapping):
        missing = [k for k in ("keypoint_names", "flip_map", "sigmas") if k not in spec]
        if missing:
            raise ValueError(f"keypoint metadata dict is missing {missing}")
        unknown = set(spec) - {"name", "keypoint_names", "flip_map", "sigmas", "skeleton", "upper_body"}
        if unknown:
            raise ValueError(f"keypoint metadata dict has unknown fields {sorted(unknown)}")
        for field_name in ("keypoint_names", "flip_map", "sigmas", "upper_body"):
            if isinstance(spec.get(field_name), str):
                raise ValueError(f"keypoint metadata field {field_name!r} is the string {spec[field_name]!r}; give a "
                                 f"list (e.g. [{spec[field_name]!r}]), a string would be read one letter per entry")
        return KeypointMetadata(
            name=spec.get("name", "custom"),
            keypoint_names=tuple(spec["keypoint_names"]),
            flip_map=tuple(tuple(p) for p in spec["flip_map"]),
            sigmas=tuple(float(s) for s in spec["sigmas"]),
            skeleton=tuple((a, b, tuple(c)) for a, b, c in spec.get("skeleton", ())),
            upper_body=tuple(spec.get("upper_body", ())),
        )
    raise TypeError(f"keypoint metadata must be a name, a dict or a KeypointMetadata, got {type(spec).__name__}")
