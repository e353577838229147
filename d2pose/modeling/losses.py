"""Keypoint losses: the regression losses from the maximum-likelihood view of RLE (Li et al., ICCV
2021, Sec. 3), and the heatmap MSE of the heatmap heads (`heatmap_mse_loss`).

`RLELoss` implements Eq. 8, residual log-likelihood estimation:
    L = -log Q(mu_bar) - log G_phi(mu_bar) + log sigma,   mu_bar = (mu_hat - mu_g) / sigma
per keypoint, with Q the unit Laplace (default) or Gaussian density per dimension and G_phi the
RealNVP flow over the 2-D residual; the constant log s of Eq. 6 is dropped. The Q term gives the
regression model gradients that do not depend on the flow (the "gradient shortcut").
Options: "dle" (direct likelihood estimation: only the flow, Eq. 5), "l1" (plain L1 on the
coordinates, the baseline), and `official_form=True`, the authors' code (`rlepose`'s RegressFlow and
RLELoss, and Poseur's head): there `nf_loss = log(sigma) - log_phi` broadcasts log_phi, shaped
(B, K, 1), against sigma's (B, K, 2), so -log G_phi counts once per coordinate (twice per keypoint),
like log sigma; log sigma counts again inside their -log Q = log(sigma sqrt(2 pi)) + |d| / (sqrt(2)
sigma). Per keypoint:
    paper:    sum_d log sigma_d -   log G(mu_bar) + sum_d -log Q(mu_bar_d)
    official: sum_d log sigma_d - 2 log G(mu_bar) + sum_d [log(sigma_d sqrt(2 pi)) + |d_d| / (sqrt(2) sigma_d)]
(`official_flow_term="per_keypoint"`: - 1 log G in the official line.)

Which of sigma's scales the loss prefers. The flow can absorb any rescaling of the residual: with
G_a(x) = a^2 G(a x) (a RealNVP represents it), replacing sigma by a sigma and G by G_a leaves mu_bar's
density terms unchanged except for a multiple of log a per keypoint: +2 log a from each sum_d log
sigma_d and -2 log a from each -log G_a. The paper's form (log sigma once, -log G once) nets 0, the
authors' (log sigma twice, -log G twice) nets 0 too, and only the residual term |d| / sigma is left,
which falls as sigma grows: sigma is not identified and drifts up while the flow sharpens
(measured on the synthetic recipes after 2300 iterations: median sigma 13x the median error).
`official_flow_term="per_keypoint"` (log sigma twice, -log G once) nets +2 log a: sigma has an
optimum of its own, about sqrt(2) |d| (measured: median sigma 1.03x the median error).
`tests/modeling/test_flows_losses.py` checks the three counts on a rescaled flow.

Normalisation: the sum over keypoints (weighted by target visibility) and dimensions, divided by
the number of instances in the batch (the official `size_average`).

Shape shorthand: R instances, K keypoints.
"""
import math
from typing import Dict

import torch
from torch import nn

from .flows import RealNVP

__all__ = ["RLELoss", "rle_loss_from_config", "OFFICIAL_FLOW_TERMS", "heatmap_kl_loss", "check_heatmap_kl_args", "heatmap_mse_loss"]

