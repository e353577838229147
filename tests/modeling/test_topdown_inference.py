"""Whole-image inference of the top-down models: the person detector, Detectron2's DefaultPredictor,
coordinate frames, bad inputs, and an oracle run of the full inference path on real data."""
import glob
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultPredictor

import d2pose  # noqa: F401
from d2pose.config import get_d2pose_cfg
from d2pose.data import prepare_image, read_image, register_keypoint_dataset
from d2pose.data.topdown import TopDownDatasetMapper
from d2pose.data.transforms.affine import apply_affine, invert_affine
from d2pose.evaluation import KeypointEvaluator
from d2pose.modeling import build_model
from d2pose.modeling.person_detector import PersonDetector, build_person_detector

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DETECTOR = os.path.join(ROOT, "configs/Detectors/synthetic_person_faster_rcnn.yaml")
METHODS = {
    "rle": "projects/RLE/configs/synthetic_rle_topdown.yaml",
    "poseur": "projects/Poseur/configs/synthetic_poseur_topdown.yaml",
    "transpose": "projects/TransPose/configs/synthetic_transpose_r.yaml",
}


def _cfg(config, *opts):
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(os.path.join(ROOT, config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "TEST.AUTOCAST_DTYPE", "float32"] + list(opts))
    return cfg


def _coco_image(shared_data):
    return sorted(glob.glob(os.path.join(shared_data, "coco/images/*.jpg")))[0]


class _FixedDetector(torch.nn.Module):
    """A stand-in Detectron2 detector returning fixed boxes of two classes (in its input's
    (height, width) frame, as Detectron2's detectors do)."""

    def __init__(self, boxes, scores, classes):
        super().__init__()
        self.boxes, self.scores, self.classes = boxes, scores, classes
        self.seen = []

    def forward(self, inputs):
        from detectron2.structures import Boxes, Instances

        out = []
        for x in inputs:
            self.seen.append((tuple(x["image"].shape), x["height"], x["width"]))
            inst = Instances((x["height"], x["width"]))
            inst.pred_boxes = Boxes(torch.tensor(self.boxes, dtype=torch.float32).reshape(-1, 4))
            inst.scores = torch.tensor(self.scores, dtype=torch.float32)
            inst.pred_classes = torch.tensor(self.classes, dtype=torch.long)
            out.append({"instances": inst})
        return out


def test_person_detector_selects_people():
    det = _FixedDetector([[0, 0, 10, 20], [1, 1, 11, 21], [5, 5, 9, 9], [2, 2, 8, 30]], [0.9, 0.8, 0.99, 0.01],
                         [0, 0, 1, 0])
    pd = PersonDetector(det, input_format="BGR", min_size=64, max_size=128, class_index=0, score_thresh=0.05,
                        nms_thresh=0.5, max_people=5)
    image = torch.zeros(3, 40, 30)
    (boxes, scores), = pd([image], "RGB")
    # class 1 and the low score dropped, the second box suppressed by the extra NMS (IoU 0.68)
    assert scores.tolist() == pytest.approx([0.9]) and boxes.tolist() == [[0, 0, 10, 20]]
    assert det.seen[0] == ((3, 85, 64), 40, 30)  # resized for the detector, results in the given frame
    pd.max_people, pd.nms_thresh = 1, 1.0
    (boxes, scores), = pd([image], "RGB")
    assert len(boxes) == 1
    pd.train()
    assert not pd.training and not pd.model.training


def test_detector_config_errors():
    cfg = _cfg(METHODS["rle"], "MODEL.TOPDOWN.DETECTOR.CONFIG_FILE", "nope/none.yaml")
    with pytest.raises(FileNotFoundError, match="MODEL.TOPDOWN.DETECTOR.CONFIG_FILE 'nope/none.yaml'"):
        build_person_detector(cfg)
    cfg = _cfg(METHODS["rle"], "MODEL.TOPDOWN.DETECTOR.CONFIG_FILE", DETECTOR,
               "MODEL.TOPDOWN.DETECTOR.WEIGHTS", "/no/such/weights.pth")
    with pytest.raises(FileNotFoundError, match="MODEL.TOPDOWN.DETECTOR.WEIGHTS '/no/such/weights.pth'"):
        build_person_detector(cfg)
    cfg = _cfg(METHODS["rle"], "MODEL.TOPDOWN.DETECTOR.WEIGHTS", "x.pth")
    with pytest.raises(ValueError, match="CONFIG_FILE is empty"):
        build_person_detector(cfg)
    cfg = _cfg(METHODS["rle"], "MODEL.TOPDOWN.DETECTOR.CONFIG_FILE", os.path.join(ROOT, METHODS["rle"]))
    with pytest.raises(ValueError, match="not a detector"):
        build_person_detector(cfg)


