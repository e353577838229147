"""Tests of the bottom-up targets: centre + offsets recover the keypoints exactly."""
import numpy as np

from d2pose.data.bottomup import BottomUpTargets, bottomup_targets, random_bottomup_affine, inference_resize_affine
from d2pose.data.metadata import get_keypoint_metadata
from d2pose.data.transforms.affine import apply_affine


def _person(rng, cx, cy, size=60.0, K=17):
    kps = np.zeros((K, 3))
    kps[:, 0] = cx + rng.uniform(-size / 2, size / 2, K)
    kps[:, 1] = cy + rng.uniform(-size, size, K)
    kps[:, 2] = 2
    return kps


def test_centre_and_offsets_recover_keypoints():
    rng = np.random.default_rng(0)
    people = np.stack([_person(rng, 100, 120), _person(rng, 300, 300), _person(rng, 200, 60, size=3)])
    areas = np.array([8000.0, 9000.0, 100.0])  # the last one is too small for a centre
    t = bottomup_targets(people, areas, (128, 128), stride=4)
    assert t["heatmaps"].shape == (18, 128, 128) and t["offsets"].shape == (34, 128, 128)
    assert np.isnan(t["centers"][2]).all()
    for p in range(2):
        c = t["centers"][p]
        np.testing.assert_allclose(c, people[p, :, :2].mean(0))
        # the centre heatmap peaks at the cell of the centre
        u, v = int(round(c[0] / 4 - 0.5)), int(round(c[1] / 4 - 0.5))
        assert t["heatmaps"][17, v, u] > 0.95
        pix = np.array([(u + 0.5) * 4, (v + 0.5) * 4])
        rec = pix + np.stack([t["offsets"][0::2, v, u], t["offsets"][1::2, v, u]], -1)
        np.testing.assert_allclose(rec, people[p, :, :2], atol=1e-4)
        assert t["offset_weights"][0, v, u] == np.float32(1 / np.sqrt(areas[p]))
    # keypoint heatmaps peak at the keypoints (cell convention)
    k = 5
    u, v = (people[0, k, :2] / 4 - 0.5).round().astype(int)
    assert t["heatmaps"][k, v, u] > 0.8


def test_random_affine_and_flip_targets():
    rng = np.random.default_rng(1)
    flip_indices = get_keypoint_metadata("coco_person").flip_indices
    M, flip = random_bottomup_affine((640, 480), 512, np.random.default_rng(3), flip_prob=1.0)
    assert flip and np.linalg.det(M[:, :2]) < 0
    people = _person(rng, 320, 240, size=80)[None]
    targets = BottomUpTargets(512, 4, flip_indices)(people, np.array([10000.0]), M, flip)
    mapped = apply_affine(people[0, :, :2], M)[flip_indices]
    np.testing.assert_allclose(targets["centers"][0], mapped.mean(0), atol=1e-6)


def test_small_person_rule_reads_the_image_area():
    """A person of 40x40 px in the image (area 1600 >= 32^2) keeps its centre when the input
    halves it (400 input px^2); one of 30x30 px (900) has none at any scale."""
    rng = np.random.default_rng(2)
    people = np.stack([_person(rng, 100, 100, size=40), _person(rng, 250, 250, size=40)])
    M = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])
    t = BottomUpTargets(256, 4)(people, np.array([1600.0, 900.0]), M, False)
    assert np.isfinite(t["centers"][0]).all() and np.isnan(t["centers"][1]).all()
    # the offset weights still use the input-frame area: 1 / sqrt(400)
    np.testing.assert_allclose(t["offset_weights"].max(), 1.0 / 20.0, rtol=1e-6)


def test_inference_resize():
    S, (w, h) = inference_resize_affine((640, 427), 512, 64)
    assert h == 512 and w % 64 == 0 and w >= 640 * 512 / 427


def test_mapper_on_coco_mini(shared_data):
    import os

    from detectron2.data import DatasetCatalog

    from d2pose.data import register_keypoint_dataset
    from d2pose.data.bottomup import BottomUpDatasetMapper

    name = "test_bottomup_coco_mini"
    if name not in DatasetCatalog.list():
        register_keypoint_dataset(name, os.path.join(shared_data, "coco_mini/annotations/person_keypoints_train2017.json"),
                                  os.path.join(shared_data, "coco_mini/images/train2017"))
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
