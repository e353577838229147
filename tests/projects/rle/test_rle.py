"""Tests of the top-down meta-architecture with the RLE head, the RLE ROI keypoint head, and the
R-50 model's size (paper: 23.6M parameters, 4.0 GFLOPs at 256x192)."""
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, Keypoints

from d2pose.config import get_d2pose_cfg
from d2pose.codecs import BoxRelativeCoords
from d2pose.modeling.integral import soft_argmax
from d2pose.modeling.roi_regression import ROI_CODEC, roi_integral_coords, sample_train_rois
from d2pose_rle import RLEKeypointHead

box_relative, from_box_relative = BoxRelativeCoords.to_box, ROI_CODEC.decode


def crop_soft_argmax(logits, stride, codec):
    return soft_argmax(logits, codec, stride)


def roi_soft_argmax(logits):
    return soft_argmax(logits, ROI_CODEC)


def _cfg(path, **opts):
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    for k, v in opts.items():
        node = cfg
        *parents, leaf = k.split(".")
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, v)
    return cfg


def _train_sample(K=17, size=(96, 128)):
    W, H = size
    kps = torch.zeros(K, 3)
    kps[:, 0] = torch.linspace(10, W - 10, K)
    kps[:, 1] = torch.linspace(10, H - 10, K)
    kps[:, 2] = 2
    return dict(image=torch.randint(0, 255, (3, H, W), dtype=torch.uint8), keypoints=kps,
                target=kps[:, :2] / torch.tensor([W, H]), target_weight=torch.ones(K), image_id=0)


@pytest.mark.parametrize("config", ["projects/RLE/configs/synthetic_rle_topdown.yaml",
                                    "projects/RLE/configs/synthetic_rle_gap_topdown.yaml"])
def test_synthetic_topdown_train_and_inference_steps(config):
    cfg = _cfg(config)
    W, H = cfg.INPUT.TOPDOWN.INPUT_SIZE
    model = build_model(cfg)
    model.train()
    losses = model([_train_sample(size=(W, H)), _train_sample(size=(W, H))])
    assert set(losses) == {"loss_rle"} and torch.isfinite(losses["loss_rle"])
    sum(losses.values()).backward()
    model.eval()
    crops = torch.randint(0, 255, (2, 3, H, W), dtype=torch.uint8)
    inv = torch.tensor([[[2.0, 0, 10], [0, 2.0, 20]]] * 2, dtype=torch.float64)
    with torch.no_grad():
        out = model([
            dict(image=crops, crop_matrices_inv=inv, boxes=torch.tensor([[10.0, 20, 200, 276]] * 2),
                 box_scores=torch.tensor([0.9, 0.5]), image_id=1, height=400, width=400),
            dict(image=torch.zeros(0, 3, H, W, dtype=torch.uint8), crop_matrices_inv=torch.zeros(0, 2, 3),
                 boxes=torch.zeros(0, 4), box_scores=torch.zeros(0), image_id=2, height=300, width=300),  # no people
            dict(image=torch.randint(0, 255, (3, 240, 320), dtype=torch.uint8)),  # DefaultPredictor style
        ])
    inst = out[0]["instances"]
    assert inst.pred_keypoints.shape == (2, 17, 3) and inst.pred_keypoint_sigmas.shape == (2, 17, 2)
    # crop coordinates mapped through the inverse crop matrices
    assert (inst.pred_keypoints[..., 0] >= 10).all() and (inst.pred_keypoints[..., 0] <= 10 + 2 * W).all()
    assert len(out[1]["instances"]) == 0 and out[1]["instances"].pred_keypoints.shape == (0, 17, 3)
    assert len(out[2]["instances"]) == 1 and out[2]["instances"].image_size == (240, 320)


def test_flip_fuse_of_rle_head_is_exact_for_symmetric_outputs():
    cfg = _cfg("projects/RLE/configs/synthetic_rle_topdown.yaml")
    head = build_model(cfg).head
    flip = list(range(17))
    coords = torch.rand(3, 17, 2)
    sigma = torch.rand(3, 17, 2)
    mirrored = dict(coords=torch.stack([1 - coords[..., 0], coords[..., 1]], -1), sigma=sigma)
    fused = head.flip_fuse(dict(coords=coords, sigma=sigma), mirrored, flip)
    torch.testing.assert_close(fused["coords"], coords)


