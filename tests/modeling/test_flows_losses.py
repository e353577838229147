"""Tests of the RealNVP flow and the RLE losses (hand-computed values for both forms)."""
import math

import pytest
import torch

from d2pose.layers import NormalizedLinear
from d2pose.modeling.flows import RealNVP
from d2pose.codecs import sigma_to_score
from d2pose.modeling.losses import RLELoss


def _random_flow(seed=0, scale=0.5):
    torch.manual_seed(seed)
    flow = RealNVP().double()
    with torch.no_grad():  # far from the near-identity init, so the test means something
        for p in flow.parameters():
            p.normal_(0, scale)
    return flow


def test_flow_structure():
    flow = RealNVP()
    assert flow.mask.tolist() == [[0, 1], [1, 0]] * 3
    assert isinstance(flow.s[0][-1], torch.nn.Tanh) and not isinstance(flow.t[0][-1], torch.nn.Tanh)
    assert [m.out_features for m in flow.s[0] if isinstance(m, torch.nn.Linear)] == [64, 64, 2]
    assert "prior_mean" not in flow.state_dict()  # state_dict matches RLE's (mask, s, t)


def test_flow_invertible():
    flow = _random_flow()
    x = torch.randn(64, 2, dtype=torch.float64)
    z, _ = flow.inverse_transform(x)
    torch.testing.assert_close(flow.forward_transform(z), x)


def test_log_det_matches_autograd_jacobian():
    flow = _random_flow(1)
    for x in torch.randn(5, 2, dtype=torch.float64):
        J = torch.autograd.functional.jacobian(lambda v: flow.inverse_transform(v[None])[0][0], x)
        _, log_det = flow.inverse_transform(x[None])
        assert log_det.item() == pytest.approx(torch.linalg.slogdet(J)[1].item(), abs=1e-7)


def test_log_prob_is_a_density():
    flow = _random_flow(2, scale=0.15)
    # Riemann sum of exp(log_prob) over a wide grid integrates to ~1
    g = torch.linspace(-12, 12, 481, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    p = flow.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).exp()
    assert p.sum().item() * (g[1] - g[0]).item() ** 2 == pytest.approx(1.0, abs=2e-2)
    z = torch.zeros(1, 2, dtype=torch.float64)
    assert RealNVP().double().prior_log_prob(z).item() == pytest.approx(-math.log(2 * math.pi))


def _case():
    pred = torch.tensor([[[0.5, 0.4], [0.1, 0.9]]], dtype=torch.float64)
    target = torch.tensor([[[0.6, 0.4], [0.3, 0.5]]], dtype=torch.float64)
    sigma = torch.tensor([[[0.2, 0.1], [0.5, 0.25]]], dtype=torch.float64)
    weight = torch.tensor([[1.0, 0.0]], dtype=torch.float64)  # second keypoint unlabelled
    return pred, sigma, target, weight


def test_rle_loss_paper_form_hand_computed():
    pred, sigma, target, weight = _case()
    loss = RLELoss("rle", "laplace").double()
    log_g = loss.flow.log_prob(((pred - target) / sigma)[0, :1]).item()
    # keypoint 0: log 0.2 + log 0.1 - log G + sum_d (log 2 + |d| / sigma)
    expected = math.log(0.2) + math.log(0.1) - log_g + 2 * math.log(2) + 0.1 / 0.2 + 0.0 / 0.1
    assert loss(pred, sigma, target, weight).item() == pytest.approx(expected, abs=1e-12)
    gauss = RLELoss("rle", "gaussian", flow=loss.flow).double()
    expected_g = math.log(0.2) + math.log(0.1) - log_g + 2 * 0.5 * math.log(2 * math.pi) + 0.5 * (0.1 / 0.2) ** 2
    assert gauss(pred, sigma, target, weight).item() == pytest.approx(expected_g, abs=1e-12)


