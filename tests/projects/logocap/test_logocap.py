"""LOGO-CAP pieces: the keypoint expansion maps against the supplementary's Alg. 1, the dynamic
convolution against an explicit per-window loop, the authors' bilinear sampling, pose NMS, the KAM
network, the mesh OKS targets, and a training step / inference through the meta-architecture."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from d2pose.codecs.center_offset import center_nms, decode_center_offsets, flip_fuse_bottomup
from d2pose.data.metadata import get_keypoint_metadata
from d2pose.modeling.keypoint_sampling import keypoint_expansion, sample_bilinear
from d2pose.modeling.pose_nms import pose_nms
from d2pose_logocap import AttentiveBatchNorm2d, KAMNet, dynamic_window_conv, mesh_oks

pytestmark = pytest.mark.usefixtures("one_thread")


def _alg1(P, sigmas, ksize=11):
    """Supplementary Alg. 1, line by line (its listing's torch.arange(-radius, radius) stops one short
    of the 11 x 11 mesh it describes and the code builds; the end is included here)."""
    N, K = P.shape[:2]
    radius = ksize // 2
    dy, dx = torch.meshgrid(torch.arange(-radius, radius + 1), torch.arange(-radius, radius + 1), indexing="ij")
    dy, dx = dy.reshape(1, 1, ksize, ksize).double(), dx.reshape(1, 1, ksize, ksize).double()
    scale = sigmas.reshape(1, K, 1, 1) / sigmas.min()
    dy = dy * scale
    dx = dx * scale
    dxy = torch.stack((dx, dy), dim=-1)  # 1 x K x S x S x 2
    return P.reshape(N, K, 1, 1, 2) + dxy  # N x K x S x S x 2


@pytest.mark.parametrize("metadata", ["coco_person", "crowdpose"])
def test_kem_grid_matches_algorithm_1(metadata):
    sigmas = torch.tensor(get_keypoint_metadata(metadata).sigmas, dtype=torch.float64)
    K = len(sigmas)
    P = torch.rand(3, K, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 200
    ours = keypoint_expansion(P, sigmas.tolist(), 11)  # N x S x S x K x 2
    assert ours.shape == (3, 11, 11, K, 2)
    torch.testing.assert_close(ours.permute(0, 3, 1, 2, 4), _alg1(P, sigmas), rtol=0, atol=1e-12)
    # the centre cell is the keypoint; the smallest-sigma keypoint steps 1 px, others sigma_k / min
    torch.testing.assert_close(ours[:, 5, 5], P)
    k = int(sigmas.argmin())
    assert float(ours[0, 5, 6, k, 0] - P[0, k, 0]) == pytest.approx(1.0)
    j = int(sigmas.argmax())
    assert float(ours[0, 6, 5, j, 1] - P[0, j, 1]) == pytest.approx(float(sigmas[j] / sigmas.min()))
    with pytest.raises(ValueError, match="odd"):
        keypoint_expansion(P, sigmas.tolist(), 10)
    with pytest.raises(ValueError, match="sigmas"):
        keypoint_expansion(P[:, :-1], sigmas.tolist(), 11)


def test_dynamic_convolution_matches_per_window_loop():
    g = torch.Generator().manual_seed(1)
    P, K, L, S = 2, 3, 13, 5
    windows = torch.rand(P, K, L, L, generator=g, dtype=torch.float64)
    kams = torch.rand(P, K, S, S, generator=g, dtype=torch.float64)
    out = dynamic_window_conv(windows, kams)
    r = S // 2
    w, k = windows.numpy(), kams.numpy() / (S * S)
    ref = np.zeros_like(w)
    for p in range(P):
        for j in range(K):
            for y in range(L):
                for x in range(L):
                    acc = 0.0
                    for a in range(-r, r + 1):  # true convolution: out(y, x) = sum w(y - a, x - b) k(a, b)
                        for b in range(-r, r + 1):
                            if 0 <= y - a < L and 0 <= x - b < L:
                                acc += w[p, j, y - a, x - b] * k[p, j, a + r, b + r]
                    ref[p, j, y, x] = acc
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_sample_bilinear_matches_grid_sample_inside_and_authors_edges():
    g = torch.Generator().manual_seed(2)
    maps = torch.rand(4, 7, 9, generator=g, dtype=torch.float64)
    px = torch.rand(5, 6, generator=g, dtype=torch.float64) * 7.9
    py = torch.rand(5, 6, generator=g, dtype=torch.float64) * 5.9
    ours = sample_bilinear(maps, px, py)  # (5, 6, 4)
    grid = torch.stack([px / 8 * 2 - 1, py / 6 * 2 - 1], -1)[None]
    ref = F.grid_sample(maps[None], grid, align_corners=True)[0].permute(1, 2, 0)
    torch.testing.assert_close(ours, ref)
    per_point = sample_bilinear(maps, px[:4], py[:4], channel_per_point=True)
    torch.testing.assert_close(per_point, torch.stack([ours[i, :, i] for i in range(4)]))
    # left / top of the map: the first column / row; the last column fades from 0 at W - 1
    left = sample_bilinear(maps, torch.tensor([-3.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64))
    torch.testing.assert_close(left[0], maps[:, 2, 0])
    edge = sample_bilinear(maps, torch.tensor([8.0, 8.5, 9.5], dtype=torch.float64), torch.tensor([2.0] * 3, dtype=torch.float64))
    torch.testing.assert_close(edge[0], torch.zeros(4, dtype=torch.float64))
    torch.testing.assert_close(edge[1], 0.5 * maps[:, 2, 8])
    torch.testing.assert_close(edge[2], maps[:, 2, 8])


def test_center_nms_and_decoding():
    cm = torch.zeros(1, 1, 8, 8)
    cm[0, 0, 2, 3] = 0.9
    cm[0, 0, 2, 4] = 0.5  # suppressed by its neighbour
    cm[0, 0, 6, 6] = 0.7
    peaks = center_nms(cm, topk=3)
    assert peaks[0, :2].tolist() == [[3.0, 2.0, pytest.approx(0.9)], [6.0, 6.0, pytest.approx(0.7)]]
    assert float(peaks[0, 2, 2]) == 0.0
    offsets = torch.zeros(1, 4, 8, 8)
    offsets[0, :, 2, 3] = torch.tensor([1.0, -2.0, 3.0, 4.0])
    centers, poses = decode_center_offsets(cm, offsets, stride=4, topk=2)
    # cell (3, 2) has its centre at (14, 10) input pixels
    torch.testing.assert_close(centers[0, 0], torch.tensor([14.0, 10.0, 0.9]))
    torch.testing.assert_close(poses[0, 0], torch.tensor([[15.0, 8.0], [17.0, 14.0]]))
    # the same centre found on a 4x upsampled map at pixel (13, 9) (continuous 13.5, 9.5): same cell
    hr = torch.zeros(1, 1, 32, 32)
    hr[0, 0, 9, 13] = 1.0
    centers, poses = decode_center_offsets(hr, offsets, stride=4, topk=1)
    torch.testing.assert_close(poses[0, 0], torch.tensor([[14.5, 7.5], [16.5, 13.5]]))
    with pytest.raises(ValueError, match="neither"):
        decode_center_offsets(torch.zeros(1, 1, 10, 10), offsets, stride=4, topk=1)


def test_flip_fuse_of_a_mirrored_pair_is_identity():
    flip = get_keypoint_metadata("coco_person").flip_indices
    g = torch.Generator().manual_seed(3)
    hm = torch.rand(1, 18, 6, 8, generator=g)
    off = torch.randn(1, 34, 6, 8, generator=g)
    # the outputs a perfectly equivariant network gives for the mirror
    hm_m = hm[:, flip + [17]].flip(-1)
    o = off.reshape(1, 17, 2, 6, 8)[:, flip].flip(-1)
    off_m = torch.stack([-o[:, :, 0], o[:, :, 1]], 2).reshape(1, 34, 6, 8)
    h, f = flip_fuse_bottomup(torch.cat([hm, hm_m]), torch.cat([off, off_m]), flip)
    torch.testing.assert_close(h, hm)
    torch.testing.assert_close(f, off)


def test_pose_nms():
    base = torch.rand(17, 2, generator=torch.Generator().manual_seed(4)) * 100
    poses = torch.stack([base, base + 0.5, base + 60, base + 1.0])
    scores = torch.tensor([0.5, 0.9, 0.4, 0.1])
    # 0, 1 and 3 are duplicates: the best (1) is kept; 2 is apart
    assert pose_nms(poses, scores, 0.05, 8) == [1, 2]
    assert pose_nms(poses[:0], scores[:0]) == []
    # a degenerate pose (zero box) duplicates nothing, not even itself
    assert pose_nms(torch.zeros(1, 17, 2), torch.ones(1)) == []


def test_attentive_bn_and_kam_net():
    an = AttentiveBatchNorm2d(8, num_affine=4).eval()
    x = torch.randn(3, 8, 5, 5)
    y = an(x)
    normed = (x - an.running_mean[:, None, None]) / torch.sqrt(an.running_var[:, None, None] + an.eps)
    var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True)
    a = F.hardsigmoid(an.attention(mean * (var + 1e-3).rsqrt())).flatten(1)
    torch.testing.assert_close(y, (a @ an.weight_bank)[:, :, None, None] * normed + (a @ an.bias_bank)[:, :, None, None])
    net = KAMNet(14, 4, (16, 8), (False, True), 4)
    assert net(torch.randn(2, 14 * 4, 11, 11)).shape == (2, 14, 11, 11)
    with pytest.raises(ValueError, match="KAM_ATTENTIVE_NORM"):
        KAMNet(14, 4, (16, 8), (False,), 4)


def test_mesh_oks_targets():
    sigmas = torch.tensor(get_keypoint_metadata("coco_person").sigmas) * 2
    gt = torch.zeros(2, 17, 3)
    gt[0, :, :2] = torch.rand(17, 2) * 50 + 20
    gt[0, :, 2] = 2
    gt[0, 3, 2] = 0  # unlabelled
    gt[1, :, :2] = gt[0, :, :2] + 300
    gt[1, :, 2] = 2
    areas = torch.tensor([900.0, 900.0])
    P = gt[:1, :, :2].clone()
    P[0, :, 0] += 4.0  # 4 px right of the truth
    meshes = keypoint_expansion(P, (sigmas / 2).tolist(), 11)
    parts, person, best = mesh_oks(meshes, gt, areas, sigmas)
    assert parts.shape == (1, 11, 11, 2, 17) and person.shape == (1, 11, 11, 2) and best.shape == (1, 2)
    assert float(parts[..., 3].abs().max()) == 0.0
    assert int(best.argmax(-1)) == 0 and float(best[0, 1]) < 1e-6
    # the nose (sigma 0.026, step 1.04 px) is best 4 cells left of the centre
    nose = parts[0, 5, :, 0, 0]
    assert int(nose.argmax()) == 5 - 4 or int(nose.argmax()) == 1
    assert float(best[0, 0]) > float(person[0, 5, 5, 0])


def test_grid_sample_variant_matches_inside():
    from d2pose.modeling.keypoint_sampling import sample_bilinear_per_channel

    g = torch.Generator().manual_seed(5)
    maps = torch.rand(3, 6, 7, generator=g, dtype=torch.float64)
    px = torch.rand(3, 4, 5, generator=g, dtype=torch.float64) * 9 - 1.5  # partly outside on the left
    py = torch.rand(3, 4, 5, generator=g, dtype=torch.float64) * 5.9 - 1.0
    px = px.clamp(max=5.99)
    torch.testing.assert_close(sample_bilinear_per_channel(maps, px, py),
                               sample_bilinear(maps, px, py, channel_per_point=True))


def test_training_windows_are_the_authors_sampling_with_gradients():
    """The training windows (grid_sample x the fade on the last-pixel band) equal the authors'
    per-point sampling everywhere, the band past the last pixel centre and exactly W - 1 included,
    and so do the gradients w.r.t. the heatmaps."""
    from types import SimpleNamespace

    from d2pose_logocap import LOGOCAP

    K, H, W, r = 2, 9, 11, 3
    g = torch.Generator().manual_seed(8)
    maps = torch.rand(K, H, W, generator=g, dtype=torch.float64)
    centers = torch.rand(5, K, 2, generator=g, dtype=torch.float64) * torch.tensor([W + 6.0, H + 6.0]) - 3.0
    centers[0, 0] = torch.tensor([W - 1.0, H - 1.0])  # windows through exactly W - 1 / H - 1
    centers[1, 1] = torch.tensor([W - 2 + 0.3, H - 2 + 0.6])  # through the band [W - 1, W)
    host = SimpleNamespace(window_radius=r, prior_sigma=2.0)
    host.window_grid = lambda device, dtype: LOGOCAP.window_grid(host, device, dtype)
    m1, m2 = maps.clone().requires_grad_(), maps.clone().requires_grad_()
    ours, xx, yy, _ = LOGOCAP._training_windows(host, m1, centers)
    px = (centers[..., 0, None, None] + xx).transpose(0, 1)
    py = (centers[..., 1, None, None] + yy).transpose(0, 1)
    theirs = sample_bilinear(m2, px, py, channel_per_point=True).transpose(0, 1)
    assert ours.shape == (5, K, 2 * r + 1, 2 * r + 1)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    assert (ours[0, 0, r, :] == 0).all() and (ours[0, 0, :, r] == 0).all()  # the fade reaches 0 at W - 1, H - 1
    w = torch.rand(ours.shape, generator=g, dtype=torch.float64)
    (ours * w).sum().backward()
    (theirs * w).sum().backward()
    torch.testing.assert_close(m1.grad, m2.grad, rtol=1e-10, atol=1e-12)


def test_window_sampling_blocks_match_per_point_sampling():
    """The block + 2x2 blend window sampler against the per-point sampler (the authors' edge rules):
    windows inside the map, across every border, wholly outside, and centred exactly on W - 1 / H - 1
    (where the authors' sampling fades to 0)."""
    from d2pose.modeling.keypoint_sampling import sample_bilinear_windows, sample_bilinear_windows_points

    g = torch.Generator().manual_seed(11)
    C, H, W, r = 3, 9, 11, 3
    maps = torch.rand(C, H, W, generator=g, dtype=torch.float64)
    offsets = torch.arange(-r, r + 1, dtype=torch.float64)
    cx = torch.rand(C, 6, generator=g, dtype=torch.float64) * (W + 10) - 5
    cy = torch.rand(C, 6, generator=g, dtype=torch.float64) * (H + 10) - 5
    # exact edge cases: on the last column / row, on integer centres, far outside
    cx[0, :4] = torch.tensor([W - 1.0, 2.0, W - 1 + 0.25, -30.0], dtype=torch.float64)
    cy[0, :4] = torch.tensor([3.5, H - 1.0, H - 1.0, 40.0], dtype=torch.float64)
    ours = sample_bilinear_windows(maps, cx, cy, offsets)
    ref = sample_bilinear_windows_points(maps, cx, cy, offsets)
    assert ours.shape == ref.shape == (C, 6, 2 * r + 1, 2 * r + 1)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    # and the per-point sampler itself is the general `sample_bilinear` on the same points
    px = (cx[..., None] + offsets)[..., None, :].expand(C, 6, 2 * r + 1, 2 * r + 1)
    py = (cy[..., None] + offsets)[..., :, None].expand(C, 6, 2 * r + 1, 2 * r + 1)
    torch.testing.assert_close(ref, sample_bilinear(maps, px, py, channel_per_point=True), rtol=1e-12, atol=1e-12)
    # non-consecutive offsets take the per-point path
    odd = torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(sample_bilinear_windows(maps, cx, cy, odd), sample_bilinear_windows_points(maps, cx, cy, odd))
    # gradients flow to the maps the same way
    m1, m2 = maps.clone().requires_grad_(), maps.clone().requires_grad_()
    w = torch.rand(ours.shape, generator=g, dtype=torch.float64)
    (sample_bilinear_windows(m1, cx, cy, offsets) * w).sum().backward()
    (sample_bilinear_windows_points(m2, cx, cy, offsets) * w).sum().backward()
    torch.testing.assert_close(m1.grad, m2.grad, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------ the meta-architecture
def _small_cfg(**over):
    from d2pose.config import get_d2pose_cfg

    cfg = get_d2pose_cfg()
    cfg.merge_from_file("projects/LOGOCAP/configs/synthetic_logocap.yaml")
    cfg.merge_from_list(["MODEL.TIMM.NAME", "hrnet_w18_small", "INPUT.BOTTOMUP.INPUT_SIZE", "128",
                         "MODEL.LOGOCAP.TOPK_CENTERS", "6", "MODEL.LOGOCAP.WINDOW_RADIUS", "8",
                         "DATASETS.TEST", '("synthetic_pose_val_mini",)', "DATASETS.TRAIN", '("synthetic_pose_val_mini",)']
                        + [x for kv in over.items() for x in kv])
    return cfg


def _batch(cfg, n=2):
    from detectron2.data import DatasetCatalog


    from d2pose.data.bottomup_mapper import BottomUpDatasetMapper

    # no augmentation: the same inputs every run (the people at the training scale of the input)
    mapper = BottomUpDatasetMapper(True, flip_indices=get_keypoint_metadata("coco_person").flip_indices,
                                   input_size=cfg.INPUT.BOTTOMUP.INPUT_SIZE, max_rotation=0.0, scale_range=(1.0, 1.0),
                                   max_translation=0.0, flip_prob=0.0)
    records = [r for r in DatasetCatalog.get("synthetic_pose_val_mini") if len(r["annotations"]) >= 2][:n]
    return [mapper(r) for r in records]


def _oracle_model(cfg, grad: bool = False):
    """(model in train mode whose network returns the training targets as heatmaps and the target
    offsets shifted 2 px, its batch, the real network): the initial poses miss by 2 px, the meshes
    hold better points; `grad`: the oracle maps require gradients."""
    from d2pose.modeling import build_model

    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = _batch(cfg)
    real_network = model.network

    def oracle(images, embeddings=True):
        out = real_network(images, embeddings)
        hm = torch.stack([x["heatmaps"] for x in batch]).requires_grad_(grad)
        off = torch.stack([x["offsets"] for x in batch]) + 2.0
        out.update(heatmaps=hm, offsets=off, raw_offsets=(-off / model.stride).requires_grad_(grad))
        return out

    model.network = oracle
    return model, batch, real_network


def test_training_losses_and_decoder_targets_with_oracle_maps():
    """With the predicted heatmaps replaced by the training targets and the offsets by the targets
    shifted 2 px (exact offsets leave the KAMs nothing to improve: weight 0), the decoder's candidates
    match the people (OKS >= MATCH_OKS), the KAM and output-heatmap losses are positive and their gradients
    reach the KAM network and the embedding head; without people every loss is finite."""
    model, batch, real_network = _oracle_model(_small_cfg(**{"INPUT.BOTTOMUP.INPUT_SIZE": "256"}), grad=True)
    losses = model(batch)
    assert set(losses) == {"loss_heatmap", "loss_offset", "loss_kam", "loss_output_heatmap"}
    assert float(losses["loss_heatmap"]) == 0.0 and float(losses["loss_offset"]) > 0.0
    assert float(losses["loss_kam"]) > 0 and float(losses["loss_output_heatmap"]) > 0
    sum(losses.values()).backward()
    assert model.kam_net[0].weight.grad.abs().sum() > 0
    assert model.embedding_head[0].weight.grad.abs().sum() > 0
    # no labelled person: zero decoder losses, still part of the graph
    model.network = real_network
    empty = [dict(x, keypoints=torch.zeros(0, 17, 3), areas=torch.zeros(0)) for x in batch]
    losses = model(empty)
    assert float(losses["loss_kam"]) == 0.0 and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    # as in the authors' code, each such image's first candidate still goes through the KAM network
    # (its train-mode BatchNorm statistics), with weight 0
    images = model.normalize(torch.stack([x["image"] for x in empty]))
    t = model.training_outputs(images, empty)
    assert t["keep"][:, 0].all() and t["keep"].sum() == len(empty) and t["num_matched"] == 0
    assert t["kams"].shape[0] == len(empty) and (t["kam_weights"] == 0).all()


@pytest.mark.parametrize("match_oks,max_kept", [(0.5, 0), (0.999, 0), (0.1, 1)])
def test_candidates_the_decoder_meets_are_logged(match_oks, max_kept):
    """Each training step puts what the decoder met into the trainer's storage (metrics.json,
    TensorBoard): candidates kept per image by MATCH_OKS, and per person the best initial OKS and the
    best OKS in any mesh (>= the initial one); with initial poses 2 px off, most people's initial
    poses pass 0.5 and none reaches 0.999; MAX_KEPT caps the kept candidates per image."""
    from detectron2.utils.events import EventStorage

    cfg = _small_cfg(**{"INPUT.BOTTOMUP.INPUT_SIZE": "256", "MODEL.LOGOCAP.MATCH_OKS": str(match_oks),
                        "MODEL.LOGOCAP.MAX_KEPT": str(max_kept)})
    model, batch, _ = _oracle_model(cfg)
    with EventStorage(0) as storage:
        model(batch)
        logged = {k: v[0] for k, v in storage.latest().items() if k.startswith("logocap/")}
    assert set(logged) == {"logocap/kept_per_image", "logocap/kept_fraction", "logocap/person_initial_oks",
                           "logocap/person_mesh_oks", "logocap/person_initial_oks_over_match"}
    people = sum(int((x["keypoints"][..., 2] > 0).any(-1).sum()) for x in batch)
    assert logged["logocap/person_mesh_oks"] >= logged["logocap/person_initial_oks"] > 0.5
    if match_oks == 0.5:
        assert logged["logocap/kept_per_image"] >= people / len(batch)
        assert logged["logocap/person_initial_oks_over_match"] >= 0.75  # a small person's 2 px can cost more
    elif match_oks == 0.999:
        assert logged["logocap/person_initial_oks_over_match"] == 0.0
    else:  # MAX_KEPT 1: the best-scored candidate of each image, though more reach OKS 0.1
        assert logged["logocap/kept_per_image"] == 1.0
        t = model.training_outputs(model.normalize(torch.stack([x["image"] for x in batch])), batch)
        assert [int(i) for i in t["cand_index"]] == [0] * len(batch)
    total = logged["logocap/kept_per_image"] * len(batch)
    assert logged["logocap/kept_fraction"] == pytest.approx(total / (len(batch) * cfg.MODEL.LOGOCAP.TOPK_CENTERS))


def test_log_training_metrics_outside_a_trainer_does_nothing():
    from detectron2.utils.events import EventStorage

    from d2pose.utils.events import log_training_metrics

    assert log_training_metrics({"a": 1.0}) is False
    with EventStorage(0) as storage:
        assert log_training_metrics({"a": 1.0, "b": 2}, prefix="m/") is True
        assert storage.latest()["m/b"][0] == 2.0


@pytest.mark.parametrize("adaptation", ["full", "partial", "none"])
def test_inference_returns_people_in_the_image_frame(adaptation):
    """DefaultPredictor-style input (resized image + the original height / width) and mapper-style
    input (resize_matrix) give the same people, in the original frame; 14-keypoint metadata works."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from d2pose.data import register_keypoint_dataset
    from d2pose.modeling import build_model

    cfg = _small_cfg(**{"MODEL.LOGOCAP.ADAPTATION": adaptation, "MODEL.LOGOCAP.CENTER_THRESH": "-1.0"})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    image = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8)
    with torch.no_grad():
        a = model([{"image": image, "height": 192, "width": 256}])[0]["instances"]
        b = model([{"image": image, "resize_matrix": torch.tensor([[0.5, 0, 0], [0, 0.5, 0]], dtype=torch.float64),
                    "height": 192, "width": 256}])[0]["instances"]
    assert a.image_size == (192, 256) and len(a) >= 1 and a.pred_keypoints.shape[1:] == (17, 3)
    torch.testing.assert_close(a.pred_keypoints, b.pred_keypoints)
    assert len(a) <= cfg.MODEL.LOGOCAP.MAX_PEOPLE
    # at most MAX_PEOPLE, scores sorted by the pose NMS order of the decoder
    assert torch.isfinite(a.scores).all()
    with pytest.raises(ValueError, match="3, H, W"):
        model([{"image": torch.zeros(96, 128, 3, dtype=torch.uint8)}])


def test_any_keypoint_set_from_the_metadata(shared_data):
    """CrowdPose's 14 keypoints: heads, KEMs and KAMs sized by the metadata's sigmas."""
    from detectron2.data import DatasetCatalog

    from d2pose.data import register_keypoint_dataset
    from d2pose.modeling import build_model

    name = "test_logocap_crowdpose"
    if name not in DatasetCatalog.list():
        register_keypoint_dataset(name, f"{shared_data}/crowdpose/annotations/test_crowdpose.json",
                                  f"{shared_data}/crowdpose/images", metadata="crowdpose", evaluator_type="crowdpose",
                                  check_files=False)
    cfg = _small_cfg(**{"DATASETS.TEST": f'("{name}",)', "DATASETS.TRAIN": f'("{name}",)',
                        "MODEL.LOGOCAP.CENTER_THRESH": "-1.0"})
    model = build_model(cfg).eval()
    assert model.heatmap_head[-1].out_channels == 15 and model.offset_head[-1].out_channels == 28
    assert model.kam_net[-1].out_channels == 14
    with torch.no_grad():
        inst = model([{"image": torch.randint(0, 256, (3, 128, 128), dtype=torch.uint8)}])[0]["instances"]
    assert inst.pred_keypoints.shape[1:] == (14, 3)
    from d2pose.data.build import build_bottomup_mapper

    batch = [build_bottomup_mapper(cfg, True)(r) for r in DatasetCatalog.get(name)[:2]]
    model.train()
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())


def test_upper_bound_moves_keypoints_to_the_best_mesh_point():
    from d2pose_logocap import upper_bound_poses

    sigmas = get_keypoint_metadata("coco_person").sigmas
    g = torch.Generator().manual_seed(6)
    gt = np.zeros((2, 17, 3))
    gt[0, :, :2] = (torch.rand(17, 2, generator=g) * 60 + 20).numpy()
    gt[1, :, :2] = gt[0, :, :2] + 200
    gt[:, :, 2] = 2
    gt[0, 4, 2] = 0  # unlabelled: stays where it was
    initial = np.concatenate([gt[0, :, :2] + 2.0, np.ones((17, 1))], -1)[None]  # 2 px off, score 1
    bound = upper_bound_poses(initial, gt, np.array([2500.0, 2500.0]), sigmas, mesh_step=1.0)
    lab = gt[0, :, 2] > 0
    before = np.abs(initial[0, lab, :2] - gt[0, lab, :2]).max()
    after = np.abs(bound[0, lab, :2] - gt[0, lab, :2])
    # each keypoint ends at most half a mesh step (sigma_k / min sigma px) from the truth, never farther
    step = (np.asarray(sigmas) / min(sigmas))[lab, None]
    assert (after <= np.minimum(before, step / 2) + 1e-9).all() and after.sum() < 0.5 * 2.0 * after.size
    np.testing.assert_array_equal(bound[0, 4], initial[0, 4])
    np.testing.assert_array_equal(bound[..., 2], initial[..., 2])
    assert upper_bound_poses(initial, gt[:0], np.zeros(0), sigmas).shape == initial.shape


@pytest.mark.parametrize("name", ["logocap_hrnet_w32_512_coco.yaml", "logocap_hrnet_w48_640_coco.yaml",
                                  "logocap_hrnet_w32_512_crowdpose.yaml", "logocap_hrnet_w32_512_ochuman.yaml",
                                  "logocap_hrnet_w48_640_ochuman.yaml"])
def test_authors_configs_train_as_the_authors(name):
    """The training choices the synthetic recipe changes (gate, kept candidates, small-person rule,
    offset weight, data protocol) are the authors' in every COCO / CrowdPose / OCHuman config."""
    from d2pose.config import get_d2pose_cfg

    cfg = get_d2pose_cfg()
    cfg.merge_from_file(f"projects/LOGOCAP/configs/{name}")
    c = cfg.MODEL.LOGOCAP
    assert (c.MATCH_OKS, c.MAX_KEPT, c.OFFSET_LOSS_WEIGHT, c.KAM_LOSS_WEIGHT) == (0.5, 0, 0.01, 0.01)
    assert cfg.INPUT.BOTTOMUP.MIN_CENTER_AREA == 32 ** 2 and cfg.INPUT.BOTTOMUP.PROTOCOL == "dekr"
