"""Tests of the centre + offset codec (d2pose.codecs.center_offset): the targets recover the keypoints
exactly, the small-person rule reads the source areas, per-sample input sizes, the foreground rule."""
import numpy as np
import torch

from d2pose.codecs.center_offset import CenterOffsetCodec, bottomup_targets, heatmap_foreground

from tests.data.samples import random_person


def test_centre_and_offsets_recover_keypoints():
    rng = np.random.default_rng(0)
    people = np.stack([random_person(rng, 100, 120), random_person(rng, 300, 300), random_person(rng, 200, 60, size=3)])
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


def test_codec_encode_is_the_target_function():
    rng = np.random.default_rng(1)
    people = np.stack([random_person(rng, 60, 80), random_person(rng, 150, 100)])
    people[1, :4, 2] = 0
    areas = np.array([4000.0, 5000.0])
    codec = CenterOffsetCodec((256, 192), stride=4)
    target, weight = codec.encode(people[..., :2], people[..., 2], areas=areas, source_areas=np.array([2000.0, 500.0]))
    expected = bottomup_targets(people, areas, (64, 48), stride=4, rule_areas=np.array([2000.0, 500.0]))
    assert target["heatmaps"].shape == (18, 48, 64)
    for key in ("heatmaps", "offsets", "centers"):
        np.testing.assert_array_equal(target[key], expected[key])
    np.testing.assert_array_equal(weight, expected["offset_weights"])
    assert np.isnan(target["centers"][1]).all()  # under 32^2 px in the source image
    # a sample's own input size sets the grid
    target, _ = codec.encode(people[..., :2], people[..., 2], areas=areas, input_size=(128, 160))
    assert target["heatmaps"].shape == (18, 40, 32)


def test_heatmap_foreground_in_numpy_and_torch():
    maps = np.zeros((3, 4, 5), np.float32)
    maps[0, 1, 2] = 0.02
    maps[2, 3, 4] = 0.011  # not above the threshold
    fg = heatmap_foreground(maps)
    assert fg.shape == (4, 5) and fg.sum() == 1 and fg[1, 2]
    fg_t = heatmap_foreground(torch.as_tensor(maps)[None], 1)
    assert fg_t.shape == (1, 4, 5) and torch.equal(fg_t[0], torch.as_tensor(fg))