def test_model_zoo_names_resolve():
    from d2pose.modeling.person_detector import resolve_detector_config, resolve_detector_weights

    name = "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"
    try:
        path = resolve_detector_config(name)
    except FileNotFoundError:
        pytest.skip("detectron2's model-zoo config files are not installed (the PyPI redistribution)")
    assert path.endswith("faster_rcnn_R_50_FPN_3x.yaml") and os.path.isfile(path)
    assert resolve_detector_weights(name, name).startswith("https://")


def test_score_thresh_reaches_a_retinanet_detector():
    """MODEL.TOPDOWN.DETECTOR.SCORE_THRESH lowers a RetinaNet's own test threshold (not only the ROI
    heads' key, which a RetinaNet does not read), and the boxes returned are filtered by it."""
    from detectron2.config import get_cfg
    from d2pose.modeling.person_detector import resolve_detector_config

    name = "COCO-Detection/retinanet_R_50_FPN_1x.yaml"
    try:
        resolve_detector_config(name)
    except FileNotFoundError:
        pytest.skip("detectron2's model-zoo config files are not installed (the PyPI redistribution)")
    cfg = _cfg(METHODS["rle"], "MODEL.TOPDOWN.DETECTOR.CONFIG_FILE", name, "MODEL.TOPDOWN.DETECTOR.SCORE_THRESH", "0.01",
               "MODEL.TOPDOWN.DETECTOR.MAX_PEOPLE", "7")
    detector = build_person_detector(cfg)  # no weights: random, with a warning
    assert type(detector.model).__name__ == "RetinaNet"
    assert detector.model.test_score_thresh == pytest.approx(0.01)  # the config file says 0.05
    assert detector.score_thresh == pytest.approx(0.01) and detector.max_people == 7
    # a threshold above the detector's own leaves it: PersonDetector drops the boxes below
    from d2pose.modeling.person_detector import lower_score_thresholds

    det_cfg = get_cfg()
    det_cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.05
    lower_score_thresholds(det_cfg, 0.5)
    assert det_cfg.MODEL.RETINANET.SCORE_THRESH_TEST == 0.05 and det_cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.05
    lower_score_thresholds(det_cfg, 0.02)
    assert det_cfg.MODEL.RETINANET.SCORE_THRESH_TEST == 0.02 and det_cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.02
    det_cfg.MODEL.FCOS = type(det_cfg)({"INFERENCE_TH_TEST": 0.05})  # AdelaiDet's key, where present
    lower_score_thresholds(det_cfg, 0.03)
    assert det_cfg.MODEL.FCOS.INFERENCE_TH_TEST == 0.03


def test_predictor_with_detector(shared_data, tmp_path):
    """A tiny detector + pose config without weights through Detectron2's own DefaultPredictor: a
    real image, a synthetic one and one without people."""
    cfg = _cfg(METHODS["rle"], "MODEL.TOPDOWN.DETECTOR.CONFIG_FILE", DETECTOR, "MODEL.TOPDOWN.DETECTOR.SCORE_THRESH",
               "0.0", "MODEL.TOPDOWN.DETECTOR.MAX_PEOPLE", "5")
    predictor = DefaultPredictor(cfg)
    model = predictor.model
    assert not any(k.startswith("person_detector.") for k in model.state_dict())
    torch.save(model.state_dict(), tmp_path / "pose.pth")  # pose checkpoints load back strictly
    model.load_state_dict(torch.load(tmp_path / "pose.pth", weights_only=True))
    synthetic = np.full((200, 160, 3), 90, np.uint8)
    cv2.rectangle(synthetic, (50, 30), (100, 180), (30, 160, 220), -1)
    for image in (cv2.imread(_coco_image(shared_data)), synthetic):
        inst = predictor(image)["instances"]
        H, W = image.shape[:2]
        R = len(inst)
        assert 0 < R <= 5 and inst.image_size == (H, W)
        assert inst.pred_keypoints.shape == (R, 17, 3) and inst.pred_keypoints.dtype == torch.float32
        assert inst.pred_keypoint_sigmas.shape == (R, 17, 2)
        assert inst.scores.shape == (R,) and inst.pred_boxes.tensor.shape == (R, 4)
        assert inst.detector_scores.shape == (R,)  # what drawings label "person 97%"
        b = inst.pred_boxes.tensor
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= W).all() and (b[:, 3] <= H).all()
    # given boxes: their scores are detector scores when given; the whole image's is none
    x = {"image": torch.as_tensor(synthetic.transpose(2, 0, 1).copy()), "person_boxes": [[40, 20, 110, 190]]}
    with torch.no_grad():
        assert not model([x])[0]["instances"].has("detector_scores")
        inst = model([dict(x, person_scores=[0.7])])[0]["instances"]
    assert inst.detector_scores.tolist() == pytest.approx([0.7])
    # no person: the detector finds nothing above an impossible threshold -> empty Instances
    model.person_detector.score_thresh = 2.0
    inst = predictor(synthetic)["instances"]
    assert len(inst) == 0 and inst.pred_keypoints.shape == (0, 17, 3) and inst.image_size == (200, 160)


