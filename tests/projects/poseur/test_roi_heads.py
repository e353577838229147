"""Poseur's end-to-end Keypoint R-CNN variant: PoseurROIHeads + PoseurKeypointHead."""
import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, Keypoints
from detectron2.utils.events import EventStorage

from d2pose.config import get_d2pose_cfg
from d2pose_poseur import KeypointEncoder, PoseurDecoder, PoseurKeypointHead, PoseurROIHeads


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg():
    cfg = get_d2pose_cfg()
    cfg.merge_from_file("projects/Poseur/configs/synthetic_poseur_rcnn.yaml")
    cfg.MODEL.POSEUR.EMBED_DIM = 32
    cfg.MODEL.POSEUR.NUM_HEADS = 4
    cfg.MODEL.POSEUR.FFN_DIM = 64
    cfg.MODEL.POSEUR.NUM_DECODER_LAYERS = 2
    return cfg


def _maps(N, C, g, size=(64, 96)):
    H, W = size
    return [torch.randn(N, C, H // s, W // s, generator=g) for s in (8, 16, 32)]


def _instances(boxes, size=(64, 96), train=True, g=None):
    inst = Instances(size)
    b = Boxes(torch.tensor(boxes, dtype=torch.float32))
    if train:
        inst.proposal_boxes = b
        kps = torch.rand(len(boxes), 17, 3, generator=g)
        x0, y0, x1, y1 = b.tensor.unbind(1)
        kps[..., 0] = x0[:, None] + kps[..., 0] * (x1 - x0)[:, None]
        kps[..., 1] = y0[:, None] + kps[..., 1] * (y1 - y0)[:, None]
        kps[..., 2] = 2
        inst.gt_keypoints = Keypoints(kps)
    else:
        inst.pred_boxes = b
    return inst


def test_config_switches_to_poseur_heads_by_name():
    model = build_model(_cfg())
    assert isinstance(model.roi_heads, PoseurROIHeads)
    assert isinstance(model.roi_heads.keypoint_head, PoseurKeypointHead)
    assert model.roi_heads.keypoint_memory_strides == [8, 16, 32]


def test_memory_boxes_sample_inside_each_box():
    """Reference points in box-relative units sample the image memory at box coordinates: equal to
    the decoder run on image-normalised references with unit boxes, and to per-ROI expanded memory."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    K, C = 5, 32
    enc = KeypointEncoder(K, C).double()
    dec = PoseurDecoder(2, K, C, 4, 64, 0.0, 2, 2, backend="torch", output_delta=False).double().eval()
    memory = torch.randn(2, 16 * 16 + 8 * 8, C, generator=g, dtype=torch.float64)
    shapes = torch.tensor([[16, 16], [8, 8]])
    starts = torch.tensor([0, 256])
    ref = torch.rand(3, K, 2, generator=g, dtype=torch.float64)
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.3], [0.0, 0.0, 1.0, 1.0], [0.4, 0.5, 0.2, 0.4]], dtype=torch.float64)
    index = torch.tensor([0, 1, 0])
    q, qp = enc(ref)
    out = dec(q, qp, ref, memory, shapes, starts, memory_index=index, memory_boxes=boxes, return_sampling=True)
    # the first layer samples around x0 + x w, y0 + y h
    first = out["sampling_locations"][0]  # (R, Q, M, L, P, 2)
    centre = boxes[:, None, :2] + ref * boxes[:, None, 2:]
    offsets = first - centre[:, :, None, None, None, :]
    assert offsets.abs().max() < 0.6  # the deformable init spreads samples a few cells around the point
    ref_expanded = dec(q, qp, ref, memory[index], shapes, starts, memory_boxes=boxes)
    torch.testing.assert_close(out["coords"], ref_expanded["coords"])


@pytest.mark.parametrize("coarse_coords", ["fc", "integral", "integral+kl", "deconv", "deconv+kl"])
def test_roi_head_train_and_inference(coarse_coords):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    cfg = _cfg()
    kl = coarse_coords.endswith("+kl")
    coarse_coords = coarse_coords.replace("+kl", "")
    cfg.MODEL.ROI_REGRESSION.COORDS = coarse_coords
    cfg.MODEL.RLE.INTEGRAL_HEATMAP_WEIGHT = 1.0 if kl else 0.0
    head = PoseurKeypointHead(cfg, ShapeSpec(channels=128, height=14, width=14))
    assert (head.coarse_heatmap is None) == (head.coarse.fc_coord is not None) == (coarse_coords == "fc")
    maps = _maps(2, 128, g)
    insts = [_instances([[4.0, 4, 40, 60], [50, 10, 90, 62]], g=g), _instances([[10.0, 0, 30, 40]], g=g)]
    rois = torch.randn(3, 128, 14, 14, generator=g)
    head.train()
    losses = head(rois, insts, maps, [8, 16, 32])
    assert set(losses) == {"loss_coarse", "loss_dec_0", "loss_dec_1"} | ({"loss_coarse_heatmap"} if kl else set())
    assert all(torch.isfinite(v) for v in losses.values())
    if kl:  # the KL term alone reaches the integral branch, box-relative targets on the ROI grid
        assert losses["loss_coarse_heatmap"] > 0
        branch = head.coarse_heatmap
        assert torch.autograd.grad(losses["loss_coarse_heatmap"],
                                   branch.conv.weight if coarse_coords == "integral" else branch.score_lowres.weight,
                                   retain_graph=True)[0].abs().sum() > 0
    sum(losses.values()).backward()
    assert head.decoder.layers[0].cross_attn.sampling_offsets.weight.grad.abs().sum() > 0
    coarse = {"integral": lambda: head.coarse_heatmap.conv.weight, "deconv": lambda: head.coarse_heatmap.score_lowres.weight,
              "fc": lambda: head.coarse.fc_coord.linear.weight}[coarse_coords]()
    assert coarse.grad.abs().sum() > 0
    head.eval()
    preds = [_instances([[4.0, 4, 40, 60], [50, 10, 90, 62]], train=False), _instances([], train=False)]
    preds[1].pred_boxes = Boxes(torch.zeros(0, 4))
    with torch.no_grad():
        out = head(rois[:2], preds, maps, [8, 16, 32])
    kp = out[0].pred_keypoints
    assert kp.shape == (2, 17, 3) and out[1].pred_keypoints.shape == (0, 17, 3)
    assert ((kp[..., 2] >= 0) & (kp[..., 2] <= 1)).all()
    # an untrained head predicts near each box's centre
    b = preds[0].pred_boxes.tensor
    torch.testing.assert_close(kp[..., :2].mean(1), (b[:, :2] + b[:, 2:]) / 2, atol=3.0, rtol=0)
    with pytest.raises(TypeError, match="PoseurROIHeads"):
        head(rois[:2], preds)


def test_training_roi_cap_and_empty_batches():
    cfg = _cfg()
    cfg.MODEL.ROI_REGRESSION.MAX_TRAIN_INSTANCES = 2
    model = build_model(cfg)
    rh = model.roi_heads.train()
    g = torch.Generator().manual_seed(1)
    maps = _maps(1, 128, g)
    feats = dict(zip(["p3", "p4", "p5"], maps))
    inst = _instances([[4.0, 4, 40, 60]] * 5, g=g)
    inst.gt_classes = torch.zeros(5, dtype=torch.long)
    seen = {}
    orig = rh.keypoint_head.forward

    def spy(rois, instances, *args):
        seen["n"] = sum(len(x) for x in instances)
        return orig(rois, instances, *args)

    rh.keypoint_head.forward = spy
    with EventStorage(0):  # select_foreground_proposals logs a statistic
        losses = rh._forward_keypoint(feats, [inst])
    assert seen["n"] == 2 and all(torch.isfinite(v) for v in losses.values())
    names = {"loss_coarse", "loss_dec_0", "loss_dec_1"} | ({"loss_coarse_heatmap"} if cfg.MODEL.RLE.INTEGRAL_HEATMAP_WEIGHT > 0 else set())
    assert set(losses) == names
    bg = _instances([[4.0, 4, 40, 60]], g=g)
    bg.gt_classes = torch.ones(1, dtype=torch.long)  # background only: no keypoint ROI
    with EventStorage(0):
        losses = rh._forward_keypoint(feats, [bg])
    # the same loss names as a batch with keypoint ROIs (Detectron2's storage expects stable keys)
    assert set(losses) == names and float(sum(losses.values())) == 0.0


# a person template (x, y in the person's box, 17 COCO keypoints): face, shoulders, elbows, wrists,
# hips, knees, ankles
_TEMPLATE = torch.tensor([[0.5, 0.05], [0.45, 0.04], [0.55, 0.04], [0.4, 0.06], [0.6, 0.06],
                          [0.3, 0.2], [0.7, 0.2], [0.2, 0.35], [0.8, 0.35], [0.15, 0.5], [0.85, 0.5],
                          [0.38, 0.55], [0.62, 0.55], [0.36, 0.75], [0.64, 0.75], [0.35, 0.95], [0.65, 0.95]])
_CUT = 0.7  # the proposal box keeps the top 70% of the person: knees and ankles are outside it


def _truncated_people(n, g, size=96, C=128):
    """n images of one person each: FPN-like maps (strides 4, 8, 16) whose channel k holds a blob at
    keypoint k, pooled ROI features of the box cut to the top 70% of the person, and Instances with
    that box as the proposal and the whole person's keypoints as ground truth."""
    from torchvision.ops import roi_align

    h = torch.rand(n, generator=g) * 30 + 50
    w = 0.5 * h
    x0 = torch.rand(n, generator=g) * (size - w - 2) + 1
    y0 = torch.rand(n, generator=g) * (size - h - 2) + 1
    kps = torch.stack([x0[:, None] + _TEMPLATE[:, 0] * w[:, None], y0[:, None] + _TEMPLATE[:, 1] * h[:, None]], -1)
    maps = []
    for s in (4, 8, 16):
        cells = (torch.arange(size // s, dtype=torch.float32) + 0.5) * s
        d2 = ((cells[None, None, None, :] - kps[..., 0, None, None]) ** 2
              + (cells[None, None, :, None] - kps[..., 1, None, None]) ** 2)  # (n, 17, H, W)
        m = torch.zeros(n, C, size // s, size // s)
        m[:, :17] = torch.exp(-d2 / (2 * (1.5 * s) ** 2)) * 4
        maps.append(m)
    boxes = torch.stack([x0, y0, x0 + w, y0 + _CUT * h], 1)
    rois = roi_align(maps[0], [b[None] for b in boxes], 14, spatial_scale=0.25, aligned=True)
    insts = []
    for i in range(n):
        inst = Instances((size, size))
        inst.proposal_boxes = Boxes(boxes[i:i + 1])
        inst.gt_keypoints = Keypoints(torch.cat([kps[i:i + 1], torch.full((1, 17, 1), 2.0)], -1))
        insts.append(inst)
    return rois, insts, maps, boxes, kps


def _train_truncated(margin, iters=150):
    torch.manual_seed(0)
    cfg = _cfg()
    cfg.MODEL.ROI_REGRESSION.COORDS = "fc"
    cfg.MODEL.ROI_REGRESSION.FRAME_MARGIN = margin
    cfg.MODEL.RLE.INTEGRAL_HEATMAP_WEIGHT = 0.0
    cfg.MODEL.POSEUR.DROPOUT = 0.0
    head = PoseurKeypointHead(cfg, ShapeSpec(channels=128, height=14, width=14)).train()
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(iters):
        rois, insts, maps, _, _ = _truncated_people(8, g)
        loss = sum(head(rois, insts, maps, [4, 8, 16]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    rois, insts, maps, boxes, kps = _truncated_people(16, torch.Generator().manual_seed(99))
    for inst in insts:
        inst.pred_boxes = inst.proposal_boxes
    head.eval()
    with torch.no_grad():
        pred = torch.cat([x.pred_keypoints for x in head(rois, insts, maps, [4, 8, 16])])[..., :2]
    wh = boxes[:, 2:] - boxes[:, :2]
    rel = lambda p: (p - boxes[:, None, :2]) / wh[:, None]  # noqa: E731
    return rel(pred), rel(kps)


@pytest.mark.slow
def test_truncated_boxes_predict_the_hidden_half_outside_the_box():
    """Boxes cut to the top 70% of a person: with the box as a frame (FRAME_MARGIN 0.5) the queries
    refine outside it and the knees and ankles (box-relative y 1.07 and 1.36) are predicted there;
    with the box as a cage (FRAME_MARGIN 0: outside keypoints unsupervised, sigmoid refinement in
    the box) they are not."""
    hidden = slice(13, 17)
    pred, gt = _train_truncated(0.5)
    assert (gt[:, hidden, 1] > 1).all()
    assert (pred[:, 15:17, 1] > 1.15).all()  # the ankles: far outside the box, as in the labels
    err = (pred[:, hidden] - gt[:, hidden]).norm(dim=-1).mean()
    assert err < 0.1, err
    caged, _ = _train_truncated(0.0)
    caged_err = (caged[:, hidden] - gt[:, hidden]).norm(dim=-1).mean()
    assert caged_err > 2 * err, (caged_err, err)


def test_roi_head_test_output_coarse_writes_the_coarse_proposal():
    """MODEL.POSEUR.TEST_OUTPUT "coarse" on the R-CNN head: the predictions are the coarse
    proposal's (the decoder's ablation), "decoder" the last layer's; other values are refused."""
    g = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    cfg = _cfg()
    cfg.MODEL.ROI_REGRESSION.COORDS = "fc"
    head = PoseurKeypointHead(cfg, ShapeSpec(channels=128, height=14, width=14)).eval()
    with torch.no_grad():  # move the decoder's output away from the coarse proposal
        for p in head.refiner.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    maps, rois = _maps(1, 128, g), torch.randn(2, 128, 14, 14, generator=g)
    boxes = [[4.0, 4, 40, 60], [50, 10, 90, 62]]
    with torch.no_grad():
        outputs = head.layers(rois, torch.tensor(boxes), torch.zeros(2, dtype=torch.long), maps, [8, 16, 32])
        final = head(rois, [_instances(boxes, train=False)], maps, [8, 16, 32])[0].pred_keypoints
        head.test_output = "coarse"
        coarse = head(rois, [_instances(boxes, train=False)], maps, [8, 16, 32])[0].pred_keypoints
    b = torch.tensor(boxes)
    want = b[:, None, :2] + outputs["coarse_coords"] * (b[:, 2:] - b[:, :2])[:, None]
    torch.testing.assert_close(coarse[..., :2], want.to(coarse.dtype))
    assert not torch.allclose(coarse[..., :2], final[..., :2], atol=1e-2)
    cfg.MODEL.POSEUR.TEST_OUTPUT = "layer0"
    with pytest.raises(ValueError, match="MODEL.POSEUR.TEST_OUTPUT"):
        PoseurKeypointHead(cfg, ShapeSpec(channels=128, height=14, width=14))