def test_sigma_weighted_flip_fusion():
    from d2pose.modeling.rle_output import fuse_flip_views
    c, cf = torch.tensor([[[0.2, 0.4]]]), torch.tensor([[[0.5, 0.1]]])
    s, sf = torch.tensor([[[0.1, 0.3]]]), torch.tensor([[[0.2, 0.1]]])
    coords, sigma = fuse_flip_views(c, s, cf, sf, "sigma")
    # x: weights 1/0.01 = 100 and 1/0.04 = 25; y: 1/0.09 and 1/0.01 = 100
    expect_x = (0.2 * 100 + 0.5 * 25) / 125
    expect_y = (0.4 / 0.09 + 0.1 * 100) / (1 / 0.09 + 100)
    torch.testing.assert_close(coords, torch.tensor([[[expect_x, expect_y]]]))
    torch.testing.assert_close(sigma, (s + sf) / 2)
    # equal sigmas: the plain mean
    torch.testing.assert_close(fuse_flip_views(c, s, cf, s, "sigma")[0], (c + cf) / 2)
    with pytest.raises(ValueError, match="flip fusion"):
        fuse_flip_views(c, s, cf, sf, "median")


def test_flip_fuse_config_key_reaches_both_heads():
    cfg = _cfg("projects/RLE/configs/synthetic_rle_topdown.yaml", **{"TEST.KEYPOINT_FLIP_FUSE": "sigma"})
    head = build_model(cfg).head
    flip = list(range(17))
    coords, sigma = torch.rand(3, 17, 2), torch.rand(3, 17, 2) + 0.05
    mirrored = dict(coords=torch.stack([1 - coords[..., 0], coords[..., 1]], -1), sigma=sigma)
    torch.testing.assert_close(head.flip_fuse(dict(coords=coords, sigma=sigma), mirrored, flip)["coords"], coords)
    sure = dict(coords=torch.stack([1 - coords[..., 0] + 0.1, coords[..., 1]], -1), sigma=sigma / 10)
    fused = head.flip_fuse(dict(coords=coords, sigma=sigma), sure, flip)["coords"]
    torch.testing.assert_close(fused[..., 0], coords[..., 0] - 0.1 * 100 / 101)  # the surer view dominates
    for bad in ("median", "official"):  # "official" is Poseur's alone
        cfg.TEST.KEYPOINT_FLIP_FUSE = bad
        with pytest.raises(ValueError, match="TEST.KEYPOINT_FLIP_FUSE"):
            build_model(cfg)
    pcfg = _cfg("projects/Poseur/configs/synthetic_poseur_topdown.yaml", **{"TEST.KEYPOINT_FLIP_FUSE": "sigma"})
    phead = build_model(pcfg).head
    torch.testing.assert_close(phead.flip_fuse(dict(coords=coords, sigma=sigma), sure, flip)["coords"], fused)
    pcfg.TEST.KEYPOINT_FLIP_FUSE = "median"
    with pytest.raises(ValueError, match="TEST.KEYPOINT_FLIP_FUSE"):
        build_model(pcfg)


@pytest.mark.parametrize("depth,params,gflops", [(50, 23.6e6, 4.0)])
def test_r50_params_and_flops_match_paper(depth, params, gflops):
    from d2pose.modeling.complexity import topdown_complexity

    cfg = _cfg(f"projects/RLE/configs/rle_R_{depth}_256x192_coco.yaml")
    cfg.DATASETS.TRAIN = ("synthetic_pose_val_mini",)
    cfg.DATASETS.TEST = ("synthetic_pose_val_mini",)
    n, flops = topdown_complexity(build_model(cfg))
    assert abs(n - params) / params < 0.03, n
    assert abs(flops - gflops) / gflops < 0.03, flops