def _frame_model(cfg):
    """A model whose keypoints are fixed points of the crop (so the image frame is checkable)."""
    model = build_model(cfg).eval()
    return model


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("size", [(425, 640), (1, 1), (300, 120), (90, 260)])
def test_predictor_matches_direct_call(method, size, shared_data):
    """DefaultPredictor (resize on and off) and a direct model call on the same person box agree in
    the input image's frame."""
    H, W = size
    image = cv2.resize(cv2.imread(_coco_image(shared_data)), (W, H), interpolation=cv2.INTER_AREA)
    cfg = _cfg(METHODS[method])
    predictor = DefaultPredictor(cfg)
    model = predictor.model
    inst = predictor(image)["instances"]
    rgb = torch.as_tensor(np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1)).astype(np.float32))
    with torch.no_grad():
        direct = model([{"image": rgb, "person_boxes": [[0.0, 0.0, W, H]]}])[0]["instances"]
    assert inst.image_size == (H, W) == direct.image_size
    torch.testing.assert_close(inst.pred_keypoints, direct.pred_keypoints, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(inst.pred_boxes.tensor, torch.tensor([[0.0, 0.0, W, H]]))
    # Detectron2's default resize (short side 800) before the model: the crop of the whole image
    # covers the same content, so with a model that predicts fixed crop points the keypoints land
    # on the same image points (up to the resize's rounding of the long side: x and y scale factors
    # differ by < 0.1%, which moves the aspect-fitted crop by a fraction of a pixel)
    model.head.predict = _fixed_points(model)
    reference = predictor(image)["instances"].pred_keypoints
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 800, 1333
    resized = DefaultPredictor(cfg)
    resized.model.head.predict = _fixed_points(resized.model)
    inst = resized(image)["instances"]
    assert inst.image_size == (H, W)
    torch.testing.assert_close(inst.pred_keypoints[..., :2], reference[..., :2], rtol=0.0, atol=1e-3 * max(H, W) + 1e-3)
    # person boxes given with a resized input are in the output (height, width) frame
    with torch.no_grad():
        big = torch.nn.functional.interpolate(rgb[None], scale_factor=2.0, mode="bilinear")[0]
        given = resized.model([{"image": big, "height": H, "width": W,
                                "person_boxes": [[0.0, 0.0, W, H]]}])[0]["instances"]
    torch.testing.assert_close(given.pred_boxes.tensor, torch.tensor([[0.0, 0.0, W, H]]))
    torch.testing.assert_close(given.pred_keypoints[..., :2], reference[..., :2], rtol=1e-4, atol=1e-3)


def _fixed_points(model):
    w, h = model.input_size
    K = model.head.num_keypoints
    grid = torch.stack([torch.linspace(0.1, 0.9, K) * w, torch.linspace(0.9, 0.1, K) * h], -1)

    def predict(outputs):
        R = next(iter(outputs.values())).shape[0]
        return grid.expand(R, K, 2).clone(), torch.ones(R, K), {}

    return predict


def test_bad_inputs_are_named():
    cfg = _cfg(METHODS["rle"])
    model = build_model(cfg).eval()
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"\(3, H, W\) tensor .*got shape \(4, 10, 10\)"):
            model([{"image": torch.zeros(4, 10, 10)}])
        with pytest.raises(ValueError, match=r"got shape \(10, 10\)"):
            model([{"image": torch.zeros(10, 10)}])
        with pytest.raises(ValueError, match="the image is empty"):
            model([{"image": torch.zeros(3, 0, 0)}])
        with pytest.raises(ValueError, match="2 person_boxes but 1 person_scores"):
            model([{"image": torch.zeros(3, 8, 8), "person_boxes": [[0, 0, 1, 1]] * 2, "person_scores": [1.0]}])
        out = model([{"image": torch.zeros(3, 8, 8), "person_boxes": np.zeros((0, 4))}])[0]["instances"]
        assert len(out) == 0 and out.image_size == (8, 8)
        assert model([]) == []
    predictor = DefaultPredictor(cfg)
    for array, shape in ((np.zeros((7, 9), np.uint8), (7, 9)), (np.zeros((7, 9, 4), np.uint8), (7, 9)),
                         (np.ones((1, 1, 1), np.float32), (1, 1))):
        inst = predictor(prepare_image(array))["instances"]
        assert inst.image_size == shape and len(inst) == 1
        assert (inst.pred_keypoints[..., 0] <= shape[1] * 1.3).all()
    with pytest.raises(ValueError, match="the image is empty"):
        prepare_image(np.zeros((0, 0, 3), np.uint8))