def test_rle_loss_official_form_hand_computed():
    pred, sigma, target, weight = _case()
    loss = RLELoss("rle", official_form=True).double()
    log_g = loss.flow.log_prob(((pred - target) / sigma)[0, :1]).item()
    # per coordinate: log sigma_d - log G (log_phi broadcast over x and y), then
    # log(sigma_d sqrt(2 pi)) + |d_d| / (sqrt 2 sigma_d): -log G twice, log sigma twice per coordinate
    expected = (math.log(0.2) - log_g + math.log(0.1) - log_g
                + math.log(0.2 * math.sqrt(2 * math.pi)) + 0.1 / (math.sqrt(2) * 0.2 + 1e-9)
                + math.log(0.1 * math.sqrt(2 * math.pi)) + 0.0)
    assert loss(pred, sigma, target, weight).item() == pytest.approx(expected, abs=1e-9)


def test_rle_loss_official_form_equals_the_authors_broadcast():
    """The authors' computation, written with their shapes (rlepose RegressFlow + RLELoss): log_phi
    (B, K, 1) broadcast against log sigma (B, K, 2); nf_loss weighted by the x weight; the sum over
    everything divided by the batch size."""
    torch.manual_seed(0)
    B, K = 5, 17
    pred, target = torch.rand(B, K, 2, dtype=torch.float64), torch.rand(B, K, 2, dtype=torch.float64)
    sigma = torch.rand(B, K, 2, dtype=torch.float64) * 0.5 + 0.01
    weight = (torch.rand(B, K, 1) > 0.3).double().expand(B, K, 2)
    loss = RLELoss("rle", official_form=True).double()
    bar_mu = (pred - target) / sigma
    log_phi = loss.flow.log_prob(bar_mu.reshape(-1, 2)).reshape(B, K, 1)
    nf_loss = (torch.log(sigma) - log_phi) * weight[:, :, :1]
    amp = 1 / math.sqrt(2 * math.pi)
    q_logprob = (torch.log(sigma / amp) + (target - pred).abs() / (math.sqrt(2) * sigma + 1e-9)) * weight
    authors = (nf_loss + q_logprob).sum() / B
    assert loss(pred, sigma, target, weight).item() == pytest.approx(authors.item(), rel=1e-12)


def test_dle_and_l1_and_normalisation():
    pred, sigma, target, weight = _case()
    dle = RLELoss("dle").double()
    log_g = dle.flow.log_prob(((pred - target) / sigma)[0, :1]).item()
    assert dle(pred, sigma, target, weight).item() == pytest.approx(math.log(0.02) - log_g, abs=1e-12)
    l1 = RLELoss("l1")
    assert l1(pred, sigma, target, weight).item() == pytest.approx(0.1, abs=1e-7)
    # divided by the number of instances
    two = [torch.cat([t, t]) for t in (pred, sigma, target, weight)]
    assert l1(*two).item() == pytest.approx(0.1, abs=1e-7)
    with pytest.raises(ValueError, match="kind"):
        RLELoss("l2")


def test_rle_loss_trains_flow_and_regressor():
    pred, sigma, target, weight = _case()
    pred = pred.clone().requires_grad_(True)
    sigma = sigma.clone().requires_grad_(True)
    loss = RLELoss().double()
    loss(pred, sigma, target, weight).backward()
    assert pred.grad[0, 0].abs().sum() > 0 and pred.grad[0, 1].abs().sum() == 0  # masked keypoint
    assert all(p.grad is not None for p in loss.flow.parameters())


def test_scores_and_normalized_linear():
    sigma = torch.tensor([[[0.1, 0.3]]])
    assert sigma_to_score(sigma).item() == pytest.approx(0.8)
    assert sigma_to_score(sigma, "poseur").item() == pytest.approx((1 - math.exp(-2)) * (1 - math.exp(-0.2 / 0.3)))
    layer = NormalizedLinear(4, 3)
    x = torch.randn(2, 4)
    torch.testing.assert_close(layer(3.0 * x), layer(x))  # scale invariant
    torch.testing.assert_close(layer(x), layer.linear(x / x.norm(dim=-1, keepdim=True)))