@pytest.mark.parametrize("coords", ["fc", "integral", "deconv"])
def test_roi_head_box_relative_round_trip_and_shapes(coords):
    boxes = torch.tensor([[10.0, 20.0, 110.0, 220.0], [0.0, 0.0, 50.0, 50.0]])
    pts = torch.rand(2, 17, 2) * 100
    torch.testing.assert_close(from_box_relative(box_relative(pts, boxes), boxes=boxes), pts)
    cfg = _cfg("projects/RLE/configs/synthetic_rle_rcnn.yaml", **{"MODEL.ROI_REGRESSION.COORDS": coords,
                                                        "MODEL.ROI_REGRESSION.MAX_TRAIN_INSTANCES": 2,
                                                        "MODEL.RLE.INTEGRAL_HEATMAP_WEIGHT": 0.0})
    from detectron2.layers import ShapeSpec

    head = RLEKeypointHead(cfg, ShapeSpec(channels=128, height=14, width=14))
    feats = torch.randn(3, 128, 14, 14)
    inst = Instances((300, 300))
    inst.proposal_boxes = Boxes(torch.tensor([[10.0, 10, 100, 200], [50, 50, 150, 250], [0, 0, 300, 300]]))
    kps = torch.rand(3, 17, 3) * 90 + 10
    kps[..., 2] = 2
    inst.gt_keypoints = Keypoints(kps)
    head.train()
    loss = head(feats, [inst])["loss_keypoint"]
    assert torch.isfinite(loss)
    loss.backward()
    head.eval()
    pred = Instances((300, 300))
    pred.pred_boxes = Boxes(inst.proposal_boxes.tensor.clone())
    out = head(feats, [pred])[0]
    assert out.pred_keypoints.shape == (3, 17, 3)
    # an untrained head predicts near each box's centre
    centres = (pred.pred_boxes.tensor[:, :2] + pred.pred_boxes.tensor[:, 2:]) / 2
    assert torch.allclose(out.pred_keypoints[..., :2].mean(1), centres, atol=2.0)
    empty = Instances((300, 300))
    empty.pred_boxes = Boxes(torch.zeros(0, 4))
    assert head(feats[:0], [empty])[0].pred_keypoints.shape == (0, 17, 3)
    assert (head.heatmap is None) == (coords == "fc")
    assert (head.output.fc_coord is None) == (coords != "fc")


def test_roi_head_heatmap_kl_term():
    """MODEL.RLE.INTEGRAL_HEATMAP_WEIGHT on the integral ROI head: a separate training loss equal to
    heatmap_kl_loss of its logits against the box-relative targets (keypoints outside their box or
    unlabelled carry none), reaching the logit conv; it needs integral coords."""
    from detectron2.layers import ShapeSpec

    from d2pose.modeling.losses import heatmap_kl_loss
    from d2pose.modeling.integral import codec_grid

    torch.manual_seed(0)
    cfg = _cfg("projects/RLE/configs/synthetic_rle_rcnn.yaml", **{"MODEL.ROI_REGRESSION.COORDS": "integral",
                                                        "MODEL.RLE.INTEGRAL_HEATMAP_WEIGHT": 3.0})
    head = RLEKeypointHead(cfg, ShapeSpec(channels=16, height=14, width=14)).train()
    feats = torch.randn(2, 16, 14, 14)
    inst = Instances((300, 300))
    inst.proposal_boxes = Boxes(torch.tensor([[10.0, 10, 100, 200], [50, 50, 150, 250]]))
    kps = torch.rand(2, 17, 3) * 40 + 55  # inside both boxes
    kps[..., 2] = 2
    kps[1, 0, 2] = 0  # unlabelled
    kps[0, 1, 0] = 250.0  # outside its box
    inst.gt_keypoints = Keypoints(kps)
    losses = head(feats, [inst])
    assert set(losses) == {"loss_keypoint", "loss_keypoint_heatmap"}
    _, _, logits = head.layers(feats, return_logits=True)
    target = box_relative(kps[..., :2], inst.proposal_boxes.tensor)
    weight = torch.ones(2, 17)
    weight[1, 0] = weight[0, 1] = 0
    gx, gy = codec_grid(logits, ROI_CODEC)
    want = 3.0 * heatmap_kl_loss(logits, gx, gy, target, weight, cfg.MODEL.RLE.INTEGRAL_HEATMAP_SIGMA)
    torch.testing.assert_close(losses["loss_keypoint_heatmap"], want)
    losses["loss_keypoint_heatmap"].backward()
    assert head.heatmap.conv.weight.grad.abs().sum() > 0
    cfg.MODEL.ROI_REGRESSION.COORDS = "fc"
    with pytest.raises(ValueError, match="MODEL.ROI_REGRESSION.COORDS"):
        RLEKeypointHead(cfg, ShapeSpec(channels=16, height=14, width=14))


