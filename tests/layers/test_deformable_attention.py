"""Tests of the MSDeformAttn and EMSDA modules."""
import pytest
import torch

from d2pose.layers import EMSDA, MSDeformAttn, compiled_backends, ms_deform_attn, sampling_locations_from_offsets

BACKENDS = ["torch"] + (["cpp"] if "cpp" in compiled_backends() else [])
SHAPES = torch.tensor([[8, 6], [4, 3], [2, 2]])
STARTS = torch.tensor([0, 48, 60])
S = 64


def inputs(N=2, Lq=5, C=32, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(N, Lq, C, generator=g, dtype=dtype)
    value = torch.randn(N, S, C, generator=g, dtype=dtype)
    ref = torch.rand(N, Lq, 2, generator=g, dtype=dtype) * 0.2 + 0.4
    return query, value, ref


def test_deformable_init():
    m = MSDeformAttn(embed_dim=32, num_heads=8, num_levels=3, num_points=2)
    bias = m.sampling_offsets.bias.view(8, 3, 2, 2)
    torch.testing.assert_close(bias[0, 0, 0], torch.tensor([1.0, 0.0]))  # head 0 points along +x
    torch.testing.assert_close(bias[0, 0, 1], torch.tensor([2.0, 0.0]))  # scaled by point index + 1
    torch.testing.assert_close(bias[2, 1, 0], torch.tensor([0.0, 1.0]), atol=1e-6, rtol=0)  # head 2: +y
    torch.testing.assert_close(bias[1, 0, 0], torch.tensor([1.0, 1.0]))  # diagonal, max-abs normalised
    assert torch.count_nonzero(m.sampling_offsets.weight) == 0
    assert torch.count_nonzero(m.attention_weights.weight) == 0 and torch.count_nonzero(m.attention_weights.bias) == 0
    # uniform attention over L * P samples at init
    _, attn = m.sampling(torch.randn(1, 3, 32), torch.rand(1, 3, 2), SHAPES)
    torch.testing.assert_close(attn, torch.full_like(attn, 1.0 / 6))


def test_offset_scales_start_every_level_on_the_same_image_ring():
    """SHAPES are 8x6, 4x3, 2x2 cells (H, W) of one image: with offset_scales W_l / W_0 each level's
    initial sample k lies k + 1 finest-level cells from the reference."""
    scales = [1.0, 3 / 6, 2 / 6]
    m = EMSDA(embed_dim=32, num_heads=8, num_levels=3, num_points=2, offset_scales=scales)
    plain = EMSDA(embed_dim=32, num_heads=8, num_levels=3, num_points=2)
    torch.testing.assert_close(m.sampling_offsets.bias.view(8, 3, 2, 2),
                               plain.sampling_offsets.bias.view(8, 3, 2, 2) * torch.tensor(scales).view(1, 3, 1, 1))
    ref = torch.full((1, 1, 2), 0.5)
    loc, _ = m.sampling(torch.zeros(1, 1, 32), ref, SHAPES)  # (1, 1, M, L, P, 2)
    dx = (loc[0, 0, 0, :, :, 0] - 0.5) * 6  # head 0 points along +x: offsets in finest-level cells
    torch.testing.assert_close(dx, torch.tensor([[1.0, 2.0]] * 3))
    loc_plain, _ = plain.sampling(torch.zeros(1, 1, 32), ref, SHAPES)
    assert float((loc_plain[0, 0, 0, 2, 1, 0] - 0.5) * 6) == pytest.approx(6.0)  # 2 cells of a 2-wide map: off it
    with pytest.raises(ValueError, match="one per level"):
        EMSDA(embed_dim=32, num_heads=8, num_levels=3, num_points=2, offset_scales=[1.0, 0.5])
    with pytest.raises(ValueError, match="positive"):
        MSDeformAttn(embed_dim=32, num_heads=8, num_levels=3, num_points=2, offset_scales=[1.0, 0.0, 1.0])


def test_sampling_locations_forms():
    offsets = torch.zeros(1, 1, 1, 3, 2, 2)
    offsets[..., 0] = 2.0  # two pixels right on every level
    ref = torch.tensor([[[0.5, 0.5]]])
    loc = sampling_locations_from_offsets(ref, offsets, SHAPES)
    torch.testing.assert_close(loc[0, 0, 0, :, 0, 0], 0.5 + 2.0 / SHAPES[:, 1].float())
    # per-level points give the same result when repeated
    torch.testing.assert_close(sampling_locations_from_offsets(ref[:, :, None].expand(-1, -1, 3, -1), offsets, SHAPES), loc)
    # boxes: offsets scaled by half the box size over P
    box = torch.tensor([[[[0.5, 0.5, 0.4, 0.2]] * 3]])
    loc_box = sampling_locations_from_offsets(box, offsets, SHAPES)
    torch.testing.assert_close(loc_box[..., 0], torch.full_like(loc_box[..., 0], 0.5 + 2.0 / 2 * 0.4 * 0.5))
    with pytest.raises(ValueError, match="reference_points"):
        sampling_locations_from_offsets(torch.zeros(1, 1, 3, 3), offsets, SHAPES)


@pytest.mark.parametrize("cls", [MSDeformAttn, EMSDA])
def test_module_backends_agree_and_shapes(cls):
    torch.manual_seed(0)
    m = cls(embed_dim=32, num_heads=4, num_levels=3, num_points=2).double()
    with torch.no_grad():  # leave the init so samples move around
        m.sampling_offsets.weight.normal_(0, 0.1)
        m.attention_weights.weight.normal_(0, 0.1)
    query, value, ref = inputs()
    outs = []
    for backend in BACKENDS:
        m.backend = backend
        out, loc, attn = m(query, ref, value, SHAPES, STARTS, return_sampling=True)
        assert out.shape == (2, 5, 32) and loc.shape == (2, 5, 4, 3, 2, 2) and attn.shape == (2, 5, 4, 3, 2)
        out.sum().backward()
        outs.append((out.detach(), [p.grad.clone() for p in m.parameters()]))
        m.zero_grad()
    for out, grads in outs[1:]:
        torch.testing.assert_close(out, outs[0][0])
        for g, g0 in zip(grads, outs[0][1]):
            torch.testing.assert_close(g, g0)
    assert all(g.abs().sum() > 0 for g in outs[0][1])  # every parameter receives gradient


@pytest.mark.parametrize("cls", [MSDeformAttn, EMSDA])
def test_padding_mask_hides_tokens(cls):
    torch.manual_seed(0)
    m = cls(embed_dim=32, num_heads=4, num_levels=3, num_points=2).double()
    query, value, ref = inputs()
    mask = torch.zeros(2, S, dtype=torch.bool)
    mask[:, 40:48] = True  # last row of the first level, and...
    mask[:, 60:] = True  # ...the whole last level
    out = m(query, ref, value, SHAPES, STARTS, padding_mask=mask)
    poisoned = value.clone()
    poisoned[mask] = 1e6
    torch.testing.assert_close(m(query, ref, poisoned, SHAPES, STARTS, padding_mask=mask), out)
    with pytest.raises(ValueError, match="padding_mask"):
        m(query, ref, value, SHAPES, STARTS, padding_mask=mask[:, :10])


@pytest.mark.parametrize("backend", BACKENDS)
def test_emsda_equals_project_then_sample(backend):
    """Sampling then projecting per head equals projecting per head then sampling (MSDA) when
    every sample lies inside its map (the bilinear weights then sum to one, so the bias commutes)."""
    torch.manual_seed(0)
    C, M = 32, 4
    m = EMSDA(embed_dim=C, num_heads=M, num_levels=3, num_points=2, backend=backend).double()
    with torch.no_grad():
        m.sampling_offsets.weight.normal_(0, 0.01)
        m.sampling_offsets.bias.mul_(0.02)
        m.attention_weights.weight.normal_(0, 0.2)
        m.value_proj_bias.normal_()
    query, value, ref = inputs(C=C)
    out, loc, attn = m(query, ref, value, SHAPES, STARTS, return_sampling=True)
    # every sample strictly inside: all four corners exist on every level
    half_px = 0.5 / SHAPES.flip(-1).double()  # (L, 2) as (x, y)
    assert ((loc >= half_px[None, None, None, :, None]) & (loc <= 1 - half_px[None, None, None, :, None])).all()
    # project first: (N, S, C) -> (N, S, M, C/M)
    projected = torch.einsum("nsc,mcd->nsmd", value, m.value_proj_weight) + m.value_proj_bias
    expected = m.output_proj(ms_deform_attn(projected, SHAPES, STARTS, loc, attn, backend="torch"))
    torch.testing.assert_close(out, expected)


def test_emsda_official_init_and_errors():
    m = EMSDA(embed_dim=32, num_heads=4, num_levels=3, num_points=2, init="official")
    assert torch.count_nonzero(m.sampling_offsets.weight) > 0  # xavier overwrote the zero init
    assert m.value_proj_weight.shape == (4, 32, 8) and m.value_proj_bias.shape == (4, 8)
    with pytest.raises(ValueError, match="init"):
        EMSDA(init="other")
    with pytest.raises(ValueError, match="divisible"):
        EMSDA(embed_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="backend"):
        MSDeformAttn(backend="gpu")
    with pytest.raises(ValueError, match="levels"):
        MSDeformAttn(embed_dim=32, num_heads=4, num_levels=4)(torch.randn(1, 2, 32), torch.rand(1, 2, 2),
                                                                torch.randn(1, S, 32), SHAPES, STARTS)
