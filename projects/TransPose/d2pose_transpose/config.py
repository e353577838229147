"""TransPose's config keys (MODEL.TRANSPOSE); the heatmap codec, decoding and flip test are core keys
(INPUT.TOPDOWN.CODEC / SIGMA / UNBIASED / DECODE / HEATMAP_STRIDE, TEST.KEYPOINT_FLIP_SHIFT)."""
from detectron2.config import CfgNode as CN

from d2pose.config import CONFIG_ADDERS, add_transformer_keys, register_renamed_keys

__all__ = ["add_transpose_config"]

# the encoder keys' old names (now Poseur's names for the same ideas); configs that use them still load
register_renamed_keys({
    "MODEL.TRANSPOSE.D_MODEL": "MODEL.TRANSPOSE.EMBED_DIM",
    "MODEL.TRANSPOSE.NHEAD": "MODEL.TRANSPOSE.NUM_HEADS",
    "MODEL.TRANSPOSE.DIM_FEEDFORWARD": "MODEL.TRANSPOSE.FFN_DIM",
    "MODEL.TRANSPOSE.NUM_LAYERS": "MODEL.TRANSPOSE.NUM_ENCODER_LAYERS",
})


@CONFIG_ADDERS.register()
def add_transpose_config(cfg: CN) -> None:
    """Adds TransPose's keys to `cfg` (registered in CONFIG_ADDERS: called by d2pose.add_d2pose_config)."""
    t = cfg.MODEL.TRANSPOSE = CN()
    # Transformer encoder (paper Table 1): width d (EMBED_DIM), heads, FFN width, dropout; its layers
    # and FFN activation
    add_transformer_keys(t)
    t.NUM_ENCODER_LAYERS = 3
    t.ACTIVATION = "relu"
    # position embedding added to queries and keys: "sine" (Appendix A, computed for the actual
    # token grid), "fixed" (the authors' stored sine table, resized for other crop sizes),
    # "learnable" (resized likewise) or "none"
    t.POS_EMBEDDING = "sine"
    # from the token stride to the heatmap stride: "deconv" (4x4 stride-2 deconv + BN + ReLU per x2,
    # TP-R), "bilinear" (TP-R-A3*) or "none" (TP-H); channels of the deconvolutions
    t.UPSAMPLE = "deconv"
    t.DECONV_DIM = 256
    # encoder layers whose head-averaged attention maps the head returns as outputs["attentions"]
    # (negative = from the last; [] = none): the dependency areas of projects/TransPose/tools/visualize_dependency.py
    t.ATTENTION_LAYERS = []
    # blocks per stage (res2, res3, ...) of build_resnet_s_backbone: [3, 4] ResNet-S, [3, 10] ResNet-S*
    t.RESNET_BLOCKS = [3, 4]
