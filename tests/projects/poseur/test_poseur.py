"""Tests of Poseur's modules (sine embeddings, neck, keypoint encoder, grouped query decoder with
EMSDA, ROI-style shared memory) and of PoseurHead, end to end and at the paper's R-50 size
(Table 1e: 3 decoder layers, 28.8M parameters, 4.48 GFLOPs at 256x192)."""
import math

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model

from d2pose.config import get_d2pose_cfg
from d2pose.layers import EMSDA, compiled_backends, ms_deform_attn_torch
from d2pose.layers import coord_sine_embedding, sine_position_encoding_2d
from d2pose.modeling import sigma_to_score
from d2pose.modeling.heads import build_topdown_head
from d2pose_poseur import (
    ChannelMapper,
    KeypointEncoder,
    PoseurDecoder,
    PoseurDecoderLayer,
    PoseurHead,
    group_attention_mask,
    inverse_sigmoid,
    noisy_reference_points,
)

C, M, LEVELS, POINTS = 32, 4, 3, 2
SHAPES = torch.tensor([[8, 6], [4, 3], [2, 2]])
STARTS = torch.tensor([0, 48, 60])
S = 64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: one intra-op thread is fastest, and with the CPU busy (conftest sets
    two threads) every small op waits ~8 ms at an OpenMP barrier, ~100x the tests' own compute."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _decoder(K, layers=2, dropout=0.0, **kw):
    return PoseurDecoder(layers, K, embed_dim=C, num_heads=M, ffn_dim=64, dropout=dropout, num_levels=LEVELS,
                         num_points=POINTS, **kw)


def _queries(R, K, groups, g, dtype=torch.float32):
    enc = KeypointEncoder(K, C).to(dtype)
    ref = torch.rand(R, groups * K, 2, generator=g, dtype=dtype) * 0.6 + 0.2
    with torch.no_grad():
        query, query_pos = enc(ref)
    return ref, query, query_pos


# ----------------------------------------------------------------------------- embeddings, neck