def test_roi_soft_argmax_reads_roialign_bin_centres():
    """A peaked logit map at bin (row i, column j) of S decodes to that ROIAlign bin's centre
    ((j + 0.5) / S, (i + 0.5) / S) in box-relative units, hence into the bin's image pixels."""
    S = 14
    logits = torch.full((2, 3, S, S), -1e4)
    cells = [[(3, 10), (0, 0), (13, 13)], [(7, 2), (5, 5), (12, 1)]]
    for r, row in enumerate(cells):
        for k, (i, j) in enumerate(row):
            logits[r, k, i, j] = 0.0
    rel = roi_soft_argmax(logits.to(torch.bfloat16))
    assert rel.dtype == torch.float32
    want = torch.tensor([[[(j + 0.5) / S, (i + 0.5) / S] for i, j in row] for row in cells])
    torch.testing.assert_close(rel, want)
    boxes = torch.tensor([[10.0, 20.0, 38.0, 48.0], [0.0, 0.0, 140.0, 70.0]])
    xy = from_box_relative(rel, boxes=boxes)
    torch.testing.assert_close(xy[0, 0], torch.tensor([10 + 2 * 10.5, 20 + 2 * 3.5]))
    with pytest.raises(ValueError, match="MODEL.ROI_REGRESSION.COORDS"):
        roi_integral_coords(8, 17, "heatmap")


def test_roi_integral_logits_see_the_whole_roi():
    """Each cell's logits are conditioned on the pooled ROI: changing features in one corner moves
    the keypoint maps everywhere (what lets a wrist cell tell left from right by the face)."""
    torch.manual_seed(0)
    branch = roi_integral_coords(8, 3, "integral")
    torch.nn.init.normal_(branch.conv.weight)
    x = torch.rand(1, 8, 14, 14)
    y = x.clone()
    y[..., :2, :2] += 5.0
    logits = lambda t: branch.conv(torch.relu(t + branch.context(t.mean((2, 3)))[:, :, None, None]))  # noqa: E731
    assert (logits(x) - logits(y))[..., 7:, 7:].abs().max() > 1e-3
    assert branch(x, x.mean((2, 3))).shape == (1, 3, 2)


def test_sample_train_rois_keeps_rows_and_instances_together():
    torch.manual_seed(0)
    insts = []
    for n in (5, 1, 0):
        inst = Instances((100, 100))
        inst.proposal_boxes = Boxes(torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 4) + len(insts) * 10)
        insts.append(inst)
    x = torch.cat([i.proposal_boxes.tensor[:, :1] for i in insts])  # each row holds its box's id
    kept, rows = sample_train_rois(insts, cap=2)
    assert [len(k) for k in kept] == [2, 1, 0] and rows.shape == (3,)
    torch.testing.assert_close(x[rows, 0], torch.cat([k.proposal_boxes.tensor[:, 0] for k in kept]))
    assert len(set(kept[0].proposal_boxes.tensor[:, 0].tolist())) == 2


def test_rcnn_config_switches_keypoint_head_by_name():
    cfg = _cfg("projects/RLE/configs/synthetic_rle_rcnn.yaml")
    model = build_model(cfg)
    assert isinstance(model.roi_heads.keypoint_head, RLEKeypointHead)


@pytest.mark.parametrize("key", ["MODEL.TOPDOWN.COORD_CHANNELS", "MODEL.RLE.AUX_HEATMAP_FEATURE",
                                 "MODEL.RLE.INTEGRAL_CONV_DIM", "MODEL.RLE.FLIP_FUSE", "MODEL.RLE.SCORE_FORM",
                                 "MODEL.RLE.ROI_COORDS", "MODEL.RLE.ROI_CONV_DIMS", "SOLVER.FUSED_OPTIMIZER"])
def test_removed_ablation_and_duplicate_keys_are_refused(key):
    """Keys of ablations that measured no gain, and second keys of one choice, are gone: a config that
    still sets them fails to merge, naming the key and its replacement or its removal
    (d2pose.config.renamed.MOVED_KEYS; projects/RLE/README.md lists the replacements)."""
    cfg = get_d2pose_cfg()
    with pytest.raises(KeyError, match=f"Key {key} was renamed to ") as e:
        cfg.merge_from_list([key, "1"])
    assert "d2pose 0.2.0" in str(e.value)


