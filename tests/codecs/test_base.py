"""The codec contract (d2pose.codecs.base): an abstract base, every registered codec subclasses it and
accepts its signature, and each codec's encode -> decode recovers the keypoints within its family's
tolerance; the registry builds the top-down codecs from the config."""
import inspect

import numpy as np
import pytest
import torch

import d2pose  # noqa: F401  (registers every codec, the method packages' too)
from d2pose.codecs import (CODEC_REGISTRY, BoxRelativeCoords, CenterOffsetCodec, KeypointCodec, MSRAHeatmap,
                           RegressionCoords, UDPHeatmap, build_codec)

BASE_KEYWORDS = ("boxes", "areas", "source_areas", "input_size")


def test_the_base_is_abstract():
    with pytest.raises(TypeError, match="abstract"):
        KeypointCodec()

    class EncodeOnly(KeypointCodec):
        def encode(self, keypoints, visible, *, boxes=None, areas=None, source_areas=None, input_size=None):
            return keypoints, visible

    with pytest.raises(TypeError, match="abstract"):
        EncodeOnly()


def test_register_codec_refuses_a_class_outside_the_contract():
    from d2pose.codecs import register_codec

    class NotACodec:
        name = "not_a_codec"

    with pytest.raises(TypeError, match="KeypointCodec"):
        register_codec(NotACodec)


@pytest.mark.parametrize("name", sorted(name for name, _ in CODEC_REGISTRY))
def test_every_registered_codec_keeps_the_base_signature(name):
    cls = CODEC_REGISTRY.get(name)
    assert issubclass(cls, KeypointCodec) and cls.name == name and cls.outputs
    encode = inspect.signature(cls.encode).parameters
    assert list(encode)[:3] == ["self", "keypoints", "visible"]
    for key in BASE_KEYWORDS:
        assert encode[key].kind is inspect.Parameter.KEYWORD_ONLY and encode[key].default is None, (name, key)
    required = [p for p in list(encode.values())[3:] if p.default is inspect.Parameter.empty]
    assert not required, (name, required)
    decode = inspect.signature(cls.decode).parameters
    assert len(decode) >= 2 and decode["boxes"].kind is inspect.Parameter.KEYWORD_ONLY and decode["boxes"].default is None


def _crop_keypoints(rng, W=192, H=256, K=17):
    # DARK's 11-cell blur pads with zeros: keypoints 6 cells (24 px) inside the crop decode to 0.05 px
    return np.stack([rng.uniform(24, W - 24, K), rng.uniform(24, H - 24, K)], -1)


@pytest.mark.parametrize("codec,tol", [
    (MSRAHeatmap((192, 256), (48, 64), sigma=2.0), 0.05),
    (UDPHeatmap((192, 256), (48, 64), sigma=2.0), 0.05),
    (RegressionCoords((192, 256)), 1e-4),
    (RegressionCoords((192, 256), centered=True, pixel_index=True), 1e-4),
])
def test_top_down_codecs_round_trip(codec, tol):
    kps = _crop_keypoints(np.random.default_rng(0))
    target, weight = codec.encode(kps, np.full(len(kps), 2))
    assert weight.shape == (len(kps),) and weight.all()
    decoded = codec.decode(torch.as_tensor(target, dtype=torch.float64)[None])
    coords = decoded[0] if isinstance(decoded, tuple) else decoded
    np.testing.assert_allclose(coords[0].numpy(), kps, atol=tol)


def test_box_relative_round_trip():
    rng = np.random.default_rng(1)
    boxes = torch.tensor([[10.0, 20.0, 110.0, 220.0], [0.0, 0.0, 50.0, 40.0]], dtype=torch.float64)
    rel = torch.as_tensor(rng.uniform(0, 1, (2, 17, 2)))
    kps = boxes[:, None, :2] + rel * (boxes[:, None, 2:] - boxes[:, None, :2])
    target, weight = BoxRelativeCoords().encode(kps, torch.full((2, 17), 2.0), boxes=boxes)
    assert weight.all()
    torch.testing.assert_close(BoxRelativeCoords().decode(target, boxes=boxes), kps)


def test_center_offset_round_trip():
    # centres (40.2, 50.2) and (100.7, 103.3): off the cell borders, one peak each
    kps = np.array([[[40.5, 30.5], [60.0, 70.0], [20.0, 50.0]], [[100.0, 90.0], [110.0, 120.0], [92.0, 100.0]]])
    codec = CenterOffsetCodec((128, 128), stride=4, min_area=0)
    target, weight = codec.encode(kps, np.full((2, 3), 2), areas=np.array([900.0, 900.0]))
    outputs = dict(center_heatmap=torch.as_tensor(target["heatmaps"][-1])[None, None],
                   offsets=torch.as_tensor(target["offsets"])[None])
    poses, centers = codec.decode(outputs)
    found = centers[0, :, 2] > 0.9
    assert int(found.sum()) == 2
    for pose, person in zip(sorted(poses[0][found].double().tolist()), kps):
        np.testing.assert_allclose(pose, person, atol=1e-4)


def test_codec_registry_builds_every_codec_from_the_config():
    from d2pose.config import get_d2pose_cfg

    assert {"msra", "udp", "regression", "box_relative", "center_offset"} <= {name for name, _ in CODEC_REGISTRY}
    cfg = get_d2pose_cfg()
    for name, cls in (("msra", MSRAHeatmap), ("udp", UDPHeatmap), ("regression", RegressionCoords)):
        cfg.INPUT.TOPDOWN.CODEC = name
        codec = build_codec(cfg)
        assert type(codec) is cls and codec.name == name
    cfg.TEST.KEYPOINT_SCORE = "poseur"
    assert BoxRelativeCoords.from_config(cfg).score_form == "poseur"
    assert CenterOffsetCodec.from_config(cfg).stride == cfg.INPUT.BOTTOMUP.STRIDE
    cfg.INPUT.TOPDOWN.CODEC = "simcc"
    with pytest.raises(ValueError, match="INPUT.TOPDOWN.CODEC"):
        build_codec(cfg)
    cfg.INPUT.TOPDOWN.CODEC = "regression"
    cfg.TEST.KEYPOINT_SCORE = "max"
    with pytest.raises(ValueError, match="TEST.KEYPOINT_SCORE"):
        build_codec(cfg)


def test_a_head_refuses_a_codec_it_cannot_decode():
    from d2pose.config import get_d2pose_cfg
    from d2pose.modeling import build_model

    cfg = get_d2pose_cfg()
    cfg.merge_from_file("projects/RLE/configs/synthetic_rle_topdown.yaml")
    cfg.INPUT.TOPDOWN.CODEC = "msra"
    with pytest.raises(ValueError, match=r"RLEIntegralHead.*INPUT.TOPDOWN.CODEC 'regression'.*'msra'"):
        build_model(cfg)
    cfg.INPUT.TOPDOWN.CODEC = "regression"
    cfg.INPUT.PIPELINE = "bottomup"
    with pytest.raises(ValueError, match="INPUT.PIPELINE must be 'topdown'"):
        build_model(cfg)
