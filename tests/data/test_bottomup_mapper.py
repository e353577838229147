"""Tests of the bottom-up dataset mapper: augmentation, targets through the centre + offset codec, the
authors' protocol (the codec itself: tests/codecs/test_center_offset.py)."""
import numpy as np

from d2pose.data.bottomup_mapper import BottomUpTargets, inference_resize_affine, random_bottomup_affine
from d2pose.data.metadata import get_keypoint_metadata
from d2pose.data.transforms.affine import apply_affine

from tests.data.samples import random_person


def test_random_affine_and_flip_targets():
    rng = np.random.default_rng(1)
    flip_indices = get_keypoint_metadata("coco_person").flip_indices
    M, flip = random_bottomup_affine((640, 480), 512, np.random.default_rng(3), flip_prob=1.0)
    assert flip and np.linalg.det(M[:, :2]) < 0
    people = random_person(rng, 320, 240, size=80)[None]
    targets = BottomUpTargets(512, 4, flip_indices)(people, np.array([10000.0]), M, flip)
    mapped = apply_affine(people[0, :, :2], M)[flip_indices]
    np.testing.assert_allclose(targets["centers"][0], mapped.mean(0), atol=1e-6)


def test_small_person_rule_reads_the_image_area():
    """A person of 40x40 px in the image (area 1600 >= 32^2) keeps its centre when the input
    halves it (400 input px^2); one of 30x30 px (900) has none at any scale."""
    rng = np.random.default_rng(2)
    people = np.stack([random_person(rng, 100, 100, size=40), random_person(rng, 250, 250, size=40)])
    M = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])
    t = BottomUpTargets(256, 4)(people, np.array([1600.0, 900.0]), M, False)
    assert np.isfinite(t["centers"][0]).all() and np.isnan(t["centers"][1]).all()
    # the offset weights still use the input-frame area: 1 / sqrt(400)
    np.testing.assert_allclose(t["offset_weights"].max(), 1.0 / 20.0, rtol=1e-6)


def test_min_center_area_key_sets_the_rule_for_both_protocols():
    """INPUT.BOTTOMUP.MIN_CENTER_AREA reaches the targets: with 0 the 30x30 px person gets a centre,
    with the default (32^2, the authors') it gets none; a bad value names the key."""
    import pytest

    from d2pose.config import get_d2pose_cfg
    from d2pose.data.build import build_bottomup_mapper

    cfg = get_d2pose_cfg()
    cfg.INPUT.PIPELINE = "bottomup"
    cfg.DATASETS.TRAIN = ("synthetic_pose_val_mini",)
    assert cfg.INPUT.BOTTOMUP.MIN_CENTER_AREA == 1024
    rng = np.random.default_rng(2)
    people = np.stack([random_person(rng, 100, 100, size=40), random_person(rng, 250, 250, size=40)])
    M = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])
    for protocol in ("d2pose", "dekr"):
        cfg.INPUT.BOTTOMUP.PROTOCOL = protocol
        for area, small_has_centre in ((1024.0, False), (0.0, True)):
            cfg.INPUT.BOTTOMUP.MIN_CENTER_AREA = area
            t = build_bottomup_mapper(cfg, True).targets(people, np.array([1600.0, 900.0]), M, False)
            assert np.isfinite(t["centers"][0]).all()
            assert np.isfinite(t["centers"][1]).all() == small_has_centre, (protocol, area)
    cfg.INPUT.BOTTOMUP.MIN_CENTER_AREA = -1.0
    with pytest.raises(ValueError, match="INPUT.BOTTOMUP.MIN_CENTER_AREA"):
        build_bottomup_mapper(cfg, True)


def test_inference_resize():
    S, (w, h) = inference_resize_affine((640, 427), 512, 64)
    assert h == 512 and w % 64 == 0 and w >= 640 * 512 / 427


def test_mapper_on_coco_mini(shared_data):
    from detectron2.data import DatasetCatalog

    from d2pose.data.bottomup_mapper import BottomUpDatasetMapper
    from tests.data.samples import register_sample

    name = register_sample("test_bottomup_coco_mini", shared_data,
                           "coco_mini/annotations/person_keypoints_train2017.json", "coco_mini/images/train2017")
    dicts = DatasetCatalog.get(name)
    flip = get_keypoint_metadata("coco_person").flip_indices
    train = BottomUpDatasetMapper(True, flip_indices=flip, input_size=256)
    crowd = [d for d in dicts if any(a.get("iscrowd", 0) for a in d["annotations"])][0]
    out = train(crowd)
    assert out["image"].shape == (3, 256, 256) and out["heatmaps"].shape == (18, 64, 64)
    assert out["offsets"].shape == (34, 64, 64) and out["heatmap_weights"].shape == (18, 64, 64)
    # people in input coordinates with their areas; keypoints pushed out of the input are unlabelled
    assert out["areas"].shape == out["keypoints"].shape[:1] and (out["areas"] > 0).all()
    kp = out["keypoints"]
    outside = (kp[..., 0] < 0) | (kp[..., 0] >= 256) | (kp[..., 1] < 0) | (kp[..., 1] >= 256)
    assert (kp[..., 2][outside] == 0).all()
    # with zero augmentation the crowd region is masked (weights 0 somewhere)
    still = BottomUpDatasetMapper(True, flip_indices=flip, input_size=256, max_rotation=0, scale_range=(1, 1),
                                  max_translation=0, flip_prob=0)
    assert still(crowd)["heatmap_weights"].min() == 0
    test = BottomUpDatasetMapper(False, flip_indices=flip, test_short_side=256)
    t = test(dicts[0])
    assert min(t["image"].shape[1:]) == 256 and t["image"].shape[1] % 64 == 0 and t["image"].shape[2] % 64 == 0
    empty = [d for d in dicts if not d["annotations"]]
    if empty:
        assert train(empty[0])["heatmaps"].sum() == 0


