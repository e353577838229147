"""Every shipped config loads with d2pose's keys and builds its model (weights are not loaded); each
method's configs live in projects/<Method>/configs/, their old paths configs/<Method>/ still load
them, and d2pose.model_zoo and the Makefile name each config once."""
import glob
import os
import shutil
import subprocess

import pytest
import torch
from detectron2.modeling import build_model

from d2pose import model_zoo
from d2pose.config import get_d2pose_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("RLE", "Poseur", "TransPose", "LOGOCAP")
# {name as d2pose.model_zoo names it: the file}: configs/<folder>/ (bases, baselines, detectors) and
# projects/<Method>/configs/ ("<Method>/<file>.yaml"); the redirects left in configs/<Method>/ are not configs
SHIPPED = {os.path.relpath(p, os.path.join(ROOT, "configs")): p
           for pattern in ("*.yaml", os.path.join("*", "*.yaml")) for p in glob.glob(os.path.join(ROOT, "configs", pattern))
           if os.path.basename(os.path.dirname(p)) not in METHODS}
SHIPPED.update({f"{m}/{os.path.basename(p)}": p for m in METHODS
                for p in glob.glob(os.path.join(ROOT, "projects", m, "configs", "*.yaml"))})
CONFIGS = sorted(p for p in SHIPPED.values() if not os.path.basename(p).startswith("Base-"))
# the configs that moved from configs/<Method>/ (0.3) keep a redirect there; configs added since live in
# projects/<Method>/configs/ only
MOVED_AT_0_3 = 36
MOVED = sorted(os.path.join(ROOT, "projects", m, "configs", os.path.basename(p))
               for m in METHODS for p in glob.glob(os.path.join(ROOT, "configs", m, "*.yaml")))


def test_there_are_configs_for_each_method():
    names = set(SHIPPED)
    for expected in ["RLE/synthetic_rle_topdown.yaml", "RLE/synthetic_rle_rcnn.yaml",
                     "Poseur/synthetic_poseur_topdown.yaml", "Poseur/synthetic_poseur_rcnn.yaml",
                     "Poseur/poseur_R_50_256x192_coco.yaml", "Poseur/poseur_hrnet_w32_256x192_coco.yaml",
                     "Poseur/poseur_hrnet_w48_384x288_coco.yaml", "Poseur/poseur_mobilenetv2_256x192_coco.yaml",
                     "Poseur/keypoint_rcnn_poseur_R_50_FPN_coco.yaml", "Poseur/keypoint_rcnn_poseur_R_101_FPN_coco.yaml",
                     "TransPose/synthetic_transpose_r.yaml", "TransPose/transpose_r_a3_256x192_coco.yaml",
                     "TransPose/transpose_r_a3star_256x192_coco.yaml", "TransPose/transpose_r_a4_256x192_coco.yaml",
                     "TransPose/transpose_h_s_256x192_coco.yaml", "TransPose/transpose_h_a4_256x192_coco.yaml",
                     "TransPose/transpose_h_a6_256x192_coco.yaml"]:
        assert expected in names
    for method in METHODS:
        assert any(name.startswith(method + "/") for name in names), method


@pytest.mark.parametrize("new", MOVED, ids=[os.path.relpath(p, ROOT) for p in MOVED])
def test_old_path_loads_the_moved_config(new):
    """configs/<Method>/<file>.yaml is a one-line redirect to projects/<Method>/configs/<file>.yaml:
    both paths give the same config."""
    method = os.path.basename(os.path.dirname(os.path.dirname(new)))
    old = os.path.join(ROOT, "configs", method, os.path.basename(new))
    with open(old) as f:
        keys = [line for line in f if line.strip() and not line.startswith("#")]
    assert keys == [f'_BASE_: "../../projects/{method}/configs/{os.path.basename(new)}"\n'], keys
    via_old, via_new = get_d2pose_cfg(), get_d2pose_cfg()
    via_old.merge_from_file(old)
    via_new.merge_from_file(new)
    assert via_old.dump() == via_new.dump()


