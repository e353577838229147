"""Poseur's own config keys (MODEL.POSEUR.*). Shared choices live in the core: the RLE loss
(MODEL.RLE.*), flip fusion and keypoint scores (TEST.KEYPOINT_FLIP_FUSE, TEST.KEYPOINT_SCORE[_A]),
the ROI regression base (MODEL.ROI_REGRESSION.*)."""
from detectron2.config import CfgNode as CN

from d2pose.config import CONFIG_ADDERS, add_transformer_keys

__all__ = ["add_poseur_config", "check_test_output"]

#: values of MODEL.POSEUR.TEST_OUTPUT
TEST_OUTPUTS = ("decoder", "coarse")


def check_test_output(test_output: str) -> str:
    """MODEL.POSEUR.TEST_OUTPUT, checked: "decoder" (the last layer) or "coarse" (the proposal alone)."""
    if test_output not in TEST_OUTPUTS:
        raise ValueError(f"MODEL.POSEUR.TEST_OUTPUT must be 'decoder' or 'coarse', got {test_output!r}")
    return test_output


@CONFIG_ADDERS.register()
def add_poseur_config(cfg: CN) -> None:
    """Adds Poseur's keys to `cfg` (registered in CONFIG_ADDERS: called by d2pose.add_d2pose_config)."""
    p = cfg.MODEL.POSEUR = CN()
    # query decoder layers (6; 3 in the paper's ablations)
    p.NUM_DECODER_LAYERS = 6
    # the decoder's EMBED_DIM (width of the neck, memory and queries), NUM_HEADS (of its self-attention
    # and EMSDA), FFN_DIM and DROPOUT
    add_transformer_keys(p)
    # EMSDA sampling points per head and level
    p.NUM_POINTS = 4
    # training-only noisy query groups (0 = off)
    p.NUM_NOISY_GROUPS = 3
    # reference points moved by noise, over all noisy groups' slots
    p.NUM_NOISY_POINTS = 12
    # std of the reference-point noise per coordinate (the authors' code: covariance 0.2 I, std sqrt(0.2))
    p.NOISE_STD = 0.2 ** 0.5
    # EMSDA's initial sampling offsets: "level" (Deformable-DETR: point k at k + 1 cells of each
    # level) or "finest" (k + 1 cells of the finest memory level on every level, the same ring in the
    # image; on small crops the coarse levels' "level" offsets start off the map)
    p.OFFSET_INIT = "level"
    # which slots are moved: "batch" (one random set per batch, shared by its instances: the
    # authors' code) or "instance" (a set per instance)
    p.NOISE_SLOTS = "batch"
    # what the top-down head predicts at inference: "decoder" (the last layer, the method) or
    # "coarse" (the RLE proposal alone, the decoder skipped: its contribution on the same model)
    p.TEST_OUTPUT = "decoder"
    # weight of the coarse-proposal RLE loss
    p.COARSE_LOSS_WEIGHT = 1.0
    # weight of each decoder layer's RLE loss (lambda)
    p.DECODER_LOSS_WEIGHT = 1.0
    # hidden C -> C layers of the decoder's coordinate MLPs (1: C-C-2; the authors' code: 2, the COCO configs)
    p.NUM_REG_FCS = 1
    # the decoder's sigma branches: "linear" (one Linear C -> 2, d2pose) or "stacked" (the authors'
    # code, the COCO configs: NUM_REG_FCS Linear C -> C without activation, then Linear C -> 2; the same
    # function, trained as a product of matrices; the converter folds a checkpoint's into "linear")
    p.SIGMA_BRANCH = "linear"
    # initialisation of the head: "d2pose" (coordinate MLPs end in a zero layer so mu_l starts at the
    # reference point, sigma layers xavier gain 0.01 with zero bias, EMSDA as Deformable-DETR, coarse FCs
    # as RLE's) or "official" (the authors' code, the COCO configs: coordinate MLPs with PyTorch's default
    # Linear init, one draw shared by every layer's refinement and output branch; sigma branches default
    # init but the last layer xavier gain 0.01, one draw shared by the layers; EMSDA xavier on every
    # matrix, its value bias included; FFN and keypoint-encoder biases and both flows default init;
    # top-down coarse FCs xavier gain 1 with default biases, so the coarse points start near the crop's
    # top-left corner as theirs do)
    p.INIT = "d2pose"
    # normalisation of every RLE loss term: "instance" (d2pose: summed over keypoints and query groups,
    # divided by the number of instances) or "query" (the authors' RLELoss_poseur, the COCO configs: the
    # mean over instances x queries, i.e. / (R K) for the coarse term and / (R (1 + G) K) per decoder
    # layer, so the noisy groups are averaged with the coarse group, not added)
    p.LOSS_NORMALIZATION = "instance"
    # the authors' extra per-layer coordinate branch added to each layer's output (not the references)
    p.OUTPUT_DELTA = True
    # feature pooled for the coarse proposal: "backbone" (last raw level, the paper) or "neck" (the code)
    p.COARSE_FEATURE = "backbone"
    # top-down: where the coarse proposal's mu comes from, "fc" (the paper's average pool + FC) or
    # "integral" (soft-argmax of K logit maps on the finest neck level, sigma still from the FC); the
    # ROI head follows MODEL.ROI_REGRESSION.COORDS
    p.COARSE_COORDS = "fc"
    # mean of both RealNVP flows' prior (paper / RLE: 0; the authors' Poseur code: 0.5)
    p.FLOW_PRIOR_MEAN = 0.0
    # end-to-end variant (PoseurROIHeads + PoseurKeypointHead): the FPN levels the decoder attends to
    p.ROI_MEMORY_FEATURES = ["p2", "p3", "p4", "p5"]