def test_dekr_random_affine_is_the_authors_geometry():
    """INPUT.BOTTOMUP.PROTOCOL "dekr": the short side fills the input around the image centre (pixel
    index W / 2 -> S / 2), rotation turns about the input centre, the flip mirrors the input."""
    from d2pose.data.bottomup_mapper import dekr_random_affine

    still = dict(max_rotation=0.0, scale_range=(1.0, 1.0), max_translation=0.0)
    M, flip = dekr_random_affine((640, 480), 512, np.random.default_rng(0), flip_prob=0.0, **still)
    assert not flip
    np.testing.assert_allclose(M[:, :2], np.eye(2) * 512 / 480)
    np.testing.assert_allclose(apply_affine(np.array([320.5, 240.5]), M), [256.5, 256.5])
    Mf, flip = dekr_random_affine((640, 480), 512, np.random.default_rng(0), flip_prob=1.0, **still)
    p = np.array([[10.0, 20.0], [600.0, 400.0]])
    assert flip
    np.testing.assert_allclose(apply_affine(p, Mf)[:, 0], 512 - apply_affine(p, M)[:, 0])
    Mr, _ = dekr_random_affine((640, 480), 512, np.random.default_rng(1), max_rotation=30.0, scale_range=(1.0, 1.0),
                               max_translation=0.0, flip_prob=0.0)
    np.testing.assert_allclose(apply_affine(np.array([320.5, 240.5]), Mr), [256.5, 256.5], atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(Mr[:, :2]), (512 / 480) ** 2)


def test_dekr_targets_follow_the_authors_rules():
    """"dekr" targets: Gaussians on the authors' grid (cell u at input pixel index 4u) mirrored on the
    grid by a flip; the centre is the mean of all labelled keypoints, also those outside the input; a
    person without keypoints gets its box centre (>= 32^2 px) or nothing."""
    flip_indices = get_keypoint_metadata("coco_person").flip_indices
    rng = np.random.default_rng(4)
    person = random_person(rng, 120, 100, size=50)
    person[0, :2] = (130.0, -20.0)  # labelled, above the input
    nobody = np.zeros((17, 3))
    people = np.stack([person, nobody, nobody])
    areas = np.array([5000.0, 3000.0, 900.0])
    boxes = np.array([[0, 0, 1, 1], [180.0, 20.0, 40.0, 60.0], [180.0, 150.0, 30.0, 30.0]])
    gen = BottomUpTargets(256, 4, flip_indices, protocol="dekr")
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    t = gen(people, areas, identity, False, boxes=boxes)
    np.testing.assert_allclose(t["centers"][0], person[:, :2].mean(0))
    np.testing.assert_allclose(t["centers"][1], [180.0 + 20.0 + 0.5, 20.0 + 30.0 + 0.5])
    assert np.isnan(t["centers"][2]).all()
    # the keypoint Gaussian peaks at its cell (input pixel index / 4), cut to its window
    k = 5
    cell = (person[k, :2] - 0.5) / 4
    u, v = np.round(cell).astype(int)
    assert t["heatmaps"][k, v, u] > 0.8 and t["foreground"][v, u] == 1
    assert t["heatmaps"][k, v, int(np.floor(cell[0] - 7)) - 1] == 0
    # the authors' offsets: cell - keypoint (in cells) on the cells [c - 4, c + 4) of the centre cell
    c = np.trunc((t["centers"][0] - 0.5) / 4).astype(int)
    off = -t["offsets"] / 4
    np.testing.assert_allclose(off[2 * k, c[1], c[0]], c[0] - cell[0], rtol=1e-6)
    assert t["offset_weights"][2 * k, c[1], c[0] + 3] > 0 and t["offset_weights"][2 * k, c[1], c[0] + 4] == 0
    assert t["offset_weights"][2 * k, c[1], c[0] - 4] > 0 and t["offset_weights"][2 * k, c[1], c[0] - 5] == 0
    np.testing.assert_allclose(t["offset_weights"].max(), 1 / np.sqrt(5000.0), rtol=1e-6)
    # a flipped input: the same targets mirrored on the grid (x -> w - 1 - x), left / right swapped
    mirror = np.array([[-1.0, 0.0, 256.0], [0.0, 1.0, 0.0]])
    tf = gen(people, areas, mirror, True, boxes=boxes)
    np.testing.assert_allclose(tf["heatmaps"], t["heatmaps"][flip_indices + [17], :, ::-1], atol=1e-6)
