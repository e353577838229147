"""LOGO-CAP's config keys (MODEL.LOGOCAP). The data pipeline is the core's bottom-up one
(INPUT.PIPELINE "bottomup", INPUT.BOTTOMUP.*), the flip test the core's TEST.KEYPOINT_FLIP."""
from detectron2.config import CfgNode as CN

from d2pose.config import CONFIG_ADDERS

__all__ = ["add_logocap_config"]


@CONFIG_ADDERS.register()
def add_logocap_config(cfg: CN) -> None:
    """Adds LOGO-CAP's keys to `cfg` (registered in CONFIG_ADDERS: called by d2pose.add_d2pose_config)."""
    c = cfg.MODEL.LOGOCAP = CN()
    # backbone feature read by the heads (HRNet branches fused at stride 4: build_hrnet_concat_backbone)
    c.IN_FEATURE = "s4"
    # widths of the heatmap head (1x1 conv + BN + ReLU, then 1x1 to K + 1 maps), the offset head
    # (to 2K channels) and the keypoint embeddings (1x1 conv + BN + ReLU)
    c.HEATMAP_CHANNELS = 32
    c.OFFSET_CHANNELS = 256
    c.EMBEDDING_DIM = 64
    # KAM network: 3x3 conv widths, which of them use attentive BN (else BN), its number of affines
    c.KAM_CHANNELS = [512, 256, 128]
    c.KAM_ATTENTIVE_NORM = [False, True, False]
    c.KAM_NUM_AFFINE = 20
    # initial poses: top-k centres after a NMS_KERNEL max-pool on the upsampled centre map, kept
    # when their value reaches CENTER_THRESH (the best one always)
    c.TOPK_CENTERS = 30
    c.NMS_KERNEL = 3
    c.CENTER_THRESH = 0.01
    # keypoint expansion mesh (odd, KEM_SIZE x KEM_SIZE, spacing sigma_k / min sigma input pixels)
    c.KEM_SIZE = 11
    # global window: (2 WINDOW_RADIUS + 1)^2 input pixels around each initial keypoint, times a
    # Gaussian prior of PRIOR_SIGMA pixels (zero below 1e-4)
    c.WINDOW_RADIUS = 48
    c.PRIOR_SIGMA = 16.0
    # final keypoint = TOP1_WEIGHT x best + (1 - TOP1_WEIGHT) x second-best adapted response
    c.TOP1_WEIGHT = 0.75
    # test-time adaptation: "full" (KAMs on the global heatmaps), "partial" (best KEM cell by the
    # KAM) or "none" (initial centre-offset poses, scored on the heatmaps)
    c.ADAPTATION = "full"
    # pose NMS (DEKR): duplicates when more than POSE_NMS_JOINTS keypoints are closer than
    # POSE_NMS_THRESH x the box diagonal; at most MAX_PEOPLE people per image
    c.POSE_NMS_THRESH = 0.05
    c.POSE_NMS_JOINTS = 8
    c.MAX_PEOPLE = 30
    # training: heatmap MSE (background weight), offsets smooth-L1 (beta 1/9, 1/sqrt(area)), KAM
    # MSE against per-cell OKS targets (sigma x KAM_OKS_SIGMA_SCALE), output-heatmap MSE (Gaussian
    # of OUTPUT_HEATMAP_SIGMA pixels); a candidate trains the decoder when its best OKS in the mesh
    # reaches MATCH_OKS
    c.HEATMAP_LOSS_WEIGHT = 1.0
    c.HEATMAP_BG_WEIGHT = 0.1
    c.OFFSET_LOSS_WEIGHT = 0.01
    c.KAM_LOSS_WEIGHT = 0.01
    c.KAM_OKS_SIGMA_SCALE = 2.0
    c.OUTPUT_HEATMAP_LOSS_WEIGHT = 1.0
    c.OUTPUT_HEATMAP_SIGMA = 4.0
    c.MATCH_OKS = 0.5
    # at most this many candidates per image train the decoder (the best-scored of those reaching
    # MATCH_OKS; each costs a KAM-network pass); 0 = all, as the authors
    c.MAX_KEPT = 0