_LOG2 = math.log(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


#: values of MODEL.RLE.OFFICIAL_FLOW_TERM
OFFICIAL_FLOW_TERMS = ("per_coordinate", "per_keypoint")


def rle_loss_from_config(cfg, prior_mean: float = 0.0) -> "RLELoss":
    """An RLELoss (with a new flow) from MODEL.RLE.LOSS / BASE_DENSITY / OFFICIAL_FORM /
    OFFICIAL_FLOW_TERM, for every regression head."""
    r = cfg.MODEL.RLE
    return RLELoss(r.LOSS, r.BASE_DENSITY, r.OFFICIAL_FORM, prior_mean=prior_mean,
                   official_flow_term=r.OFFICIAL_FLOW_TERM)


class RLELoss(nn.Module):
    """RLE / DLE / L1 keypoint regression loss with its own RealNVP flow."""

    def __init__(self, kind: str = "rle", base: str = "laplace", official_form: bool = False,
                 flow: RealNVP = None, prior_mean: float = 0.0, official_flow_term: str = "per_coordinate"):
        """
        Args:
            kind: "rle" (Eq. 8), "dle" (flow only) or "l1".
            base: the preset density Q, "laplace" or "gaussian".
            official_form: the authors' code: log sigma and -log G counted once per coordinate in
                their flow term, log sigma again in their Laplace form.
            flow: the flow G_phi (a new RealNVP by default).
            prior_mean: mean of the new flow's prior (ignored when `flow` is given).
            official_flow_term: with `official_form`, -log G once per coordinate ("per_coordinate",
                the authors' broadcast) or once per keypoint ("per_keypoint"); see the module
                docstring for why the second identifies sigma and the first does not.
        """
        super().__init__()
        if kind not in ("rle", "dle", "l1"):
            raise ValueError(f"kind must be 'rle', 'dle' or 'l1', got {kind!r}")
        if base not in ("laplace", "gaussian"):
            raise ValueError(f"base must be 'laplace' or 'gaussian', got {base!r}")
        if official_flow_term not in OFFICIAL_FLOW_TERMS:
            raise ValueError(f"MODEL.RLE.OFFICIAL_FLOW_TERM must be one of {OFFICIAL_FLOW_TERMS}, "
                             f"got {official_flow_term!r}")
        self.kind = kind
        self.base = base
        self.official_form = official_form
        self.official_flow_term = official_flow_term
        self.flow = flow if flow is not None else (RealNVP(prior_mean=prior_mean) if kind != "l1" else None)

    def neg_log_q(self, pred: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """-log Q per dimension (R, K, 2) of the residual scaled by sigma."""
        d = (pred - target).abs()
        if self.official_form:
            return torch.log(sigma) + _LOG_SQRT_2PI + d / (math.sqrt(2.0) * sigma + 1e-9)
        u = d / sigma
        if self.base == "laplace":
            return _LOG2 + u
        return _LOG_SQRT_2PI + 0.5 * u * u

    def forward(self, pred: torch.Tensor, sigma: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """
        Args:
            pred: (R, K, 2) predicted normalised coordinates mu_hat.
            sigma: (R, K, 2) predicted scales in (0, 1).
            target: (R, K, 2) ground truth mu_g.
            weight: (R, K) or (R, K, 2) keypoint weights (0 for unlabelled or outside the crop).

        Returns:
            scalar loss: the sum of :meth:`terms`' weighted terms divided by R.
        """
        R = max(pred.shape[0], 1)
        t = self.terms(pred, sigma, target, weight)
        if self.kind == "l1":
            return t["l1"].sum() / R
        if self.kind == "dle":
            return t["flow"].sum() / R
        return (t["flow"] + t["q"].sum(-1)).sum() / R

    def terms(self, pred: torch.Tensor, sigma: torch.Tensor, target: torch.Tensor,
              weight: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The loss before its sum over the batch (arguments as :meth:`forward`, which sums these):
        the intermediate tensors are the ones the gradients flow through, so that tests can compare
        each with the authors' (tests/projects/rle/test_train_parity.py). Masked entries (weight 0)
        hold bar_mu 0 and residual 0.

        Returns:
            kind "l1": {"l1": (R, K, 2) weighted |mu_hat - mu_g|}. Otherwise {"bar_mu": (R, K, 2),
            "log_phi": (R, K) log G_phi(bar_mu), "nf": (R, K) sum_d log sigma_d - c log G_phi (c = 2
            in the authors' per-coordinate count, else 1), unweighted, "flow": (R, K) nf weighted},
            and for "rle" also "q": (R, K, 2) the weighted -log Q per dimension.
        """
        w = weight if weight.dim() == 3 else weight[..., None].expand_as(pred)
        # masked entries contribute exactly nothing, not even a NaN (0 * inf): an ROI's keypoints
        # outside its box, or unlabelled ones, can have huge residuals over tiny sigmas
        # outside the mask the target may hold anything (NaN / inf from a bad annotation included):
        # both sides are replaced there, so the residual is exactly 0
        valid = w > 0
        target = torch.where(valid, target, torch.zeros((), dtype=target.dtype, device=target.device))
        pred = torch.where(valid, pred, target.detach())
        if self.kind == "l1":
            return {"l1": (pred - target).abs() * w}
        sigma = torch.where(valid, sigma, torch.ones_like(sigma)).clamp_min(1e-9)
        bar_mu = (pred - target) / sigma
        log_phi = self.flow.log_prob(bar_mu.reshape(-1, 2)).view(pred.shape[:2])  # (R, K)
        w_kp = w[..., 0]
        # log sigma (both dims) - log G(mu_bar): once per keypoint in the paper, once per coordinate in
        # the authors' code (log_phi broadcast over the two dims, see the module docstring)
        flow_weight = 2.0 if self.official_form and self.official_flow_term == "per_coordinate" else 1.0
        nf = torch.log(sigma).sum(-1) - flow_weight * log_phi
        out = {"bar_mu": bar_mu, "log_phi": log_phi, "nf": nf, "flow": nf * w_kp}
        if self.kind == "rle":
            # paper: -log Q has no log sigma (it is in the flow term once); official: it has it again
            out["q"] = self.neg_log_q(pred, target, sigma) * w
        return out


def check_heatmap_kl_args(weight: float, sigma: float, has_logits: bool = True, coords_key: str = "") -> None:
    """Validates MODEL.RLE.INTEGRAL_HEATMAP_WEIGHT / _SIGMA for a head; `has_logits` False (an FC
    coordinate head) refuses a positive weight and names `coords_key`, the setting that adds logits."""
    if weight < 0 or sigma <= 0:
        raise ValueError(f"MODEL.RLE.INTEGRAL_HEATMAP_WEIGHT ({weight}) must be >= 0 and "
                         f"MODEL.RLE.INTEGRAL_HEATMAP_SIGMA ({sigma}) > 0")
    if weight > 0 and not has_logits:
        raise ValueError(f"MODEL.RLE.INTEGRAL_HEATMAP_WEIGHT > 0 needs logit maps: set {coords_key} to 'integral' "
                         f"or MODEL.RLE.INTEGRAL_HEATMAP_WEIGHT to 0")


def heatmap_kl_loss(logits: torch.Tensor, grid_x: torch.Tensor, grid_y: torch.Tensor, target: torch.Tensor,
                    weight: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Dense supervision of the logit maps behind a soft-argmax (a training-only regulariser in the
    spirit of DSNT's distribution regularisation, Nibali et al. 2018): KL(T || softmax(logits)) per
    keypoint, T a Gaussian of `sigma` grid cells around the target, discretised on the grid and
    normalised. It gives every cell a gradient where the soft-argmax alone only moves the mean.

    Args:
        logits: (R, K, h, w).
        grid_x (w,), grid_y (h,): the cells' coordinates, in the units of `target`.
        target: (R, K, 2) (x, y); weight: (R, K) or (R, K, 2) keypoint weights (0 = no loss).
        sigma: the Gaussian's standard deviation in grid cells (the grid's spacing per axis).

    Returns:
        the weighted sum over keypoints divided by R (RLELoss's normalisation).
    """
    R, K, h, w = logits.shape
    if weight.dim() == 3:
        weight = weight[..., 0]
    with torch.autocast(logits.device.type, enabled=False):
        log_p = torch.log_softmax(logits.float().flatten(2), dim=-1)  # (R, K, h w)
        step_x = (grid_x[1] - grid_x[0]).abs() if w > 1 else grid_x.new_tensor(1.0)
        step_y = (grid_y[1] - grid_y[0]).abs() if h > 1 else grid_y.new_tensor(1.0)
        target = target.float()
        dx = (grid_x.float() - target[..., :1]) / (sigma * step_x)  # (R, K, w)
        dy = (grid_y.float() - target[..., 1:]) / (sigma * step_y)  # (R, K, h)
        log_t = torch.log_softmax((-0.5 * (dy[..., :, None] ** 2 + dx[..., None, :] ** 2)).flatten(2), dim=-1)
        kl = (log_t.exp() * (log_t - log_p)).sum(-1)  # (R, K)
        return (kl * weight.float()).sum() / max(R, 1)


def heatmap_mse_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                     background_weight: float = 1.0) -> torch.Tensor:
    """MSE between predicted and target heatmaps with per-keypoint target weights, in float32.

    With the default `background_weight` 1 this is SimpleBaseline's / HRNet's / TransPose's
    `JointsMSELoss(use_target_weight=True)`: 0.5 * mean over crops, keypoints and cells of
    (w_k (pred - target))^2. `background_weight` < 1 scales the squared error of cells whose target
    is 0 (bottom-up heatmap losses weight the background down).

    Args:
        pred, target: (R, K, h, w).
        weight: (R, K) keypoint weights (0 = no loss for that map).
        background_weight: multiplier of the error where target == 0.

    Returns:
        the scalar loss (0 for an empty batch).
    """
    if pred.shape != target.shape:
        raise ValueError(f"heatmap_mse_loss: predicted heatmaps {tuple(pred.shape)} and targets "
                         f"{tuple(target.shape)} differ in shape (INPUT.TOPDOWN.HEATMAP_STRIDE vs the head's stride?)")
    if pred.numel() == 0:
        return pred.sum() * 0.0
    with torch.autocast(pred.device.type, enabled=False):
        pred, target = pred.float(), target.float()
        err = (pred - target) ** 2 * weight.float()[..., None, None] ** 2
        if background_weight != 1.0:
            err = err * torch.where(target > 0, 1.0, float(background_weight))
        return 0.5 * err.mean()