def test_rle_loss_ignores_masked_entries_even_when_they_are_extreme():
    from d2pose.modeling.losses import RLELoss

    torch.manual_seed(0)
    for kind, official in [("rle", False), ("rle", True), ("dle", False), ("l1", False)]:
        loss = RLELoss(kind, official_form=official)
        pred, target = torch.rand(3, 5, 2), torch.rand(3, 5, 2)
        sigma = torch.rand(3, 5, 2) * 0.5 + 0.1
        weight = torch.ones(3, 5)
        weight[:, 2] = 0
        ref = loss(pred, sigma, target, weight)
        # the masked keypoint blows up (huge residual, sigma underflowing to 0): same loss, finite grads
        pred2, sigma2 = pred.clone(), sigma.clone()
        pred2[:, 2] = 1e30
        sigma2[:, 2] = 0.0
        pred2.requires_grad_()
        sigma2.requires_grad_()
        out = loss(pred2, sigma2, target, weight)
        torch.testing.assert_close(out, ref)
        out.backward()
        assert torch.isfinite(pred2.grad).all() and (pred2.grad[:, 2] == 0).all()
        if kind != "l1":  # L1 does not use sigma
            assert torch.isfinite(sigma2.grad).all() and (sigma2.grad[:, 2] == 0).all()
        # NaN / inf targets under the mask (a bad annotation): the same loss, finite gradients
        target3, pred3 = target.clone(), pred.clone().requires_grad_()
        target3[0, 2] = float("nan")
        target3[1, 2, 0] = float("inf")
        out = loss(pred3, sigma, target3, weight)
        torch.testing.assert_close(out, ref)
        out.backward()
        assert torch.isfinite(pred3.grad).all() and (pred3.grad[:, 2] == 0).all()