def test_every_moved_config_keeps_its_old_path():
    assert len(MOVED) == MOVED_AT_0_3, "a redirect in configs/<Method>/ was removed: old paths must keep working"


def test_every_redirect_points_to_a_moved_config():
    for method in METHODS:
        for old in glob.glob(os.path.join(ROOT, "configs", method, "*.yaml")):
            assert os.path.isfile(os.path.join(ROOT, "projects", method, "configs", os.path.basename(old))), old


def test_model_zoo_names_each_config_once_at_its_new_place():
    names = model_zoo.list_configs()
    assert len(names) == len(set(names)) and set(names) == set(SHIPPED)
    for name in names:
        path = model_zoo.get_config_file(name)
        assert os.path.isfile(path) and os.path.basename(path) == os.path.basename(name), (name, path)
        folder = name.split("/")[0]
        expected = f"/projects/{folder}/configs/" if folder in METHODS else "/configs/"
        assert expected in path.replace(os.sep, "/"), (name, path)
        via_zoo, via_file = get_d2pose_cfg(), get_d2pose_cfg()
        via_zoo.merge_from_file(path)
        via_file.merge_from_file(SHIPPED[name])
        assert via_zoo.dump() == via_file.dump(), name


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_benchmark_configs_name_each_config_once():
    """The Makefile's BENCHMARK_CONFIGS: every shipped config except the bases and the detectors, once,
    at its own place (no redirect)."""
    show = "print-benchmark-configs: ; @echo $(BENCHMARK_CONFIGS)"
    out = subprocess.run(["make", "-s", "--no-print-directory", "--eval", show, "print-benchmark-configs"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    listed = out.stdout.split()
    assert len(listed) == len(set(listed))
    expected = {os.path.relpath(p, ROOT) for p in CONFIGS if "/Detectors/" not in p}
    assert set(listed) == expected, set(listed) ^ expected


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, ROOT) for p in CONFIGS])
def test_config_builds_its_model(path):
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    torch.manual_seed(0)
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) > 1e6


def _tiny(cfg):
    """The config at a tiny input size (crops 64x96 / images 128x160), weights not loaded."""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.TIMM.CHECKPOINT = ""
    if cfg.MODEL.META_ARCHITECTURE == "TopDownPoseEstimator":
        cfg.INPUT.TOPDOWN.INPUT_SIZE = (64, 96)
    if cfg.INPUT.PIPELINE == "bottomup":
        cfg.INPUT.BOTTOMUP.INPUT_SIZE = 128
    return cfg