def test_sine_position_encoding_2d_values():
    pos = sine_position_encoding_2d(2, 4, 3, num_feats=8)
    assert pos.shape == (2, 16, 4, 3) and pos.dtype == torch.float32
    r, c = 2, 1  # 0-based cell: y = (r + 1 - 0.5) / H * 2 pi
    y = (r + 0.5) / (4 + 1e-6) * 2 * math.pi
    x = (c + 0.5) / (3 + 1e-6) * 2 * math.pi
    dim_t = torch.tensor([10000 ** (2 * (i // 2) / 8) for i in range(8)], dtype=torch.float64)
    expect_y = [math.sin(y / dim_t[i]) if i % 2 == 0 else math.cos(y / dim_t[i]) for i in range(8)]
    expect_x = [math.sin(x / dim_t[i]) if i % 2 == 0 else math.cos(x / dim_t[i]) for i in range(8)]
    torch.testing.assert_close(pos[1, :, r, c], torch.tensor(expect_y + expect_x, dtype=torch.float32))
    assert sine_position_encoding_2d(1, 2, 2, 4, dtype=torch.float64).dtype == torch.float64


def test_coord_sine_embedding_order_and_shapes():
    pts = torch.tensor([[0.25, 0.75]])
    emb = coord_sine_embedding(pts, num_feats=4)
    assert emb.shape == (1, 8)
    dim_t = [10000 ** (2 * (i // 2) / 4) for i in range(4)]

    def axis(v):
        a = v * 2 * math.pi
        return [math.sin(a / dim_t[i]) if i % 2 == 0 else math.cos(a / dim_t[i]) for i in range(4)]

    torch.testing.assert_close(emb[0], torch.tensor(axis(0.25) + axis(0.75)))  # cat(pos_x, pos_y)
    assert coord_sine_embedding(torch.rand(3, 5, 7, 2), 16).shape == (3, 5, 7, 32)
    with pytest.raises(ValueError, match="even"):
        coord_sine_embedding(pts, 3)


def test_channel_mapper():
    neck = ChannelMapper([8, 16, 32], out_channels=C, num_groups=8)
    feats = [torch.randn(2, 8, 8, 6), torch.randn(2, 16, 4, 3), torch.randn(2, 32, 2, 2)]
    outs = neck(feats)
    assert [o.shape for o in outs] == [(2, C, 8, 6), (2, C, 4, 3), (2, C, 2, 2)]
    assert neck.convs[0].conv.bias is None  # conv + GN, no bias, no activation
    assert (outs[0] < 0).any()
    with pytest.raises(ValueError, match="levels"):
        neck(feats[:2])


# ----------------------------------------------------------------------------- encoder, decoder

@pytest.mark.parametrize("K,groups", [(5, 1), (5, 4), (17, 1), (17, 2)])
def test_keypoint_encoder_and_decoder_shapes(K, groups):
    g = torch.Generator().manual_seed(0)
    R = 3
    ref, query, query_pos = _queries(R, K, groups, g)
    assert query.shape == query_pos.shape == (R, groups * K, C)
    # the class embedding repeats per group
    torch.testing.assert_close(query_pos[:, :K], query_pos[:, (groups - 1) * K:])
    dec = _decoder(K, layers=3).eval()
    out = dec(query, query_pos, ref, torch.randn(R, S, C), SHAPES, STARTS, return_sampling=True)
    Q = groups * K
    assert out["coords"].shape == out["sigmas"].shape == out["references"].shape == (3, R, Q, 2)
    assert out["sampling_locations"].shape == (3, R, Q, M, LEVELS, POINTS, 2)
    assert out["attention_weights"].shape == (3, R, Q, M, LEVELS, POINTS)
    assert ((out["sigmas"] > 0) & (out["sigmas"] < 1)).all()
    torch.testing.assert_close(out["references"][0], ref)
    # zero-initialised regression branches: references and outputs start at the input points
    torch.testing.assert_close(out["coords"][-1], ref)
    with pytest.raises(ValueError, match="multiple"):
        dec(query[:, :-1], query_pos[:, :-1], ref[:, :-1], torch.randn(R, S, C), SHAPES, STARTS)


def test_group_attention_mask_and_inverse_sigmoid():
    mask = group_attention_mask(2, 3)
    expected = torch.ones(6, 6, dtype=torch.bool)
    for gr in range(3):
        expected[2 * gr:2 * gr + 2, 2 * gr:2 * gr + 2] = False
    assert torch.equal(mask, expected)
    x = torch.tensor([-0.5, 0.0, 0.3, 1.0, 1.5])
    y = inverse_sigmoid(x)
    torch.testing.assert_close(torch.sigmoid(y[2]), x[2])
    assert torch.isfinite(y).all() and y[0] == y[1] and y[3] == y[4]


def test_noisy_reference_points():
    g = torch.Generator().manual_seed(0)
    R, K, G, n = 4, 17, 3, 12
    coarse = torch.rand(R, K, 2, generator=g)
    out = noisy_reference_points(coarse, G, n, std=0.2, generator=g, slots="instance")
    assert out.shape == (R, (1 + G) * K, 2)
    torch.testing.assert_close(out[:, :K], coarse)  # group 0 = the coarse points (inside the clip range)
    moved = (out[:, K:] != coarse.repeat(1, G, 1)).any(-1)
    assert (moved.sum(1) == n).all()  # exactly n noisy slots per instance
    assert not torch.equal(moved[0], moved[1]) or not torch.equal(moved[1], moved[2])  # drawn per instance
    assert ((out[:, K:] - coarse.repeat(1, G, 1)).abs() <= 1.0 + 1e-6).all()
    # the authors' default: one slot set per batch, shared by every instance, with its own noise
    shared = noisy_reference_points(coarse, G, n, generator=g)
    moved = (shared[:, K:] != coarse.repeat(1, G, 1)).any(-1)
    assert (moved.sum(1) == n).all() and all(torch.equal(moved[0], moved[i]) for i in range(R))
    delta = shared[:, K:] - coarse.repeat(1, G, 1)
    assert not torch.equal(delta[0][moved[0]], delta[1][moved[1]])
    with pytest.raises(ValueError, match="slots"):
        noisy_reference_points(coarse, G, n, slots="group")
    far = noisy_reference_points(torch.full((2, K, 2), 1.65), G, G * K, std=5.0)
    assert far.min() >= -0.7 and far.max() <= 1.7 + 1e-6
    assert noisy_reference_points(coarse, 0).shape == (R, K, 2)
    a = noisy_reference_points(coarse, G, n, generator=torch.Generator().manual_seed(3))
    b = noisy_reference_points(coarse, G, n, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_noise_has_the_authors_covariance():
    """N(0, 0.2 I) clipped to [-1, 1]: per coordinate a normal of std s = sqrt(0.2) clamped at +-1 =
    +-a s, a = 2.236, whose variance is s^2 (2 Phi(a) - 1 - 2 a phi(a)) + 2 (1 - Phi(a)) (the clamped
    mass sits at +-1): std 0.4371; a std of 0.2 would give 0.2 (no clipping at 5 std)."""
    from d2pose.config import get_d2pose_cfg

    cfg = get_d2pose_cfg()
    assert cfg.MODEL.POSEUR.NOISE_STD == pytest.approx(math.sqrt(0.2)) and cfg.MODEL.POSEUR.NOISE_SLOTS == "batch"
    R, K, G = 4000, 17, 3
    coarse = torch.full((R, K, 2), 0.5, dtype=torch.float64)
    out = noisy_reference_points(coarse, G, G * K, generator=torch.Generator().manual_seed(0), clip=(-10.0, 10.0))
    noise = (out[:, K:] - 0.5).flatten()
    a = 1 / math.sqrt(0.2)
    phi = math.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
    Phi = 0.5 * (1 + math.erf(a / math.sqrt(2)))
    expected = math.sqrt(0.2 * (2 * Phi - 1 - 2 * a * phi) + 2 * (1 - Phi))
    assert abs(noise.mean().item()) < 0.005
    assert noise.std().item() == pytest.approx(expected, rel=0.01)
    assert noise.abs().max().item() <= 1.0


def _weighted(x, g):
    # LayerNorm outputs sum to a constant: random weights make every coordinate count
    return (x * torch.randn(x.shape, generator=g, dtype=x.dtype)).sum()


def test_grouped_self_attention_isolates_groups_in_a_layer():
    g = torch.Generator().manual_seed(0)
    K, G, R = 5, 3, 2
    layer = PoseurDecoderLayer(C, M, 64, dropout=0.0, num_levels=LEVELS, num_points=POINTS).double().train()
    tgt = torch.randn(R, G * K, C, generator=g, dtype=torch.float64, requires_grad=True)
    pos = torch.randn(R, G * K, C, generator=g, dtype=torch.float64, requires_grad=True)
    ref = (torch.rand(R, G * K, 2, generator=g, dtype=torch.float64) * 0.6 + 0.2).requires_grad_()
    memory = torch.randn(R, S, C, generator=g, dtype=torch.float64)
    out = layer(tgt, pos, ref, memory, SHAPES, STARTS, attn_mask=group_attention_mask(K, G))
    _weighted(out[:, 0], g).backward()  # the first query of group 0 only
    for x in (tgt, pos, ref):
        assert torch.count_nonzero(x.grad[:, K:]) == 0  # exactly zero for the other groups
    assert (tgt.grad[:, 1:K].abs().sum(-1) > 0).all()  # other queries of its group: through self-attention
    assert (ref.grad[:, 0].abs().sum(-1) > 0).all()
    # without the mask the other groups do receive gradient (the test can fail)
    tgt.grad = None
    _weighted(layer(tgt, pos, ref, memory, SHAPES, STARTS)[:, 0], g).backward()
    assert (tgt.grad[:, K:].abs().sum(-1) > 0).all()
    # the decoder's fast path (attention on (R G, K, C)) equals the block-diagonal mask, and isolates too
    layer.eval()
    with torch.no_grad():
        masked = layer(tgt, pos, ref, memory, SHAPES, STARTS, attn_mask=group_attention_mask(K, G))
    tgt.grad = None
    grouped = layer(tgt, pos, ref, memory, SHAPES, STARTS, num_groups=G)
    torch.testing.assert_close(grouped, masked, rtol=1e-12, atol=1e-12)
    _weighted(grouped[:, 0], g).backward()
    assert torch.count_nonzero(tgt.grad[:, K:]) == 0 and (tgt.grad[:, 1:K].abs().sum(-1) > 0).all()


def test_grouped_decoder_isolates_noisy_groups_in_training():
    g = torch.Generator().manual_seed(1)
    K, G, R = 17, 3, 2
    enc = KeypointEncoder(K, C)
    dec = _decoder(K, layers=3, dropout=0.1).train()
    with torch.no_grad():  # move the refinement branches off their zero init
        for mlp in dec.fc_coord_branches:
            mlp[-1].weight.normal_(0, 0.1, generator=g)
    coarse = torch.rand(R, K, 2, generator=g) * 0.6 + 0.2
    ref = noisy_reference_points(coarse, G, 12, generator=g).requires_grad_()
    query, query_pos = enc(ref)
    memory = torch.randn(R, S, C, generator=g, requires_grad=True)
    out = dec(query, query_pos, ref, memory, SHAPES, STARTS)
    (_weighted(out["coords"][:, :, :K], g) + _weighted(out["sigmas"][:, :, :K], g)).backward()
    assert torch.count_nonzero(ref.grad[:, K:]) == 0
    assert (ref.grad[:, :K].abs().sum(-1) > 0).all()
    assert enc.pos_embed.weight.grad.abs().sum() > 0 and memory.grad.abs().sum() > 0


def test_poseur_score_formula():
    sigma = torch.tensor([[[0.1, 0.3], [0.02, 0.9]]])
    a = 0.2
    expected = torch.tensor([[(1 - math.exp(-a / 0.1)) * (1 - math.exp(-a / 0.3)),
                              (1 - math.exp(-a / 0.02)) * (1 - math.exp(-a / 0.9))]])
    torch.testing.assert_close(sigma_to_score(sigma, "poseur", a), expected)
    torch.testing.assert_close(sigma_to_score(sigma, "rle"), 1 - sigma.mean(-1))


@pytest.mark.parametrize("backend", ["torch"] + (["cpp"] if "cpp" in compiled_backends() else []))
def test_emsda_equals_project_then_sample(backend):
    """EMSDA (sample the C-channel memory, then project per head) equals MSDA on the per-head
    projected memory when no sample leaves its map."""
    g = torch.Generator().manual_seed(0)
    m = EMSDA(C, M, LEVELS, POINTS, backend=backend).double()
    with torch.no_grad():
        m.sampling_offsets.weight.normal_(0, 0.01, generator=g)
        m.sampling_offsets.bias.mul_(0.05)  # at most 0.1 px from the reference point
        m.attention_weights.weight.normal_(0, 0.3, generator=g)
        m.value_proj_bias.normal_(0, 1, generator=g)
    query = torch.randn(2, 7, C, generator=g, dtype=torch.float64)
    ref = torch.rand(2, 7, 2, generator=g, dtype=torch.float64) * 0.3 + 0.35
    memory = torch.randn(2, S, C, generator=g, dtype=torch.float64)
    out, loc, attn = m(query, ref, memory, SHAPES, STARTS, return_sampling=True)
    half = 0.5 / SHAPES.flip(-1).double()  # half a cell, (L, 2) as (x, y)
    assert ((loc >= half[:, None]) & (loc <= 1 - half[:, None])).all()  # all four taps inside every map
    value = torch.einsum("nsc,mcd->nsmd", memory, m.value_proj_weight) + m.value_proj_bias  # (N, S, M, C/M)
    expected = m.output_proj(ms_deform_attn_torch(value, SHAPES, STARTS, loc, attn))
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_memory_index_equals_expanded_memory():
    g = torch.Generator().manual_seed(0)
    K, G = 5, 2
    memory_index = torch.tensor([2, 0, 2, 1, 2])
    R = len(memory_index)
    dec = _decoder(K, layers=2).double().eval()
    ref, query, query_pos = _queries(R, K, G, g, torch.float64)
    memory = torch.randn(3, S, C, generator=g, dtype=torch.float64, requires_grad=True)
    expanded = memory.detach()[memory_index].requires_grad_()
    shared = dec(query, query_pos, ref, memory, SHAPES, STARTS, memory_index=memory_index, return_sampling=True)
    alone = dec(query, query_pos, ref, expanded, SHAPES, STARTS, return_sampling=True)
    for key in ("coords", "sigmas", "references", "sampling_locations", "attention_weights"):
        torch.testing.assert_close(shared[key], alone[key], rtol=1e-10, atol=1e-12)
    w = torch.randn(shared["coords"].shape, generator=g, dtype=torch.float64)
    (shared["coords"] * w).sum().backward()
    (alone["coords"] * w).sum().backward()
    summed = torch.zeros_like(memory).index_add(0, memory_index, expanded.grad)
    torch.testing.assert_close(memory.grad, summed, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- PoseurHead

def _head_cfg(**poseur):
    cfg = get_d2pose_cfg()
    cfg.DATASETS.TRAIN = ("synthetic_pose_val_mini",)
    cfg.DATASETS.TEST = ("synthetic_pose_val_mini",)
    cfg.MODEL.TOPDOWN.HEAD = "PoseurHead"
    cfg.MODEL.TOPDOWN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.INPUT.TOPDOWN.INPUT_SIZE = (48, 64)
    cfg.INPUT.TOPDOWN.CODEC = "regression"
    cfg.TEST.KEYPOINT_SCORE = "poseur"
    p = cfg.MODEL.POSEUR
    p.EMBED_DIM, p.NUM_HEADS, p.FFN_DIM, p.NUM_DECODER_LAYERS, p.NUM_POINTS = C, M, 64, 2, 2
    for k, v in poseur.items():
        setattr(p, k, v)
    return cfg


SPECS = {f"res{i}": ShapeSpec(channels=16 * 2 ** (i - 2), stride=2 ** i) for i in range(2, 6)}


def _features(R, g, dtype=torch.float32):
    return {k: torch.randn(R, s.channels, 64 // s.stride, 48 // s.stride, generator=g).to(dtype)
            for k, s in SPECS.items()}


def _samples(R, K, g):
    out = []
    for _ in range(R):
        w = torch.ones(K)
        w[0] = 0
        out.append(dict(target=torch.rand(K, 2, generator=g), target_weight=w))
    return out


def test_poseur_head_train_and_predict():
    g = torch.Generator().manual_seed(0)
    head = build_topdown_head(_head_cfg(), SPECS)
    assert isinstance(head, PoseurHead) and head.num_keypoints == 17
    K, R, G = 17, 3, 3
    head.train()
    out = head(_features(R, g))
    assert out["dec_coords"].shape == (2, R, (1 + G) * K, 2) and out["coords"].shape == (R, K, 2)
    losses = head.losses(out, _samples(R, K, g))
    assert set(losses) == {"loss_coarse", "loss_dec_0", "loss_dec_1"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name in ("coarse.fc_coord.linear.weight", "refiner.enc_loss.flow.s.0.0.weight",
                 "refiner.dec_loss.flow.s.0.0.weight", "refiner.level_embeds", "neck.convs.0.conv.weight",
                 "refiner.keypoint_encoder.pos_embed.weight", "refiner.decoder.layers.1.cross_attn.value_proj_weight",
                 "refiner.decoder.fc_sigma_branches.1.weight"):
        grad = dict(head.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name

    head.eval()
    feats = _features(R, g)
    with torch.no_grad():
        out = head(feats)
    # no noisy groups at inference, and only the last layer's outputs unless asked for all of them
    assert out["dec_coords"].shape == (1, R, K, 2)
    head.all_layer_outputs = True
    with torch.no_grad():
        every = head(feats)
    head.all_layer_outputs = False
    assert every["dec_coords"].shape == (2, R, K, 2)
    torch.testing.assert_close(every["coords"], out["coords"], rtol=0, atol=0)
    torch.testing.assert_close(every["sigma"], out["sigma"], rtol=0, atol=0)
    head.return_sampling = True
    with torch.no_grad():
        sampled = head(_features(1, g))
    head.return_sampling = False
    assert sampled["sampling_locations"].shape == (2, 1, K, M, 4, 2, 2)
    coords, scores, extras = head.predict(out)
    assert coords.shape == (R, K, 2) and scores.shape == (R, K)
    assert (coords >= 0).all() and (coords[..., 0] <= 48).all() and (coords[..., 1] <= 64).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    assert extras["pred_keypoint_sigmas"].shape == (R, K, 2)
    flip = list(range(K))
    with torch.no_grad():
        flipped = head({k: v.flip(-1) for k, v in _features(R, g).items()})
    for mode in ("mean", "official"):
        head.flip_fuse_mode = mode
        fused = head.flip_fuse(out, flipped, flip)
        assert fused["coords"].shape == (R, K, 2) and fused["sigma"].shape == (R, K, 2)
        c, s, _ = head.predict(fused)
        assert c.shape == (R, K, 2) and ((s >= 0) & (s <= 1)).all()
    # the official fusion of a confident view with its exact mirror returns it (its 1e-10 is negligible)
    sharp = dict(coords=out["coords"], sigma=torch.full_like(out["sigma"], 0.05))
    mirrored = dict(coords=torch.stack([1 - out["coords"][..., 0], out["coords"][..., 1]], -1), sigma=sharp["sigma"])
    fused = head.flip_fuse(sharp, mirrored, flip)
    torch.testing.assert_close(fused["coords"], out["coords"])
    torch.testing.assert_close(fused["scores"], 0.7 * sigma_to_score(sharp["sigma"], "poseur", 0.2))


def test_poseur_head_options_and_bf16_features():
    g = torch.Generator().manual_seed(0)
    cfg = _head_cfg(NUM_NOISY_GROUPS=0, COARSE_FEATURE="neck", NUM_REG_FCS=2, OUTPUT_DELTA=False)
    cfg.TEST.KEYPOINT_SCORE = "rle"
    cfg.MODEL.TOPDOWN.IN_FEATURES = ["res4", "res5"]
    head = build_topdown_head(cfg, SPECS).train()
    assert head.coarse.fc_coord.linear.in_features == C and head.decoder.fc_coord_output_branches is None
    assert len(head.decoder.fc_coord_branches[0]) == 5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(_features(2, g, torch.bfloat16))
        losses = head.losses(out, _samples(2, 17, g))
    assert out["dec_coords"].shape == (2, 2, 17, 2) and out["coords"].dtype == torch.float32
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    cfg.INPUT.TOPDOWN.REGRESSION_CENTERED = True
    with pytest.raises(ValueError, match="CENTERED"):
        build_topdown_head(cfg, SPECS)


def test_poseur_authors_switches_loss_normalization_init_sigma_branch():
    """MODEL.POSEUR.LOSS_NORMALIZATION "query" is the "instance" loss over the queries per instance
    (K coarse, (1 + G) K per decoder layer); INIT "official" draws each branch kind once for every
    layer (coordinate MLPs: PyTorch's default init, no zero layer), EMSDA xavier and the coarse FC
    near the crop's corner; SIGMA_BRANCH "stacked" is NUM_REG_FCS linears + the output linear."""
    K, R, G = 17, 3, 2
    g = torch.Generator().manual_seed(0)
    feats, samples = _features(R, g), _samples(R, K, g)
    torch.manual_seed(0)
    head = build_topdown_head(_head_cfg(NUM_NOISY_GROUPS=G, DROPOUT=0.0), SPECS).train()
    assert head.refiner.loss_normalization == "instance"
    torch.manual_seed(1)
    out = head(feats)
    instance = head.losses(out, samples)
    head.refiner.loss_normalization = "query"
    query = head.losses(out, samples)
    torch.testing.assert_close(query["loss_coarse"], instance["loss_coarse"] / K)
    for l in range(2):
        torch.testing.assert_close(query[f"loss_dec_{l}"], instance[f"loss_dec_{l}"] / ((1 + G) * K))
    with pytest.raises(ValueError, match="LOSS_NORMALIZATION"):
        build_topdown_head(_head_cfg(LOSS_NORMALIZATION="batch"), SPECS)

    cfg = _head_cfg(INIT="official", SIGMA_BRANCH="stacked", NUM_REG_FCS=2, COARSE_FEATURE="neck")
    head = build_topdown_head(cfg, SPECS)
    dec = head.decoder
    first = dec.fc_coord_branches[0].state_dict()
    for branch in list(dec.fc_coord_branches) + list(dec.fc_coord_output_branches):
        for k, v in branch.state_dict().items():
            assert torch.equal(v, first[k]), k  # one draw, copied (the authors' _get_clones)
    assert dec.fc_coord_branches[0][-1].weight.abs().min() > 0  # no zero layer
    sigma = dec.fc_sigma_branches[0]
    assert [type(m) for m in sigma] == [torch.nn.Linear] * 3 and sigma[-1].weight.abs().max() < 0.01
    assert torch.equal(dec.fc_sigma_branches[1][0].weight, sigma[0].weight)
    assert dec.layers[0].cross_attn.sampling_offsets.weight.abs().max() > 0  # xavier, not Deformable-DETR's 0
    assert dec.layers[0].cross_attn.attention_weights.weight.abs().max() > 0
    assert dec.layers[0].cross_attn.value_proj_bias.abs().min() > 0
    # the flows keep PyTorch's default init (bound 1 / sqrt(2) on the first layer), not xavier gain 0.01
    assert head.refiner.dec_loss.flow.s[0][0].weight.abs().max() > 0.1
    coarse_bias = head.coarse.fc_coord.linear.bias
    assert (coarse_bias + 0.5).abs().max() <= 1.0 / math.sqrt(C)  # their raw output starts near 0
    head.train()
    out = head(_features(R, g))
    losses = head.losses(out, _samples(R, K, g))
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert sigma[0].weight.grad.abs().sum() > 0
    # the d2pose defaults: zero last coordinate layer, one sigma Linear, Deformable-DETR's EMSDA init
    head = build_topdown_head(_head_cfg(), SPECS)
    assert head.decoder.fc_coord_branches[0][-1].weight.abs().max() == 0
    assert isinstance(head.decoder.fc_sigma_branches[0], torch.nn.Linear)
    assert head.decoder.layers[0].cross_attn.sampling_offsets.weight.abs().max() == 0
    assert head.refiner.dec_loss.flow.s[0][0].weight.abs().max() < 0.01
    for key, bad in (("INIT", "mmpose"), ("SIGMA_BRANCH", "folded")):
        with pytest.raises(ValueError, match=f"MODEL.POSEUR.{key}"):
            build_topdown_head(_head_cfg(**{key: bad}), SPECS)


def test_poseur_converter_keeps_or_folds_the_sigma_branch(parity_data):
    """fold_sigma=False keeps the authors' stacked sigma linears (SIGMA_BRANCH "stacked"); both forms
    give the same sigmas, and the inverted name table names every converted tensor of the stacked form."""
    import os

    from d2pose_poseur.convert import convert_poseur_official, poseur_official_names

    from tests.parity import synth_weights

    folder = os.path.join(parity_data, "poseur_r50")
    if not os.path.isdir(folder):
        pytest.skip(f"parity fixture not found at {folder}")
    official = synth_weights(parity_data).load_fixture_state_dict(folder)
    folded, ov_folded = convert_poseur_official(official)
    stacked, ov_stacked = convert_poseur_official(official, fold_sigma=False)
    assert dict(zip(ov_folded[0::2], ov_folded[1::2]))["MODEL.POSEUR.SIGMA_BRANCH"] == "linear"
    assert dict(zip(ov_stacked[0::2], ov_stacked[1::2]))["MODEL.POSEUR.SIGMA_BRANCH"] == "stacked"
    p = "head.refiner.decoder.fc_sigma_branches.5."
    x = torch.randn(7, 256, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = x
    for k in range(3):
        y = y @ stacked[f"{p}{k}.weight"].double().T + stacked[f"{p}{k}.bias"].double()
    torch.testing.assert_close(x @ folded[p + "weight"].double().T + folded[p + "bias"].double(), y,
                               rtol=1e-5, atol=1e-5)
    names = poseur_official_names(official)
    assert set(names) == set(stacked) and len(set(names.values())) == len(names)
    assert names[p + "2.weight"] == "keypoint_head.fc_sigma_branches.5.2.linear.weight"
    assert names["head.refiner.decoder.layers.5.cross_attn.value_proj_weight"] == \
        "keypoint_head.transformer.decoder.layers.5.attentions.1.value_proj_weight.weight"
    assert not any(k.startswith(p) for k in poseur_official_names(official, fold_sigma=True))


def test_poseur_integral_coarse_proposal():
    """COARSE_COORDS "integral": mu_f is the soft-argmax of K maps from the finest neck level (cell
    centres in crop pixels), sigma_f still from the pooled FC; the decoder starts from it as from the FC's."""
    from d2pose.modeling.integral import soft_argmax

    g = torch.Generator().manual_seed(0)
    head = build_topdown_head(_head_cfg(COARSE_COORDS="integral"), SPECS).train()
    assert head.coarse.fc_coord is None and head.coarse_heatmap.out_channels == 17
    assert head.coarse_heatmap_stride == SPECS[head.in_features[0]].stride
    out = head(_features(2, g))
    # near-uniform maps at init: the proposal starts at the crop centre, as the FC's does
    torch.testing.assert_close(out["coarse_coords"], torch.full_like(out["coarse_coords"], 0.5), atol=0.02, rtol=0)
    sum(head.losses(out, _samples(2, 17, g)).values()).backward()
    assert head.coarse_heatmap.weight.grad.abs().sum() > 0 and head.coarse.fc_sigma.weight.grad.abs().sum() > 0
    # a peaked map at cell (row i, column j) of a stride-s level decodes to that cell's centre
    s, (i, j) = 16, (2, 1)
    logits = torch.full((1, 17, 4, 3), -1e4)
    logits[..., i, j] = 0
    xy = head.codec.decode(soft_argmax(logits, head.codec, s))
    torch.testing.assert_close(xy, torch.tensor([(j + 0.5) * s, (i + 0.5) * s]).expand(1, 17, 2))
    with pytest.raises(ValueError, match="COARSE_COORDS"):
        build_topdown_head(_head_cfg(COARSE_COORDS="heatmap"), SPECS)


def test_poseur_integral_coarse_heatmap_kl_term():
    """MODEL.RLE.INTEGRAL_HEATMAP_WEIGHT with the integral coarse proposal: "loss_coarse_heatmap" is
    the weighted heatmap_kl_loss of the proposal's logits against the (untiled) targets, training only;
    with the FC proposal it is refused, naming the key to change."""
    from d2pose.modeling.losses import heatmap_kl_loss

    g = torch.Generator().manual_seed(0)
    cfg = _head_cfg(COARSE_COORDS="integral")
    cfg.MODEL.RLE.INTEGRAL_HEATMAP_WEIGHT = 0.5
    head = build_topdown_head(cfg, SPECS).train()
    out = head(_features(2, g))
    samples = _samples(2, 17, g)
    losses = head.losses(out, samples)
    assert set(losses) == {"loss_coarse", "loss_coarse_heatmap"} | {f"loss_dec_{l}" for l in range(head.decoder.num_layers)}
    target = torch.stack([x["target"] for x in samples]).float()
    weight = torch.stack([x["target_weight"] for x in samples]).float()
    gx, gy = out["coarse_grid"]
    assert len(gx) == out["coarse_logits"].shape[-1] and len(gy) == out["coarse_logits"].shape[-2]
    want = 0.5 * heatmap_kl_loss(out["coarse_logits"], gx, gy, target, weight, cfg.MODEL.RLE.INTEGRAL_HEATMAP_SIGMA)
    torch.testing.assert_close(losses["loss_coarse_heatmap"], want)
    head.eval()
    with torch.no_grad():
        assert "coarse_logits" not in head(_features(1, g))
    cfg.MODEL.POSEUR.COARSE_COORDS = "fc"
    with pytest.raises(ValueError, match="MODEL.POSEUR.COARSE_COORDS"):
        build_topdown_head(cfg, SPECS)


def _model_cfg(depth, input_size, layers, **poseur):
    cfg = _head_cfg(NUM_DECODER_LAYERS=layers, **poseur)
    cfg.merge_from_file("configs/Base-TopDown.yaml")
    cfg.MODEL.TOPDOWN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.DATASETS.TRAIN = ("synthetic_pose_val_mini",)
    cfg.DATASETS.TEST = ("synthetic_pose_val_mini",)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.DEPTH = depth
    if depth < 50:
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.TOPDOWN.HEAD = "PoseurHead"
    cfg.INPUT.TOPDOWN.CODEC = "regression"
    cfg.INPUT.TOPDOWN.INPUT_SIZE = input_size
    return cfg


def test_topdown_model_with_poseur_head_trains_and_infers():
    cfg = _model_cfg(18, (48, 64), 2)
    model = build_model(cfg)
    W, H = cfg.INPUT.TOPDOWN.INPUT_SIZE
    g = torch.Generator().manual_seed(0)
    samples = [dict(image=torch.randint(0, 255, (3, H, W), dtype=torch.uint8), image_id=i, **s)
               for i, s in enumerate(_samples(2, 17, g))]
    model.train()
    losses = model(samples)
    assert set(losses) == {"loss_coarse", "loss_dec_0", "loss_dec_1"}
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model([dict(image=torch.randint(0, 255, (3, 120, 90), dtype=torch.uint8))])
    inst = out[0]["instances"]
    assert inst.pred_keypoints.shape == (1, 17, 3) and inst.pred_keypoint_sigmas.shape == (1, 17, 2)


def test_test_output_coarse_predicts_the_proposal_alone():
    cfg = _model_cfg(18, (48, 64), 2)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    W, H = cfg.INPUT.TOPDOWN.INPUT_SIZE
    crops = torch.randint(0, 255, (2, 3, H, W), dtype=torch.uint8)
    model.flip_test = False
    with torch.no_grad():
        feats = model.backbone(model._normalize(crops))
        full = model.head(feats)
        model.head.test_output = "coarse"
        coarse = model.head(feats)
    torch.testing.assert_close(coarse["coords"], full["coarse_coords"])
    torch.testing.assert_close(coarse["sigma"], full["coarse_sigma"])
    assert not torch.equal(full["coords"], full["coarse_coords"])  # the decoder moved them (a little, untrained)
    assert "dec_coords" not in coarse
    cfg.MODEL.POSEUR.TEST_OUTPUT = "proposal"
    with pytest.raises(ValueError, match="MODEL.POSEUR.TEST_OUTPUT"):
        build_model(cfg)


def _authors_target_predictions(overrides, flip_test: bool, fuse: str = "mean"):
    """(keypoints decoded by d2pose, their true continuous positions), both (K, 2) float64, for a
    model that predicts exactly the authors' Poseur target (pixel index / size, no centring) built
    with `overrides`. Keypoint k is the crop pixel of value k + 1 in channel 0, at continuous position
    (column + 0.5, row + 0.5); a marker in channel 1 at column 0 tells the "model" whether it sees the
    mirrored crop, where, as a trained model would, it reports for keypoint k its mirror partner's
    pixel (the person's left k is the original's right). The crop frame is the image frame."""
    W, H = 48, 64
    cfg = _model_cfg(18, (W, H), 2)
    cfg.merge_from_list(list(overrides) + [
        "MODEL.PIXEL_MEAN", "[0.0, 0.0, 0.0]", "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]", "TEST.OKS_NMS_THRESH", "0.0",
        "TEST.KEYPOINT_FLIP", str(flip_test), "TEST.KEYPOINT_FLIP_FUSE", fuse])
    model = build_model(cfg).eval()
    K, flip = model.head.num_keypoints, model.flip_indices
    assert model.flip_test == flip_test and flip != list(range(K))
    rng = torch.Generator().manual_seed(0)
    cells = torch.cat([torch.tensor([0, W * H - 1]), torch.randperm(W * H - 2, generator=rng)[:K - 2] + 1])
    rows, cols = cells // W, cells % W
    crop = torch.zeros(1, 3, H, W)
    crop[0, 0, rows, cols] = torch.arange(1, K + 1, dtype=torch.float32)
    crop[0, 1, 0, 0] = 1.0

    def authors_target_model(images):  # stands in for backbone + head.forward
        mirrored = bool(images[0, 1, 0, W - 1] > 0)
        coords = torch.zeros(len(images), K, 2)
        for k in range(K):
            row, col = (images[0, 0] == (flip[k] if mirrored else k) + 1).nonzero()[0].tolist()
            coords[:, k] = torch.tensor([col / W, row / H])
        return dict(coords=coords, sigma=torch.full((len(images), K, 2), 0.1))

    model.backbone = torch.nn.Identity()
    model.head.forward = authors_target_model
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    inputs = dict(image=crop, crop_matrices_inv=identity, boxes=torch.tensor([[0.0, 0.0, W, H]]),
                  box_scores=torch.ones(1), height=H, width=W)
    with torch.no_grad():
        keypoints = model.inference([inputs])[0]["instances"].pred_keypoints[0, :, :2].double()
    return keypoints, torch.stack([cols, rows], -1).double() + 0.5


@pytest.mark.parametrize("flip_test,fuse", [(False, "mean"), (True, "mean"), (True, "official"), (True, "sigma")])
def test_converted_poseur_decodes_the_authors_targets_exactly(flip_test, fuse):
    """Checkpoints converted from the authors' Poseur predict pixel index / W (their targets, no
    centring): with the converter's codec overrides (REGRESSION_PIXEL_INDEX) d2pose decodes them to
    the true continuous positions, with and without flip test. Without the switch (the converter
    before 2026-12-07) y came out 0.5 crop px too small, and x too without flip test (with it, the
    continuous flip-back 1 - u cancelled x's half pixel)."""
    from d2pose_poseur.convert import CODEC_OVERRIDES

    ov = dict(zip(CODEC_OVERRIDES[0::2], CODEC_OVERRIDES[1::2]))
    assert ov == {"INPUT.TOPDOWN.CODEC": "regression", "INPUT.TOPDOWN.REGRESSION_CENTERED": "False",
                  "INPUT.TOPDOWN.REGRESSION_PIXEL_INDEX": "True"}
    keypoints, true = _authors_target_predictions(CODEC_OVERRIDES, flip_test, fuse)
    torch.testing.assert_close(keypoints, true, rtol=0, atol=1e-5)
    old = ["INPUT.TOPDOWN.CODEC", "regression", "INPUT.TOPDOWN.REGRESSION_CENTERED", "False",
           "INPUT.TOPDOWN.REGRESSION_PIXEL_INDEX", "False"]
    keypoints, true = _authors_target_predictions(old, flip_test, fuse)
    shift = torch.tensor([0.0 if flip_test else -0.5, -0.5], dtype=torch.float64)
    torch.testing.assert_close(keypoints - true, shift.expand_as(true), rtol=0, atol=1e-5)


def test_r50_poseur_params_and_flops_match_paper():
    """Paper Table 1e (R-50, 3 decoder layers, 256x192): 28.8M parameters, 4.48 GFLOPs. Counted as
    for RLE: backbone + head without the training-only flows; fvcore, one crop, eval, no flip."""
    from d2pose.modeling.complexity import topdown_complexity

    cfg = _model_cfg(50, (192, 256), 3, EMBED_DIM=256, NUM_HEADS=8, FFN_DIM=1024, NUM_POINTS=4)
    model = build_model(cfg)
    n, flops = topdown_complexity(model)
    assert abs(n - 28.8e6) / 28.8e6 < 0.03, n
    assert abs(flops - 4.48) / 4.48 < 0.03, flops
    # the training-only flows are not counted
    assert n == sum(p.numel() for p in model.backbone.parameters()) + sum(
        p.numel() for name, p in model.head.named_parameters() if not name.startswith(("refiner.enc_loss.", "refiner.dec_loss.")))


@pytest.mark.parametrize("channels_last", [False, True])
def test_multiscale_memory_matches_its_definition_with_gradients(channels_last):
    from d2pose.layers import multiscale_memory, sine_position_encoding_2d

    g = torch.Generator().manual_seed(0)
    C = 16
    maps = [torch.randn(2, C, h, w, generator=g, dtype=torch.float64) for h, w in [(8, 6), (4, 3), (2, 2)]]
    if channels_last:
        maps = [m.contiguous(memory_format=torch.channels_last) for m in maps]
    maps = [m.requires_grad_() for m in maps]
    level = torch.randn(3, C, generator=g, dtype=torch.float64, requires_grad=True)
    memory, shapes, starts = multiscale_memory(maps, level)
    ref = torch.cat([
        m.flatten(2).transpose(1, 2) + sine_position_encoding_2d(1, m.shape[2], m.shape[3], C // 2, dtype=m.dtype)
        .flatten(2).transpose(1, 2) + level[l] for l, m in enumerate(maps)], 1)
    torch.testing.assert_close(memory, ref, rtol=1e-12, atol=1e-12)
    assert shapes.tolist() == [[8, 6], [4, 3], [2, 2]] and starts.tolist() == [0, 48, 60]
    w = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((memory * w).sum(), maps + [level])
    ref_grads = torch.autograd.grad((ref * w).sum(), maps + [level])
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # inference: encodings + level embeddings summed once and cached, refreshed when the embeddings
    # change in place (an optimizer step, a checkpoint load)
    with torch.no_grad():
        torch.testing.assert_close(multiscale_memory(maps, level)[0], ref, rtol=1e-12, atol=1e-12)
        level.add_(1.0)
        torch.testing.assert_close(multiscale_memory(maps, level)[0], ref + 1.0, rtol=1e-12, atol=1e-12)


def test_offset_init_from_config():
    from detectron2.config import get_cfg

    from d2pose.config import add_d2pose_config
    from d2pose_poseur.refiner import offset_scales_from_config
    from d2pose_poseur.roi_heads import fpn_strides

    cfg = get_cfg()
    add_d2pose_config(cfg)
    assert offset_scales_from_config(cfg, [4, 8, 16, 32]) == [1.0, 1.0, 1.0, 1.0]  # Deformable-DETR's
    cfg.MODEL.POSEUR.OFFSET_INIT = "finest"
    assert offset_scales_from_config(cfg, [4, 8, 16, 32]) == [1.0, 0.5, 0.25, 0.125]
    assert fpn_strides(["p3", "p4", "p5"]) == [8, 16, 32]
    with pytest.raises(ValueError, match="not an FPN level"):
        fpn_strides(["res4"])
    cfg.MODEL.POSEUR.OFFSET_INIT = "image"
    with pytest.raises(ValueError, match="MODEL.POSEUR.OFFSET_INIT"):
        offset_scales_from_config(cfg, [4, 8])
