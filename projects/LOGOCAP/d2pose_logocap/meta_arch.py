"""LOGO-CAP (Xue et al., CVPR 2022): bottom-up pose estimation by local-global contextual adaptation.

    backbone (HRNet, branches fused at stride 4)
      -> heatmap head: K keypoint heatmaps + 1 centre heatmap
      -> offset head: centre-to-keypoint offsets (2K)
      -> embedding head: D-dim keypoint embeddings
    initial poses: centre NMS on the upsampled centre map, + offsets  (the "center_offset" codec)
    local: keypoint expansion maps (S x S meshes, spacing sigma_k / min sigma) -> embeddings sampled
           on them -> KAM network -> keypoint attraction maps (P, K, S, S), clamped to [0, 1]
    global: each keypoint's (2R + 1)^2 window of its (upsampled) heatmap x a Gaussian prior,
           convolved with its own KAM / S^2 (a dynamic kernel, applied at 1 px spacing)
    final keypoint: top-2 responses blended; keypoint score x centre value; pose score = mean;
    pose NMS; at most MAX_PEOPLE people; `Instances.scores`: the pose scores clipped to [0, 1]
    (> 0 by construction, above 1 only with heatmap or centre values above 1)

The offset head predicts (cell - keypoint) / stride, the parametrisation of the authors' code, so
their checkpoints load unchanged; the model turns it into d2pose's offset fields (keypoint - cell
centre, input pixels; d2pose.codecs.center_offset) right after the head. The local and global sampling
steps use the authors' pixel-index coordinates (`sample_bilinear`); results are continuous
coordinates (+0.5), as everywhere in d2pose.

Training (paper Sec. 3.2, the authors' code): heatmap MSE + offset smooth-L1 (weight 1 / sqrt(person
area in input pixels)) on the dense targets of `BottomUpDatasetMapper` (INPUT.BOTTOMUP.PROTOCOL
"dekr": the authors' targets exactly); the decoder runs on the detached predicted centres and
offsets, each candidate is matched to the ground-truth person with the best mesh OKS, kept when its
best pose in the mesh reaches MATCH_OKS, and trains the KAM (MSE against the per-cell OKS) and the
adapted heatmaps (MSE against a Gaussian at the ground truth), both weighted per keypoint by how much
the mesh improves on its centre cell. `training_outputs` returns every intermediate of that forward,
`training_losses` the four terms (tests/projects/logocap/test_train_parity.py compares both with the
authors' training step).
"""
import logging
from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from torch import nn

from d2pose.engine.precision import inference_precision
from d2pose.codecs.center_offset import CenterOffsetCodec, flip_fuse_bottomup, heatmap_foreground
from d2pose.modeling.build import check_pipeline
from d2pose.modeling.keypoint_sampling import (keypoint_expansion, sample_bilinear, sample_bilinear_per_channel,
                                               sample_bilinear_windows)
from d2pose.modeling.meta_arch.bottomup_estimator import BottomUpPoseEstimator
from d2pose.structures.keypoints import keypoint_similarities, masked_keypoint_mean
from d2pose.utils.events import log_training_metrics

from .kam import KAMNet

__all__ = ["LOGOCAP", "dynamic_window_conv", "mesh_oks"]

logger = logging.getLogger(__name__)