def _bottomup_sample(K, g, size=128, people=2):
    """A training image with the bottom-up targets of `people` random people."""
    import numpy as np

    from d2pose.codecs.center_offset import bottomup_targets

    kps = np.zeros((people, K, 3))
    for p in range(people):
        kps[p, :, :2] = (torch.rand(K, 2, generator=g) * 40 + 20 + 50 * p).numpy()
        kps[p, :, 2] = 2
    areas = np.full(people, 2000.0)
    t = bottomup_targets(kps, areas, (size // 4, size // 4), stride=4)
    return dict(image=torch.randint(0, 255, (3, size, size), dtype=torch.uint8, generator=g),
                heatmaps=torch.as_tensor(t["heatmaps"]), heatmap_weights=torch.ones(K + 1, size // 4, size // 4),
                offsets=torch.as_tensor(t["offsets"]), offset_weights=torch.as_tensor(t["offset_weights"]),
                keypoints=torch.as_tensor(kps, dtype=torch.float32), areas=torch.as_tensor(areas, dtype=torch.float32),
                image_id=0)


def _topdown_sample(cfg, K, W, H, g):
    """A training crop with targets from the config's own codec (coordinates or heatmaps)."""
    from d2pose.codecs import build_codec

    kps = torch.rand(K, 3, generator=g) * torch.tensor([W, H, 0.0]) + torch.tensor([0.0, 0.0, 2.0])
    target, weight = build_codec(cfg).encode(kps[:, :2].double().numpy(), kps[:, 2].numpy())
    return dict(image=torch.randint(0, 255, (3, H, W), dtype=torch.uint8, generator=g), keypoints=kps,
                target=torch.as_tensor(target), target_weight=torch.as_tensor(weight), image_id=0)


def _rcnn_sample(K, g, people=2):
    from detectron2.structures import Boxes, Instances, Keypoints

    inst = Instances((128, 160))
    boxes = torch.tensor([[10.0, 10.0, 70.0, 120.0], [80.0, 20.0, 150.0, 125.0]])[:people]
    inst.gt_boxes = Boxes(boxes)
    inst.gt_classes = torch.zeros(people, dtype=torch.long)
    xy = boxes[:, None, :2] + torch.rand(people, K, 2, generator=g) * (boxes[:, None, 2:] - boxes[:, None, :2])
    inst.gt_keypoints = Keypoints(torch.cat([xy, torch.full((people, K, 1), 2.0)], -1))
    return dict(image=torch.randint(0, 255, (3, 128, 160), dtype=torch.uint8, generator=g), instances=inst,
                height=128, width=160)


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, ROOT) for p in CONFIGS])
def test_config_trains_one_step_and_infers_at_a_tiny_size(path):
    """Each shipped config through Detectron2's own builder: one training step (finite losses that
    reach the parameters) and one inference step on an image with people and one without."""
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(path)
    cfg = _tiny(cfg)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = build_model(cfg)
    if cfg.MODEL.META_ARCHITECTURE == "TopDownPoseEstimator":
        K = model.head.num_keypoints
        W, H = cfg.INPUT.TOPDOWN.INPUT_SIZE
        batch = [_topdown_sample(cfg, K, W, H, g) for _ in range(2)]
        with_people = dict(image=torch.randint(0, 255, (3, 120, 90), dtype=torch.uint8, generator=g),
                           person_boxes=torch.tensor([[10.0, 10.0, 80.0, 110.0]]))
        without = dict(image=torch.zeros(3, 120, 90, dtype=torch.uint8), person_boxes=torch.zeros(0, 4))
    elif cfg.INPUT.PIPELINE == "bottomup":
        K = model.num_keypoints
        batch = [_bottomup_sample(K, g), _bottomup_sample(K, g, people=1)]
        with_people = dict(image=batch[0]["image"], height=128, width=128)
        without = dict(image=torch.zeros(3, 128, 160, dtype=torch.uint8), height=128, width=160)
    else:
        K = cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS
        batch = [_rcnn_sample(K, g), _rcnn_sample(K, g, people=1)]
        with_people = dict(image=batch[0]["image"], height=128, width=160)
        without = dict(image=torch.zeros(3, 128, 160, dtype=torch.uint8), height=128, width=160)
    model.train()
    from detectron2.utils.events import EventStorage

    with EventStorage(0):  # Detectron2's R-CNN training writes to the event storage
        losses = model(batch)
    assert losses and all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    with torch.no_grad():
        found, empty = model([with_people, without])
    inst = found["instances"]
    if cfg.MODEL.META_ARCHITECTURE in ("GeneralizedRCNN", "PoseRCNN") and not cfg.MODEL.KEYPOINT_ON:
        # a person detector (configs/Detectors): boxes and scores, no keypoints
        assert inst.pred_boxes.tensor.shape[1:] == (4,) and torch.isfinite(inst.pred_boxes.tensor).all()
        assert (inst.pred_classes == 0).all() and not inst.has("pred_keypoints")
        assert len(empty["instances"].pred_boxes) <= cfg.TEST.DETECTIONS_PER_IMAGE
        return
    assert inst.pred_keypoints.shape[1:] == (K, 3) and torch.isfinite(inst.pred_keypoints).all()
    if cfg.MODEL.META_ARCHITECTURE == "TopDownPoseEstimator":
        assert len(inst) == 1 and len(empty["instances"]) == 0
    assert empty["instances"].pred_keypoints.shape[1:] == (K, 3)
