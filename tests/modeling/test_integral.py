"""d2pose.modeling.integral: soft-argmax over the whole map and local to a window around the peak."""
import pytest
import torch

from d2pose.modeling.integral import local_window_mask, soft_argmax, soft_argmax_on_grid
from d2pose.modeling.roi_regression import ROI_CODEC, check_soft_argmax_window, roi_integral_coords


def _grid(h, w):
    return torch.arange(w, dtype=torch.float64), torch.arange(h, dtype=torch.float64)


def test_soft_argmax_is_the_expectation_of_the_spatial_softmax():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    gx, gy = _grid(5, 7)
    p = torch.softmax(logits.flatten(2), -1).view_as(logits)
    ref = torch.stack([(p * gx).sum((2, 3)), (p * gy[:, None]).sum((2, 3))], -1)
    torch.testing.assert_close(soft_argmax_on_grid(logits, gx, gy), ref)


def test_window_as_large_as_the_map_is_the_whole_map_soft_argmax():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    gx, gy = _grid(6, 6)
    torch.testing.assert_close(soft_argmax_on_grid(logits, gx, gy, window=6), soft_argmax_on_grid(logits, gx, gy))


def test_local_soft_argmax_picks_the_stronger_of_two_modes():
    # two people's wrists in one ROI: peaks at x = 2 (stronger) and x = 12 on row 5
    logits = torch.full((1, 1, 11, 15), -20.0, dtype=torch.float64)
    logits[0, 0, 5, 2] = 5.0
    logits[0, 0, 5, 12] = 4.5
    gx, gy = _grid(11, 15)
    whole = soft_argmax_on_grid(logits, gx, gy)[0, 0]
    local = soft_argmax_on_grid(logits, gx, gy, window=2)[0, 0]
    assert 5.0 < whole[0] < 9.0  # between the two modes, on neither
    torch.testing.assert_close(local, torch.tensor([2.0, 5.0], dtype=torch.float64), atol=1e-6, rtol=0)


def test_local_soft_argmax_is_exact_by_hand_and_has_no_gradient_outside_the_window():
    logits = torch.zeros(1, 1, 7, 7, dtype=torch.float64)
    logits[0, 0, 3, 3] = 2.0
    logits[0, 0, 3, 4] = 1.0
    logits[0, 0, 0, 0] = 1.5  # outside the window of radius 1 around (3, 3)
    logits.requires_grad_(True)
    gx, gy = _grid(7, 7)
    out = soft_argmax_on_grid(logits, gx, gy, window=1)
    # the 3 x 3 window around (3, 3): columns 2, 3, 4; logit 2 at (3, 3), 1 at (3, 4), 0 elsewhere
    w = torch.exp(torch.tensor([[0.0, 0.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64))
    x_ref = ((w.sum(0) * torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64)).sum() / w.sum())
    y_ref = ((w.sum(1) * torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64)).sum() / w.sum())
    torch.testing.assert_close(out[0, 0], torch.stack([x_ref, y_ref]))
    out.sum().backward()
    mask = local_window_mask(logits, 1)[0, 0]
    assert mask.sum() == 9 and mask[3, 3] and not mask[0, 0]
    assert torch.all(logits.grad[0, 0][~mask] == 0) and torch.any(logits.grad[0, 0][mask] != 0)


def test_local_soft_argmax_gradcheck():
    torch.manual_seed(2)
    logits = torch.randn(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    gx, gy = _grid(6, 5)
    assert torch.autograd.gradcheck(lambda t: soft_argmax_on_grid(t, gx, gy, window=1), (logits,))


def test_local_soft_argmax_keeps_bfloat16_out_of_the_result():
    logits = torch.randn(2, 3, 8, 8).to(torch.bfloat16)
    gx, gy = (t.float() for t in _grid(8, 8))
    assert soft_argmax_on_grid(logits, gx, gy, window=2).dtype == torch.float32


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_window_must_be_a_nonnegative_integer(bad):
    with pytest.raises(ValueError, match="SOFT_ARGMAX_WINDOW"):
        check_soft_argmax_window(bad)
    with pytest.raises(ValueError):
        roi_integral_coords(8, 3, "deconv", window=bad)


@pytest.mark.parametrize("coords", ["integral", "deconv"])
def test_roi_branches_use_the_window(coords):
    torch.manual_seed(3)
    branch = roi_integral_coords(8, 3, coords, window=1)
    assert branch.window == 1
    x = torch.randn(2, 8, 7, 7)
    mu, logits = branch(x, x.mean((2, 3)), return_logits=True)
    torch.testing.assert_close(mu, soft_argmax(logits, ROI_CODEC, window=1))