def test_soft_argmax_reference_and_gradcheck():
    from d2pose.modeling.integral import soft_argmax_on_grid as soft_argmax

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    gx, gy = torch.arange(4, dtype=torch.float64) * 2.0 + 1.0, torch.arange(5, dtype=torch.float64) * 3.0 - 1.0
    out = soft_argmax(logits, gx, gy)
    p = torch.softmax(logits.flatten(2), -1).view_as(logits)
    ref_x = (p * gx.view(1, 1, 1, 4)).sum((2, 3))
    ref_y = (p * gy.view(1, 1, 5, 1)).sum((2, 3))
    torch.testing.assert_close(out, torch.stack([ref_x, ref_y], -1), rtol=1e-12, atol=1e-12)
    peaked = torch.full((1, 1, 5, 4), -1e4, dtype=torch.float64)
    peaked[0, 0, 3, 2] = 0.0  # one cell: its coordinates exactly
    assert soft_argmax(peaked, gx, gy)[0, 0].tolist() == [5.0, 8.0]
    assert torch.autograd.gradcheck(lambda t: soft_argmax(t, gx, gy), (logits.requires_grad_(),))
    assert soft_argmax(logits.detach().bfloat16(), gx.float(), gy.float()).dtype == torch.float32


@pytest.mark.parametrize("centered", [False, True])
def test_integral_head_decodes_cell_centres_and_flips_exactly(centered):
    cfg = _cfg("projects/RLE/configs/synthetic_rle_topdown.yaml")
    cfg.INPUT.TOPDOWN.REGRESSION_CENTERED = centered
    W, H = cfg.INPUT.TOPDOWN.INPUT_SIZE
    model = build_model(cfg).eval()
    head = model.head
    s = head.heatmap_stride
    h, w = H // s, W // s
    # a heatmap conv that copies channel k of the feature: put a peak for keypoint k at cell (k % w, k // w)
    K = head.num_keypoints
    with torch.no_grad():
        conv = head.heatmap[-1]
        conv.weight.zero_(); conv.bias.zero_()
        for k in range(K):
            conv.weight[k, k] = 1.0
    feats = torch.full((1, conv.in_channels, h, w), -1e4)
    cells = [(k % w, (k // w) % h) for k in range(K)]
    for k, (j, i) in enumerate(cells):
        feats[0, k, i, j] = 0.0
    pooled = torch.randn(1, head.output.fc_sigma.in_features, 2, 2)
    out = head({head.heatmap_feature: feats, head.in_feature: pooled})
    coords, scores, _ = head.predict(out)
    expected = torch.tensor([[(j + 0.5) * s, (i + 0.5) * s] for j, i in cells])
    torch.testing.assert_close(coords[0], expected)
    assert scores.shape == (1, K) and out["sigma"].shape == (1, K, 2)
    # the mirrored features give the mirrored keypoints: flip fusion restores the original exactly
    mirrored = head({head.heatmap_feature: feats.flip(-1)[:, list(model.flip_indices) + list(range(K, feats.shape[1]))],
                     head.in_feature: pooled})
    fused = head.flip_fuse(out, mirrored, model.flip_indices)
    torch.testing.assert_close(fused["coords"], out["coords"])


def test_integral_head_trains_and_has_no_coordinate_fc():
    cfg = _cfg("projects/RLE/configs/synthetic_rle_topdown.yaml")
    W, H = cfg.INPUT.TOPDOWN.INPUT_SIZE
    model = build_model(cfg).train()
    assert model.head.output.fc_coord is None
    losses = model([_train_sample(size=(W, H)), _train_sample(size=(W, H))])
    assert set(losses) == {"loss_rle"} and torch.isfinite(losses["loss_rle"])
    sum(losses.values()).backward()
    assert model.head.heatmap[-1].weight.grad.abs().sum() > 0
    assert model.head.output.fc_sigma.weight.grad.abs().sum() > 0


def test_integral_head_heatmap_kl_term_is_training_only_and_reads_the_soft_argmax_grid():
    from d2pose.modeling.integral import codec_grid
    from d2pose.modeling.losses import heatmap_kl_loss

    cfg = _cfg("projects/RLE/configs/synthetic_rle_topdown.yaml")
    cfg.MODEL.RLE.INTEGRAL_HEATMAP_WEIGHT = 2.0
    cfg.MODEL.RLE.INTEGRAL_HEATMAP_SIGMA = 0.5
    W, H = cfg.INPUT.TOPDOWN.INPUT_SIZE
    model = build_model(cfg).train()
    head = model.head
    batch = [_train_sample(size=(W, H)), _train_sample(size=(W, H))]
    losses = model(batch)
    assert set(losses) == {"loss_rle", "loss_heatmap_kl"} and losses["loss_heatmap_kl"] > 0
    losses["loss_heatmap_kl"].backward()
    assert head.heatmap[-1].weight.grad.abs().sum() > 0
    assert head.output.fc_sigma.weight.grad is None  # the KL term only reaches the heatmaps
    # the grid the KL term uses is the one the soft-argmax reads: a peak at a cell decodes to its grid point
    logits = torch.full((1, 1, H // head.heatmap_stride, W // head.heatmap_stride), -1e4)
    logits[0, 0, 2, 1] = 0.0
    gx, gy = codec_grid(logits, head.codec, head.heatmap_stride)
    torch.testing.assert_close(crop_soft_argmax(logits, head.heatmap_stride, head.codec)[0, 0],
                               torch.stack([gx[1], gy[2]]))
    target = torch.stack([gx[1], gy[2]]).view(1, 1, 2)
    near = heatmap_kl_loss(logits.clamp_min(-30), gx, gy, target, torch.ones(1, 1), 0.05)
    far = heatmap_kl_loss(logits.clamp_min(-30), gx, gy, target + 0.3, torch.ones(1, 1), 0.05)
    assert near < 1e-3 < far
    # inference: no heatmap output, no change to the prediction path
    model.eval()
    with torch.no_grad():
        out = head({head.heatmap_feature: torch.randn(1, head.heatmap[-1].in_channels, 3, 2),
                    head.in_feature: torch.randn(1, head.output.fc_sigma.in_features, 2, 2)})
    assert "heatmap_logits" not in out
    cfg.MODEL.RLE.INTEGRAL_HEATMAP_SIGMA = 0.0
    with pytest.raises(ValueError, match="MODEL.RLE.INTEGRAL_HEATMAP_SIGMA"):
        build_model(cfg)


def test_crop_size_not_divisible_for_fpn_names_the_key():
    cfg = _cfg("projects/RLE/configs/synthetic_rle_topdown.yaml")
    cfg.INPUT.TOPDOWN.INPUT_SIZE = (72, 96)
    with pytest.raises(ValueError, match=r"INPUT.TOPDOWN.INPUT_SIZE \(72, 96\) must be divisible by 32"):
        build_model(cfg)


def test_channels_last_keeps_detectron2_heatmap_keypoint_head_working():
    """MODEL.CHANNELS_LAST with Detectron2's own heatmap head: its loss views the logits as
    (N K, H W), so d2pose keeps that head in the default layout (it crashed otherwise)."""
    from detectron2.utils.events import EventStorage

    from d2pose.modeling import build_model as d2pose_build_model

    cfg = _cfg("configs/Baselines/synthetic_keypoint_rcnn_heatmap.yaml")
    assert cfg.MODEL.CHANNELS_LAST
    torch.manual_seed(0)
    model = d2pose_build_model(cfg).train()
    inst = Instances((128, 128))
    inst.gt_boxes = Boxes(torch.tensor([[20.0, 10.0, 80.0, 120.0]]))
    inst.gt_classes = torch.zeros(1, dtype=torch.long)
    kps = torch.zeros(1, 17, 3)
    kps[0, :, 0] = torch.linspace(25, 75, 17)
    kps[0, :, 1] = torch.linspace(15, 115, 17)
    kps[0, :, 2] = 2
    inst.gt_keypoints = Keypoints(kps)
    batch = [dict(image=torch.randint(0, 255, (3, 128, 128), dtype=torch.uint8), instances=inst)]
    with EventStorage(0):
        losses = model(batch)
    assert torch.isfinite(losses["loss_keypoint"])
    sum(losses.values()).backward()


@pytest.mark.parametrize("channels_last", [False, True])
def test_crops_reach_the_backbone_in_the_weights_layout(channels_last):
    """Crops cut from an (H, W, 3) image arrive channels-last; the backbone must get its weights'
    layout (a mismatch made every convolution reorder: 32% overhead on a Poseur R-50 crop)."""
    from d2pose.modeling import build_model as d2pose_build_model

    cfg = _cfg("projects/RLE/configs/synthetic_rle_topdown.yaml", **{"MODEL.CHANNELS_LAST": channels_last})
    model = d2pose_build_model(cfg).eval()
    W, H = cfg.INPUT.TOPDOWN.INPUT_SIZE
    crops = torch.randint(0, 255, (2, 3, H, W), dtype=torch.uint8)
    hwc = crops.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # what _crop_inputs returns
    assert hwc.is_contiguous(memory_format=torch.channels_last) and not hwc.is_contiguous()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for x in (crops, hwc):
        assert model._normalize(x).is_contiguous(memory_format=fmt)
    with torch.no_grad():
        a, b = model._predict_crops(crops), model._predict_crops(hwc)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])