def _conv_bn_relu(c_in: int, c_out: int) -> List[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def dynamic_window_conv(windows: torch.Tensor, kams: torch.Tensor) -> torch.Tensor:
    """Each (P, K) window (P, K, L, L) convolved (true convolution, zero padding, same size) with its
    own kernel kams (P, K, S, S) / S^2 -> (P, K, L, L): one grouped convolution."""
    P, K, L, _ = windows.shape
    S = kams.shape[-1]
    kernel = torch.flip(kams / float(S * S), [2, 3]).reshape(P * K, 1, S, S)
    out = F.conv2d(windows.reshape(1, P * K, L, L), kernel.to(windows.dtype), padding=S // 2, groups=P * K)
    return out.reshape(P, K, L, L)


def mesh_oks(meshes: torch.Tensor, gt: torch.Tensor, areas: torch.Tensor, sigmas: torch.Tensor):
    """Per-cell OKS of candidate meshes against ground truth.

    meshes (C, S, S, K, 2), gt (G, K, 3) (x, y, visibility), areas (G,), sigmas (K,) (already scaled)
    -> parts (C, S, S, G, K) keypoint similarities (0 where unlabelled), person (C, S, S, G) mean
    over labelled keypoints, best (C, G) mean over labelled keypoints of each keypoint's best cell.
    """
    C, S, _, K, _ = meshes.shape
    vis = gt[..., 2] > 0  # (G, K)
    # the authors' convention: sigmas used as given, the area as it is, the denominator at least 1e-6
    similarities = keypoint_similarities(meshes.reshape(-1, K, 2), gt, sigmas, areas, sigma_factor=1.0, eps=0.0,
                                         min_denominator=1e-6)  # (C S S, G, K)
    parts = similarities.reshape(C, S, S, -1, K) * vis
    person, n = masked_keypoint_mean(parts, vis)  # (C, S, S, G), (G,)
    best = parts.amax(dim=(1, 2)).mul(vis).sum(-1) / n.clamp_min(1)
    return parts, person, best


@META_ARCH_REGISTRY.register()
class LOGOCAP(BottomUpPoseEstimator):
    """LOGO-CAP; see the module docstring. Heads and KAM network sized by MODEL.LOGOCAP."""

    @configurable
    def __init__(self, *, backbone: nn.Module, in_feature: str = "s4", stride: int = 4, heatmap_channels: int = 32,
                 offset_channels: int = 256, embedding_dim: int = 64, kam_channels=(512, 256, 128),
                 kam_attentive=(False, True, False), kam_num_affine: int = 20, topk_centers: int = 30,
                 nms_kernel: int = 3, center_thresh: float = 0.01, kem_size: int = 11, window_radius: int = 48,
                 prior_sigma: float = 16.0, top1_weight: float = 0.75, adaptation: str = "full",
                 loss_weights: Dict[str, float] = None, heatmap_bg_weight: float = 0.1,
                 kam_oks_sigma_scale: float = 2.0, output_heatmap_sigma: float = 4.0, match_oks: float = 0.5,
                 max_kept: int = 0,
                 **kwargs):
        super().__init__(backbone=backbone, **kwargs)
        if adaptation not in ("full", "partial", "none"):
            raise ValueError(f"MODEL.LOGOCAP.ADAPTATION must be 'full', 'partial' or 'none', got {adaptation!r}")
        if kem_size % 2 != 1:
            raise ValueError(f"MODEL.LOGOCAP.KEM_SIZE must be odd, got {kem_size}")
        K = self.num_keypoints
        c_in = backbone.output_shape()[in_feature].channels
        self.in_feature = in_feature
        self.stride = int(stride)
        self.heatmap_head = nn.Sequential(*_conv_bn_relu(c_in, heatmap_channels), nn.Conv2d(heatmap_channels, K + 1, 1))
        self.offset_head = nn.Sequential(*_conv_bn_relu(c_in, offset_channels), nn.Conv2d(offset_channels, 2 * K, 1))
        self.embedding_head = nn.Sequential(*_conv_bn_relu(c_in, embedding_dim))
        self.kam_net = KAMNet(K, embedding_dim, kam_channels, kam_attentive, kam_num_affine)
        self.topk_centers = int(topk_centers)
        self.nms_kernel = int(nms_kernel)
        # decodes the initial poses (the head's targets come from the data mapper's codec)
        self.codec = CenterOffsetCodec(stride=self.stride, topk=self.topk_centers, nms_kernel=self.nms_kernel)
        self.center_thresh = float(center_thresh)
        self.kem_size = int(kem_size)
        self.window_radius = int(window_radius)
        self.prior_sigma = float(prior_sigma)
        self.top1_weight = float(top1_weight)
        self.adaptation = adaptation
        self.loss_weights = {**dict(heatmap=1.0, offset=0.01, kam=0.01, output_heatmap=1.0), **(loss_weights or {})}
        self.heatmap_bg_weight = float(heatmap_bg_weight)
        self.kam_oks_sigma_scale = float(kam_oks_sigma_scale)
        self.output_heatmap_sigma = float(output_heatmap_sigma)
        self.match_oks = float(match_oks)
        self.max_kept = int(max_kept)
        self.register_buffer("sigma_values", torch.tensor(self.sigmas, dtype=torch.float32), False)

    @classmethod
    def from_config(cls, cfg):
        check_pipeline(cfg, "LOGOCAP", "bottomup", "trains on whole images")
        names = list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN)
        if not names:
            raise ValueError("LOGOCAP needs a dataset (DATASETS.TRAIN or DATASETS.TEST) whose metadata holds "
                             "keypoint_oks_sigmas and keypoint_flip_indices")
        meta = MetadataCatalog.get(names[0])
        sigmas = meta.get("keypoint_oks_sigmas")
        if not sigmas:
            raise ValueError(f"LOGOCAP: dataset {names[0]!r} has no keypoint_oks_sigmas in its metadata (the keypoint "
                             f"expansion maps are scaled by them)")
        backbone = build_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
        c = cfg.MODEL.LOGOCAP
        if c.IN_FEATURE not in backbone.output_shape():
            raise ValueError(f"MODEL.LOGOCAP.IN_FEATURE {c.IN_FEATURE!r} is not an output of backbone "
                             f"{cfg.MODEL.BACKBONE.NAME!r} ({sorted(backbone.output_shape())})")
        stride = backbone.output_shape()[c.IN_FEATURE].stride
        if stride != cfg.INPUT.BOTTOMUP.STRIDE:
            raise ValueError(f"INPUT.BOTTOMUP.STRIDE {cfg.INPUT.BOTTOMUP.STRIDE} differs from the stride {stride} of "
                             f"MODEL.LOGOCAP.IN_FEATURE {c.IN_FEATURE!r}")
        div = max(64, int(getattr(backbone, "size_divisibility", 0) or 0))
        return dict(
            backbone=backbone, pixel_mean=cfg.MODEL.PIXEL_MEAN, pixel_std=cfg.MODEL.PIXEL_STD,
            flip_indices=meta.get("keypoint_flip_indices"), sigmas=sigmas, flip_test=cfg.TEST.KEYPOINT_FLIP,
            input_format=cfg.INPUT.FORMAT, size_divisibility=div, max_people=c.MAX_PEOPLE,
            pose_nms_thresh=c.POSE_NMS_THRESH, pose_nms_joints=c.POSE_NMS_JOINTS,
            inference_dtype=inference_precision(cfg).dtype, in_feature=c.IN_FEATURE, stride=stride,
            heatmap_channels=c.HEATMAP_CHANNELS, offset_channels=c.OFFSET_CHANNELS, embedding_dim=c.EMBEDDING_DIM,
            kam_channels=list(c.KAM_CHANNELS), kam_attentive=[bool(a) for a in c.KAM_ATTENTIVE_NORM],
            kam_num_affine=c.KAM_NUM_AFFINE, topk_centers=c.TOPK_CENTERS, nms_kernel=c.NMS_KERNEL,
            center_thresh=c.CENTER_THRESH, kem_size=c.KEM_SIZE, window_radius=c.WINDOW_RADIUS,
            prior_sigma=c.PRIOR_SIGMA, top1_weight=c.TOP1_WEIGHT, adaptation=c.ADAPTATION,
            loss_weights=dict(heatmap=c.HEATMAP_LOSS_WEIGHT, offset=c.OFFSET_LOSS_WEIGHT, kam=c.KAM_LOSS_WEIGHT,
                              output_heatmap=c.OUTPUT_HEATMAP_LOSS_WEIGHT),
            heatmap_bg_weight=c.HEATMAP_BG_WEIGHT, kam_oks_sigma_scale=c.KAM_OKS_SIGMA_SCALE,
            output_heatmap_sigma=c.OUTPUT_HEATMAP_SIGMA, match_oks=c.MATCH_OKS, max_kept=c.MAX_KEPT,
        )

    # -- network -----------------------------------------------------------------------------
    def network(self, images: torch.Tensor, embeddings: bool = True) -> Dict[str, torch.Tensor]:
        """Dense outputs: "features" (N, C, h, w), "heatmaps" (N, K + 1, h, w), "raw_offsets" (the
        head's (cell - keypoint) / stride), "offsets" (keypoint - cell centre, input pixels),
        "embedding" (N, D, h, w)."""
        feats = self.backbone(images)[self.in_feature]
        if not self.training:
            heatmaps, raw = self._dense_heads_eval(feats)
            out = dict(features=feats, heatmaps=heatmaps, raw_offsets=raw, offsets=-self.stride * raw)
            if embeddings:
                out["embedding"] = self.embeddings_eval(feats)
            return out
        raw = self.offset_head(feats)
        out = dict(features=feats, heatmaps=self.heatmap_head(feats), raw_offsets=raw, offsets=-self.stride * raw)
        if embeddings:
            out["embedding"] = self.embedding_head(feats)
        return out

    @staticmethod
    def _folded(head: nn.Sequential):
        """A head's 1x1 conv (no bias) + eval BatchNorm as one affine map: weight (C', C), bias (C',)."""
        conv, bn = head[0], head[1]
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        return conv.weight.flatten(1) * scale[:, None], bn.bias - bn.running_mean * scale

    def _dense_heads_eval(self, feats: torch.Tensor):
        """Eval heatmap and offset heads as matrix products on the (N, C, h x w) features: both heads'
        first 1x1 convolutions (BN folded in) in one product, so the large stride-4 feature map is
        read once and never re-laid out (equal to the modules up to float rounding)."""
        N, C, h, w = feats.shape
        x = feats.reshape(N, C, h * w)
        (wh, bh), (wo, bo) = self._folded(self.heatmap_head), self._folded(self.offset_head)
        weight, bias = torch.cat([wh, wo]).to(x.dtype), torch.cat([bh, bo]).to(x.dtype)
        hidden = torch.relu(torch.baddbmm(bias[None, :, None], weight.expand(N, -1, -1), x))
        c = wh.shape[0]
        outs = []
        for head, part in ((self.heatmap_head, hidden[:, :c]), (self.offset_head, hidden[:, c:])):
            last = head[3]
            wl = last.weight.flatten(1).to(x.dtype).expand(N, -1, -1)
            outs.append(torch.baddbmm(last.bias.to(x.dtype)[None, :, None], wl, part).reshape(N, -1, h, w))
        return outs[0], outs[1]

    def embeddings_eval(self, feats: torch.Tensor) -> torch.Tensor:
        """Eval embedding head (1x1 conv + BN + ReLU) as one matrix product, (N, C, h, w) -> (N, D, h, w)."""
        N, C, h, w = feats.shape
        weight, bias = self._folded(self.embedding_head)
        x = feats.reshape(N, C, h * w)
        out = torch.baddbmm(bias.to(x.dtype)[None, :, None], weight.to(x.dtype).expand(N, -1, -1), x)
        return torch.relu(out).reshape(N, -1, h, w)

    def window_grid(self, device, dtype=torch.float32):
        r = self.window_radius
        steps = torch.arange(-r, r + 1, device=device, dtype=dtype)
        yy, xx = torch.meshgrid(steps, steps, indexing="ij")
        prior = torch.exp(-(xx ** 2 + yy ** 2) / (2 * self.prior_sigma ** 2))
        return xx, yy, prior * (prior >= 1e-4)

    def sample_embeddings(self, embedding: torch.Tensor, meshes_index: torch.Tensor) -> torch.Tensor:
        """(D, h, w) embedding at (P, S, S, K, 2) pixel-index meshes -> (P, K x D, S, S) KAM input."""
        P, S, _, K, _ = meshes_index.shape
        code = sample_bilinear(embedding, meshes_index[..., 0] / self.stride, meshes_index[..., 1] / self.stride)
        return code.permute(0, 3, 4, 1, 2).reshape(P, -1, S, S)  # (P, S, S, K, D) -> (P, K, D, S, S)

    def global_windows(self, heatmaps_hr: torch.Tensor, centers_index: torch.Tensor):
        """(K, H, W) upsampled keypoint heatmaps, (P, K, 2) pixel-index keypoints -> windows
        (P, K, L, L) x the Gaussian prior, and the window offsets xx, yy (L, L)."""
        if self.training:  # grid_sample's cheap backward (the same values, see _training_windows)
            win, xx, yy, prior = self._training_windows(heatmaps_hr, centers_index)
            return win * prior, xx, yy
        xx, yy, prior = self.window_grid(heatmaps_hr.device, heatmaps_hr.dtype)
        # the authors' sampling exactly (integer window offsets: one block + 2x2 blend per window)
        win = sample_bilinear_windows(heatmaps_hr, centers_index[..., 0].t(), centers_index[..., 1].t(), xx[0])
        return win.transpose(0, 1) * prior, xx, yy

    def adapt(self, meshes_index: torch.Tensor, embedding: torch.Tensor, heatmaps_hr: torch.Tensor) -> torch.Tensor:
        """Local-global contextual adaptation of (P, S, S, K, 2) pixel-index meshes -> (P, K, 3)
        pixel-index keypoints and scores (MODEL.LOGOCAP.ADAPTATION)."""
        r = self.kem_size // 2
        centers = meshes_index[:, r, r]  # (P, K, 2): the initial poses
        if self.adaptation == "none":
            v = sample_bilinear(heatmaps_hr, centers[..., 0].t()[..., None, None], centers[..., 1].t()[..., None, None],
                                channel_per_point=True)  # (K, P, 1, 1)
            return torch.cat([centers, v[..., 0, 0].t()[..., None]], -1)
        kams = self.kam_net(self.sample_embeddings(embedding, meshes_index)).clamp(0, 1)  # (P, K, S, S)
        P, K, S, _ = kams.shape
        if self.adaptation == "partial":
            flat = kams.reshape(P, K, -1)
            value, idx = flat.max(-1)
            cells = meshes_index.reshape(P, S * S, K, 2).permute(0, 2, 1, 3)  # (P, K, S S, 2)
            xy = torch.gather(cells, 2, idx[..., None, None].expand(P, K, 1, 2))[:, :, 0]
            return torch.cat([xy, value[..., None]], -1)
        windows, xx, yy = self.global_windows(heatmaps_hr, centers)
        out = dynamic_window_conv(windows, kams).reshape(P, K, -1)
        value, idx = out.topk(2, dim=-1)
        L = xx.shape[-1]
        ty = torch.div(idx, L, rounding_mode="trunc").to(centers.dtype)
        tx = (idx % L).to(centers.dtype)
        a, b = self.top1_weight, 1.0 - self.top1_weight
        bx = a * tx[..., :1] + b * tx[..., 1:]
        by = a * ty[..., :1] + b * ty[..., 1:]
        bv = a * value[..., :1] + b * value[..., 1:]
        xy = centers + torch.cat([bx, by], -1) - self.window_radius
        return torch.cat([xy, bv], -1)

    def predict(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """images (1 or 2 (image, mirror), 3, H, W) -> poses (P, K, 3) continuous input coordinates,
        scores (P,) and the intermediate results (see the keys)."""
        # embeddings of the first (non-flipped) image only: the mirror's are never used
        out = self.network(images.float() if images.dtype != torch.float32 else images, embeddings=False)
        if self.adaptation != "none":
            out["embedding"] = self.embeddings_eval(out["features"][:1])
        heatmaps, offsets = out["heatmaps"].float(), out["offsets"].float()
        if images.shape[0] == 2 and self.flip_test:
            heatmaps, offsets = flip_fuse_bottomup(heatmaps, offsets, self.flip_indices)
        heatmaps_hr = F.interpolate(heatmaps[:1], size=images.shape[-2:], mode="bilinear", align_corners=False)
        initial, centers = self.codec.decode(dict(center_heatmap=heatmaps_hr[:, -1:], offsets=offsets[:1]))
        centers, initial = centers[0], initial[0]
        keep = centers[:, 2] >= self.center_thresh
        keep[0] = True
        centers, initial = centers[keep], initial[keep]
        meshes = keypoint_expansion(initial, self.sigmas, self.kem_size)  # (P, S, S, K, 2) continuous
        embedding = out["embedding"][0].float() if self.adaptation != "none" else None
        final = self.adapt(meshes - 0.5, embedding, heatmaps_hr[0, :-1])
        final = torch.cat([final[..., :2] + 0.5, final[..., 2:] * centers[:, 2, None, None]], -1)
        scores = final[..., 2].mean(-1)
        valid = scores > 0
        return dict(poses=final[valid], scores=scores[valid], initial_poses=initial[valid], meshes=meshes[valid],
                    centers=centers, heatmaps=heatmaps_hr, offsets=offsets, raw=out)

    # -- training ----------------------------------------------------------------------------
    def heatmap_loss_weights(self, batched_inputs: List[Dict], device=None) -> torch.Tensor:
        """(N, K + 1, h, w) weights of the heatmap MSE: the ignore mask x (1 on the foreground, the
        background weight elsewhere). The foreground comes with the targets ("heatmap_foreground" of
        `BottomUpDatasetMapper`: the union of the authors' Gaussian windows with INPUT.BOTTOMUP.PROTOCOL
        "dekr", within 3 sigma of a keypoint or centre with "d2pose"), else within 3 sigma (exp(-4.5))."""
        mask = torch.stack([x["heatmap_weights"] for x in batched_inputs]).to(device)
        if all("heatmap_foreground" in x for x in batched_inputs):
            fg = torch.stack([x["heatmap_foreground"] for x in batched_inputs]).to(device=device, dtype=mask.dtype)
        else:
            target = torch.stack([x["heatmaps"] for x in batched_inputs]).to(device)
            fg = heatmap_foreground(target, 1)[:, None].to(mask.dtype)
        return mask * (fg + (1 - fg) * self.heatmap_bg_weight)

    def _heatmap_loss(self, pred: torch.Tensor, batched_inputs: List[Dict]) -> torch.Tensor:
        # the mean over all N x (K + 1) x h x w elements (the authors' HeatmapLoss)
        target = torch.stack([x["heatmaps"] for x in batched_inputs]).to(pred.device)
        weight = self.heatmap_loss_weights(batched_inputs, pred.device)
        return ((pred.float() - target) ** 2 * weight).mean()

    def offset_loss_targets(self, batched_inputs: List[Dict], device=None):
        """The offset targets in the head's units, (cell - keypoint) / stride (the authors' offsets.t),
        and their weights 1 / sqrt(person area in input pixels): (N, 2K, h, w) each."""
        target = torch.stack([x["offsets"] for x in batched_inputs]).to(device)
        weight = torch.stack([x["offset_weights"] for x in batched_inputs]).to(device)
        return -target / self.stride, weight

    def _offset_loss(self, raw: torch.Tensor, batched_inputs: List[Dict]) -> torch.Tensor:
        t, w = self.offset_loss_targets(batched_inputs, raw.device)
        diff = (raw.float() - t).abs()
        beta = 1.0 / 9
        l = torch.where(diff < beta, 0.5 * diff ** 2 / beta, diff - 0.5 * beta)
        # normalised by the number of weighted entries (x and y counted apart), as the authors' OffsetsLoss
        return (l * w).sum() / max(int((w > 0).sum()), 1)

    def _decoder_targets(self, meshes: torch.Tensor, gt: torch.Tensor, areas: torch.Tensor):
        """Matches candidates (C, S, S, K, 2) continuous to ground truth (G, K, 3), areas (G,):
        {"keep" (C,): candidates whose best mesh pose reaches MATCH_OKS, at most MAX_KEPT of them
        (> 0: the best-scored; candidates come sorted by centre score), the first one when none
        does, with weight 0, "assignment" (C,): each candidate's person (the best mean over
        keypoints of each keypoint's best cell), "parts" (C, K, S, S) per-cell keypoint OKS with it,
        "person" (C, S, S) their mean, "weight" (C, K): how much the mesh beats its centre cell (0
        below MATCH_OKS), "gt" (C, K, 3) the assigned person, "matched": how many reach MATCH_OKS,
        "person_initial_oks" / "person_best_oks" (G,): per ground-truth person, the best initial
        pose's OKS and the best OKS of any pose in any candidate's mesh (the KAM targets' sigmas)}."""
        sig = self.sigma_values.to(meshes.device) * self.kam_oks_sigma_scale
        parts, mesh_people, best = mesh_oks(meshes, gt, areas, sig)
        assign = best.argmax(-1)  # (C,)
        idx = torch.arange(meshes.shape[0], device=meshes.device)
        parts = parts[idx, :, :, assign]  # (C, S, S, K)
        person = mesh_people[idx, :, :, assign]  # (C, S, S)
        matched = person.amax(dim=(1, 2)) >= self.match_oks
        if self.max_kept > 0:  # candidates come sorted by centre score: the best-scored ones stay
            matched &= torch.cumsum(matched.long(), 0) <= self.max_kept
        keep = matched.clone()
        if not keep.any():
            keep[0] = True
        r = self.kem_size // 2
        weight = parts.amax(dim=(1, 2)) - parts[:, r, r]  # (C, K): how much the mesh beats its centre
        weight = weight * matched[:, None].to(weight.dtype)
        # per ground-truth person: the best initial pose's OKS and the best pose in any candidate's mesh
        everyone = mesh_people
        return dict(keep=keep, assignment=assign, parts=parts.permute(0, 3, 1, 2), person=person, weight=weight,
                    gt=gt[assign], matched=int(matched.sum()), person_initial_oks=everyone[:, r, r].amax(0),
                    person_best_oks=everyone.amax(dim=(0, 1, 2)))

    def training_outputs(self, images: torch.Tensor, batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        """The training forward up to the losses, with every intermediate (the training-parity test
        reads them): the network's dense outputs ("heatmaps", "raw_offsets", "embedding", ...),
        "heatmaps_hr" (upsampled), the decoder on the detached maps ("centers" (N, C, 3), "meshes"
        (N, C, S, S, K, 2), continuous), the matching ("keep" (N, C), "assignment" (N, C), the kept
        candidates' "cand_image" / "cand_index" (n,)), and per kept candidate "kams" (n, K, S, S,
        unclamped), "windows_raw" (n, K, L, L) (the heatmap windows before the prior), "windows"
        (x the prior), "adapted" (n, K, L, L) and the targets "kam_targets" (n, K, S, S),
        "kam_person" (n, S, S), "kam_weights" (n, K), "hm_targets" (n, K, L, L), "matched_gt"
        (n, K, 3), "num_matched"."""
        out = self.network(images)
        heatmaps_hr = F.interpolate(out["heatmaps"].float(), size=images.shape[-2:], mode="bilinear",
                                    align_corners=False)
        with torch.no_grad():
            initial, centers = self.codec.decode(dict(center_heatmap=heatmaps_hr[:, -1:].detach(),
                                                      offsets=out["offsets"].detach().float()))
            meshes = keypoint_expansion(initial, self.sigmas, self.kem_size)  # (N, C, S, S, K, 2)
        N, C = meshes.shape[:2]
        K, r = self.num_keypoints, self.kem_size // 2
        keep_all = torch.zeros(N, C, dtype=torch.bool, device=meshes.device)
        assign_all = torch.zeros(N, C, dtype=torch.long, device=meshes.device)
        codes, raw_windows, prior, cand_image, cand_index, matched_count = [], [], None, [], [], 0
        kam_t, kam_p, kam_w, hm_t, gts, people_initial, people_best = [], [], [], [], [], [], []
        for b, x in enumerate(batched_inputs):
            gt, areas = x.get("keypoints"), x.get("areas")
            labelled = gt is not None and len(gt) > 0 and bool((gt[..., 2] > 0).any())
            if not labelled:
                # no labelled person: the first candidate still enters the KAM network (its train-mode
                # BatchNorm statistics), with weight 0, as in the authors' code (zero ground truth)
                gt = torch.zeros(1, K, 3)
                gt[..., :2] = 0.5
                areas = torch.zeros(1)
            gt = gt.to(meshes.device).float()
            d = self._decoder_targets(meshes[b], gt, areas.to(meshes.device).float())
            keep = d["keep"]
            if labelled:
                people = (gt[..., 2] > 0).any(-1)
                people_initial.append(d["person_initial_oks"][people])
                people_best.append(d["person_best_oks"][people])
            keep_all[b], assign_all[b] = keep, d["assignment"]
            matched_count += d["matched"]
            idx = keep.nonzero()[:, 0]
            cand_image.append(torch.full_like(idx, b))
            cand_index.append(idx)
            m_index = meshes[b][keep] - 0.5  # the authors' pixel indices
            codes.append(self.sample_embeddings(out["embedding"][b].float(), m_index))
            win, xx, yy, prior = self._training_windows(heatmaps_hr[b, :-1], m_index[:, r, r])
            raw_windows.append(win)
            kam_t.append(d["parts"][keep])
            kam_p.append(d["person"][keep])
            kam_w.append(d["weight"][keep])
            matched = d["gt"][keep]
            gts.append(matched)
            g = matched[..., :2] - 0.5  # pixel index
            px = m_index[:, r, r, :, 0, None, None] + xx - g[..., 0, None, None]
            py = m_index[:, r, r, :, 1, None, None] + yy - g[..., 1, None, None]
            hm_t.append(torch.exp(-(px ** 2 + py ** 2) / (2 * self.output_heatmap_sigma ** 2)))
        result = dict(out, heatmaps_hr=heatmaps_hr, centers=centers, meshes=meshes, keep=keep_all,
                      assignment=assign_all, num_matched=matched_count,
                      people_initial_oks=torch.cat(people_initial) if people_initial else meshes.new_zeros(0),
                      people_best_oks=torch.cat(people_best) if people_best else meshes.new_zeros(0))
        if not codes:  # an empty batch
            return result
        kams = self.kam_net(torch.cat(codes))
        windows_raw = torch.cat(raw_windows)
        windows = windows_raw * prior
        result.update(cand_image=torch.cat(cand_image), cand_index=torch.cat(cand_index), kams=kams,
                      windows_raw=windows_raw, windows=windows, adapted=dynamic_window_conv(windows, kams.float()),
                      kam_targets=torch.cat(kam_t), kam_person=torch.cat(kam_p), kam_weights=torch.cat(kam_w),
                      hm_targets=torch.cat(hm_t), matched_gt=torch.cat(gts))
        return result

    def _training_windows(self, heatmaps_hr: torch.Tensor, centers_index: torch.Tensor):
        """Training windows (P, K, L, L) of (K, H, W) upsampled heatmaps around (P, K, 2) pixel-index
        keypoints, before the prior: the authors' bilinear sampling exactly (values and gradients), as
        `grid_sample` (border padding: a cheap backward) times their fade from 0 at exactly W - 1 to the
        last value at W (H - 1 to H) on the band past the last pixel centre. Also the window offsets
        xx, yy and the prior (L, L)."""
        xx, yy, prior = self.window_grid(heatmaps_hr.device, heatmaps_hr.dtype)
        _, H, W = heatmaps_hr.shape
        px = (centers_index[..., 0, None, None] + xx).transpose(0, 1)  # (K, P, L, L)
        py = (centers_index[..., 1, None, None] + yy).transpose(0, 1)
        win = sample_bilinear_per_channel(heatmaps_hr, px, py)
        fade = torch.where((px >= W - 1) & (px < W), px - (W - 1), torch.ones_like(px))
        fade = fade * torch.where((py >= H - 1) & (py < H), py - (H - 1), torch.ones_like(py))
        return (win * fade).transpose(0, 1), xx, yy, prior

    def training_losses(self, t: Dict[str, torch.Tensor], batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        """The four weighted losses of `training_outputs`' result (the authors' LossEvaluator)."""
        w = self.loss_weights
        losses = {"loss_heatmap": w["heatmap"] * self._heatmap_loss(t["heatmaps"], batched_inputs),
                  "loss_offset": w["offset"] * self._offset_loss(t["raw_offsets"], batched_inputs)}
        if "kams" not in t:  # an empty batch: zero decoder terms, graph kept
            zero = t["embedding"].sum() * 0.0 + sum(p.sum() * 0.0 for p in self.kam_net.parameters())
            losses.update(loss_kam=zero, loss_output_heatmap=zero)
            return losses
        kams, kam_t, kam_w = t["kams"].float(), t["kam_targets"], t["kam_weights"]
        n = max(float(t["num_matched"]), 1.0)  # candidates that reach MATCH_OKS
        loss_kam = (((kams - kam_t) ** 2) * kam_w[:, :, None, None]).mean(dim=(1, 2, 3)).sum() / n
        # normalised by all n x K x L x L elements (the authors' HeatmapLoss on the adapted windows)
        loss_hm = ((t["adapted"] - t["hm_targets"]) ** 2 * kam_w[:, :, None, None]).mean()
        losses.update(loss_kam=w["kam"] * loss_kam, loss_output_heatmap=w["output_heatmap"] * loss_hm)
        return losses

    def losses(self, images: torch.Tensor, batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        t = self.training_outputs(images, batched_inputs)
        log_training_metrics(self.candidate_metrics(t, len(batched_inputs)), prefix="logocap/")
        return self.training_losses(t, batched_inputs)

    def candidate_metrics(self, t: Dict[str, torch.Tensor], num_images: int) -> Dict[str, float]:
        """What the decoder meets in a training batch (`training_outputs`' result): "kept_per_image",
        the candidates per image that reach MATCH_OKS and train the KAMs; "kept_fraction", of all
        candidates; per labelled person, "person_initial_oks" the best initial pose's OKS and
        "person_mesh_oks" the best OKS in any candidate's mesh (KAM target sigmas), batch means; and
        "person_initial_oks_over_match", the fraction of people with an initial pose at MATCH_OKS."""
        candidates = t["meshes"].shape[0] * t["meshes"].shape[1]
        initial, best = t["people_initial_oks"].float(), t["people_best_oks"].float()
        metrics = {"kept_per_image": t["num_matched"] / max(num_images, 1),
                   "kept_fraction": t["num_matched"] / max(candidates, 1)}
        if initial.numel():
            metrics.update(person_initial_oks=float(initial.mean()), person_mesh_oks=float(best.mean()),
                           person_initial_oks_over_match=float((initial >= self.match_oks).float().mean()))
        return metrics