def test_heatmap_kl_loss_hand_computed_and_minimised_at_the_gaussian():
    from d2pose.modeling.losses import heatmap_kl_loss

    torch.manual_seed(0)
    gx = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9])  # 5 columns, spacing 0.2
    gy = torch.tensor([0.125, 0.375, 0.625, 0.875])  # 4 rows, spacing 0.25
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    target = torch.rand(2, 3, 2)
    weight = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.5]])
    sigma = 1.5
    loss = heatmap_kl_loss(logits, gx, gy, target, weight, sigma)
    # by hand, cell by cell
    ref = 0.0
    for r in range(2):
        for k in range(3):
            t = torch.tensor([[math.exp(-0.5 * (((float(x) - target[r, k, 0]) / (sigma * 0.2)) ** 2
                                                + ((float(y) - target[r, k, 1]) / (sigma * 0.25)) ** 2))
                               for x in gx] for y in gy])
            t = t / t.sum()
            p = torch.softmax(logits[r, k].flatten(), 0).view(4, 5)
            ref += weight[r, k] * (t * (t.log() - p.log())).sum()
    torch.testing.assert_close(loss, ref / 2, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert logits.grad[0, 1].abs().max() == 0  # a weight-0 keypoint has no gradient
    # minimised (= 0) when the logits are the Gaussian's log density; (R, K, 2) weights accepted
    with torch.no_grad():
        dx = (gx - target[..., :1]) / (sigma * 0.2)
        dy = (gy - target[..., 1:]) / (sigma * 0.25)
        ideal = -0.5 * (dy[..., :, None] ** 2 + dx[..., None, :] ** 2) + 3.0  # any offset
    assert heatmap_kl_loss(ideal, gx, gy, target, weight[..., None].expand(2, 3, 2), sigma).abs() < 1e-5
    assert heatmap_kl_loss(ideal, gx, gy, target, weight, sigma) < loss


class _RescaledFlow(torch.nn.Module):
    """G_a(x) = a^2 G(a x): the flow of the residual when sigma is multiplied by a (a 2-D density)."""

    def __init__(self, flow, a):
        super().__init__()
        self.flow, self.a = flow, a

    def log_prob(self, x):
        return self.flow.log_prob(self.a * x) + 2 * math.log(self.a)


@pytest.mark.parametrize("official, term, per_log_a", [(False, "per_coordinate", 0.0), (True, "per_coordinate", 0.0),
                                                       (True, "per_keypoint", 2.0)])
def test_sigma_scale_against_the_flow(official, term, per_log_a):
    """sigma -> a sigma with the flow rescaled to match: the paper's and the authors' counts change the
    loss only through the residual term |d| / sigma (sigma is not identified); -log G once per
    keypoint adds +2 log a per keypoint (sigma has an optimum of its own)."""
    torch.manual_seed(0)
    R, K, a = 4, 5, 3.0
    pred, target = torch.rand(R, K, 2, dtype=torch.float64), torch.rand(R, K, 2, dtype=torch.float64)
    sigma = torch.rand(R, K, 2, dtype=torch.float64) * 0.3 + 0.05
    weight = torch.ones(R, K, dtype=torch.float64)
    loss = RLELoss("rle", official_form=official, official_flow_term=term).double()
    scaled = RLELoss("rle", official_form=official, official_flow_term=term, flow=_RescaledFlow(loss.flow, a)).double()
    d = (pred - target).abs()
    scale = math.sqrt(2) if official else 1.0
    residual = ((d / (scale * a * sigma + 1e-9 * official) - d / (scale * sigma + 1e-9 * official)).sum() / R).item()
    change = (scaled(pred, a * sigma, target, weight) - loss(pred, sigma, target, weight)).item()
    assert residual < 0  # a larger sigma always lowers the residual term
    assert (change - residual) / (K * math.log(a)) == pytest.approx(per_log_a, abs=1e-9)


def test_official_flow_term_is_validated():
    with pytest.raises(ValueError, match="MODEL.RLE.OFFICIAL_FLOW_TERM"):
        RLELoss("rle", official_form=True, official_flow_term="twice")


@pytest.mark.parametrize("kind, official, term", [
    ("rle", False, "per_coordinate"), ("rle", True, "per_coordinate"), ("rle", True, "per_keypoint"),
    ("dle", True, "per_coordinate"), ("l1", False, "per_coordinate")])
def test_rle_loss_terms_sum_to_the_loss(kind, official, term):
    """`RLELoss.terms` (the pieces the training-parity tests compare) are exactly what forward sums."""
    loss = RLELoss(kind, official_form=official, flow=_random_flow() if kind != "l1" else None,
                   official_flow_term=term).double()
    g = torch.Generator().manual_seed(3)
    pred = torch.randn(3, 5, 2, generator=g, dtype=torch.double)
    target = torch.randn(3, 5, 2, generator=g, dtype=torch.double)
    sigma = torch.rand(3, 5, 2, generator=g, dtype=torch.double) * 0.9 + 0.05
    weight = (torch.rand(3, 5, generator=g) > 0.3).double()
    t = loss.terms(pred, sigma, target, weight)
    total = loss(pred, sigma, target, weight)
    if kind == "l1":
        assert set(t) == {"l1"} and torch.equal(total, t["l1"].sum() / 3)
        return
    assert torch.equal(t["flow"], t["nf"] * weight)
    count = 2.0 if official and term == "per_coordinate" else 1.0
    assert torch.allclose(t["nf"], torch.log(sigma.where(weight[..., None] > 0, 1.0)).sum(-1) - count * t["log_phi"])
    expected = t["flow"].sum() + (t["q"].sum() if kind == "rle" else 0.0)
    assert ("q" in t) == (kind == "rle") and torch.allclose(total, expected / 3)