def test_prepare_and_read_image(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = prepare_image(gray)
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8 and (out[..., 1] == gray).all()
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 3] = 255
    out = prepare_image(rgba, alpha_background=10, input_order="RGB")
    assert out[0, 0].tolist() == [0, 0, 200] and out[1, 1].tolist() == [10, 10, 10]
    assert prepare_image(np.full((2, 2), 0.5)).max() == 128
    assert prepare_image(np.full((2, 2, 3), 65535, np.uint16)).max() == 255
    with pytest.raises(ValueError, match=r"got shape \(2, 2, 2\)"):
        prepare_image(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        prepare_image(np.full((2, 2), np.nan))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg: cannot be read"):
        read_image(str(bad))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(str(tmp_path / "missing.png"))
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    assert read_image(str(tmp_path / "g.png")).shape == (3, 4, 3)


class _Oracle(torch.nn.Module):
    """A head that outputs the encoded ground-truth targets of the crops it is given (the mirrored
    crop's on the flip test's second pass), with the real head's decoding and flip fusion."""

    def __init__(self, head, targets, flipped_targets):
        super().__init__()
        self.real = head
        self.queue = [targets, flipped_targets]
        self.num_keypoints = head.num_keypoints

    def forward(self, features):
        return self.queue.pop(0)

    def predict(self, outputs):
        return self.real.predict(outputs)

    def flip_fuse(self, outputs, flipped, flip_indices):
        return self.real.flip_fuse(outputs, flipped, flip_indices)


def _encode(codec, crop_kps, regression):
    targets = [codec.encode(k[:, :2], k[:, 2]) for k in crop_kps]
    t = torch.as_tensor(np.stack([t for t, _ in targets])).float()
    if regression:
        return {"coords": t, "sigma": torch.full(t.shape, 0.01)}
    return {"heatmaps": t}


@pytest.mark.parametrize("method,flip", [("rle", True), ("rle", False), ("transpose", True), ("transpose", False)])
def test_oracle_inference_path(method, flip, shared_data, tmp_path):
    """Encoded ground truth through box -> crop -> decode -> image coordinates scores AP >= 99 on
    the COCO sample with ground-truth boxes (regression and DARK heatmap decoding, flip test on/off)."""
    name = "test_oracle_coco"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_keypoint_dataset(name, os.path.join(shared_data, "coco/annotations/test_coco.json"),
                              os.path.join(shared_data, "coco/images"))
    config = METHODS[method]
    opts = ["DATASETS.TEST", (name,), "DATASETS.TRAIN", (name,), "TEST.KEYPOINT_FLIP", flip,
            "INPUT.TOPDOWN.INPUT_SIZE", (192, 256), "TEST.OKS_NMS_THRESH", 0.0]
    if method == "rle":  # the GAP + FC head: plain regression decoding
        config = "projects/RLE/configs/synthetic_rle_gap_topdown.yaml"
    cfg = _cfg(config)
    cfg.merge_from_list(opts)
    model = build_model(cfg).eval()
    mapper = TopDownDatasetMapper(cfg, is_train=False)
    codec, flip_indices = mapper.codec, MetadataCatalog.get(name).keypoint_flip_indices
    evaluator = KeypointEvaluator(name, output_dir=str(tmp_path))
    evaluator.reset()
    W, H = cfg.INPUT.TOPDOWN.INPUT_SIZE
    for record in DatasetCatalog.get(name):
        x = mapper(record)
        anns = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
        kps = [np.asarray(a.get("keypoints", np.zeros(51)), np.float64).reshape(-1, 3) for a in anns]
        crop_kps, mirrored = [], []
        for k, inv in zip(kps, x["crop_matrices_inv"].numpy()):
            M = invert_affine(inv)
            c = k.copy()
            c[:, :2] = apply_affine(k[:, :2], M)
            c[:, 2] = (k[:, 2] > 0).astype(np.float64)
            # unlabelled keypoints (stored at 0, 0): the crop centre, as a model would guess; people
            # without labels are then matched to their (ignored) ground truth, not counted as false
            c[c[:, 2] == 0, :2] = (W / 2.0, H / 2.0)
            crop_kps.append(c)
            m = c.copy()
            m[:, 0] = W - m[:, 0]
            mirrored.append(m[flip_indices])
        regression = method == "rle"
        real = model.head
        model.head = _Oracle(real, _encode(codec, crop_kps, regression), _encode(codec, mirrored, regression))
        with torch.no_grad():
            out = model.inference([x])
        model.head = real
        evaluator.process([record], out)
    ap = evaluator.evaluate()["keypoints"]["AP"]
    print(f"oracle {method} flip={flip}: AP {ap:.2f}")
    assert ap >= 99.0, ap
