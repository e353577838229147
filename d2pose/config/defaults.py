"""Every d2pose config key, each with a one-line comment.

`add_d2pose_config(cfg)` adds the keys to the config it is given and never touches Detectron2's
global defaults, so configs that do not use d2pose are unaffected. Calling it twice is harmless.
"""
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

__all__ = ["add_d2pose_config", "get_d2pose_cfg"]


def _add_layers(cfg: CN) -> None:
    cfg.MODEL.MS_DEFORM_ATTN = CN()
    # Multi-scale deformable attention backend: "auto" (compiled kernels when built, else the
    # PyTorch reference with a warning), "cpp", "cuda" or "torch" (grid_sample reference).
    cfg.MODEL.MS_DEFORM_ATTN.BACKEND = "auto"


def _add_data(cfg: CN) -> None:
    t = cfg.INPUT.TOPDOWN = CN()
    # crop (width, height) fed to top-down models
    t.INPUT_SIZE = (192, 256)
    # box enlargement around each person
    t.PADDING = 1.25
    # random scale 1 +- SCALE_FACTOR (normal, clipped)
    t.SCALE_FACTOR = 0.35
    # random rotation within +- 2 x ROTATION_FACTOR degrees (normal x factor), with ROTATION_PROB
    t.ROTATION_FACTOR = 45.0
    t.ROTATION_PROB = 0.6
    # horizontal flip probability (left/right labels swapped with the dataset's flip map)
    t.FLIP_PROB = 0.5
    # half-body augmentation probability, and the labelled keypoints a person needs for it
    t.HALF_BODY_PROB = 0.3
    t.HALF_BODY_MIN_KEYPOINTS = 8
    # target codec: "regression" (normalised coordinates), "msra" or "udp" (heatmaps)
    t.CODEC = "msra"
    # heatmap stride, Gaussian sigma (cells), unbiased sub-pixel centres, decoding ("dark"/"argmax")
    t.HEATMAP_STRIDE = 4
    t.SIGMA = 2.0
    t.UNBIASED = True
    t.DECODE = "dark"
    # regression targets as x / W - 0.5 (RLE's official form) instead of x / W
    t.REGRESSION_CENTERED = False
    # regression coordinates in the pixel-index convention of the authors' RLE code (pixel i at
    # x = i): set for models converted from their checkpoints (tools/convert_checkpoint.py does)
    t.REGRESSION_PIXEL_INDEX = False
    # keep decoded training images in memory (per loader worker; H x W x 3 bytes each)
    t.CACHE_IMAGES = False
    # a person needs at least this many labelled keypoints to be a training sample
    t.MIN_KEYPOINTS = 1
    # top-down testing: COCO person-detection results file ("" = ground-truth boxes) and score threshold
    cfg.TEST.PERSON_DETECTIONS = ""
    cfg.TEST.PERSON_DETECTION_SCORE_THRESH = 0.0


def _add_models(cfg: CN) -> None:
    # data pipeline of the model: "detectron2" (Keypoint R-CNN), "topdown" or "bottomup"
    cfg.INPUT.PIPELINE = "detectron2"
    b = cfg.INPUT.BOTTOMUP = CN()
    # bottom-up training input size (square), output stride, test-time short side
    b.INPUT_SIZE = 512
    b.STRIDE = 4
    b.TEST_SHORT_SIDE = 512

    cfg.MODEL.TOPDOWN = CN()
    # top-down head (TOPDOWN_HEAD_REGISTRY) and the backbone features it reads
    cfg.MODEL.TOPDOWN.HEAD = "RLERegressionHead"
    cfg.MODEL.TOPDOWN.IN_FEATURES = ["res5"]
    # append normalised (x, y) coordinate channels to the crops (CoordConv input; from-scratch recipes)
    cfg.MODEL.TOPDOWN.COORD_CHANNELS = False

    cfg.MODEL.RLE = CN()
    # regression loss: "rle" (Eq. 8), "dle" (flow only) or "l1"; preset density "laplace"/"gaussian"
    cfg.MODEL.RLE.LOSS = "rle"
    cfg.MODEL.RLE.BASE_DENSITY = "laplace"
    # the authors' loss (log sigma counted twice) instead of the paper's Eq. 8
    cfg.MODEL.RLE.OFFICIAL_FORM = False
    cfg.MODEL.RLE.LOSS_WEIGHT = 1.0
    # keypoint score from sigma: "rle" (mean of 1 - sigma) or "poseur" (prod of 1 - exp(-a / sigma))
    cfg.MODEL.RLE.SCORE_FORM = "rle"
    # flip-test fusion of the top-down heads: "mean" (the authors': average coords and sigmas) or
    # "sigma" (coordinates weighted by 1 / sigma^2 of each view, sigmas averaged)
    cfg.MODEL.RLE.FLIP_FUSE = "mean"
    # ROI keypoint head (RLEKeypointHead): conv layers before the average pool
    cfg.MODEL.RLE.ROI_CONV_DIMS = (256, 256, 256, 256)
    # where RLEKeypointHead's box-relative mu comes from: "fc" (average pool + FC, the paper's head)
    # or "integral" (soft-argmax of K logit maps over the S x S ROI grid, sigma still from the pooled
    # FC: the paper's Tab. 2b variant; after a shallow conv stack trained from scratch the pooled FC
    # has no spatial input)
    cfg.MODEL.RLE.ROI_COORDS = "fc"
    # RLEKeypointHead in training: a random subset of at most this many foreground ROIs per image
    # (0: all, Detectron2's behaviour)
    cfg.MODEL.RLE.ROI_MAX_TRAIN_INSTANCES = 0
    # RLEIntegralHead: channels of a 3x3 conv before the 1x1 heatmap conv (0: the 1x1 conv only)
    cfg.MODEL.RLE.INTEGRAL_CONV_DIM = 0
    # soft-argmax heads (RLEIntegralHead, RLEKeypointHead with ROI_COORDS "integral", Poseur's
    # integral coarse proposal): weight of a training-only KL term pulling each keypoint's softmax
    # towards a Gaussian of INTEGRAL_HEATMAP_SIGMA cells around the target (0 = off: RLE only)
    cfg.MODEL.RLE.INTEGRAL_HEATMAP_WEIGHT = 0.0
    cfg.MODEL.RLE.INTEGRAL_HEATMAP_SIGMA = 1.0
    # training-only auxiliary heatmaps on this backbone feature ("" = off; e.g. "res3"), their
    # Gaussian sigma (cells) and loss weight: dense supervision for from-scratch recipes
    cfg.MODEL.RLE.AUX_HEATMAP_FEATURE = ""
    cfg.MODEL.RLE.AUX_HEATMAP_SIGMA = 1.5
    cfg.MODEL.RLE.AUX_HEATMAP_WEIGHT = 10.0

    p = cfg.MODEL.POSEUR = CN()
    # Poseur head (PoseurHead): query decoder layers (6; 3 in the paper's ablations)
    p.NUM_DECODER_LAYERS = 6
    # width of the neck, memory and queries
    p.EMBED_DIM = 256
    # attention heads of the decoder's self-attention and EMSDA
    p.NUM_HEADS = 8
    # EMSDA sampling points per head and level
    p.NUM_POINTS = 4
    # hidden width of the decoder FFN
    p.FFN_DIM = 1024
    # dropout in the decoder layers
    p.DROPOUT = 0.1
    # training-only noisy query groups (0 = off)
    p.NUM_NOISY_GROUPS = 3
    # reference points moved by noise per instance, over all noisy groups' slots
    p.NUM_NOISY_POINTS = 12
    # std of the reference-point noise (the authors' code: covariance 0.2 I, i.e. std 0.447)
    p.NOISE_STD = 0.2
    # weight of the coarse-proposal RLE loss
    p.COARSE_LOSS_WEIGHT = 1.0
    # weight of each decoder layer's RLE loss (lambda)
    p.DECODER_LOSS_WEIGHT = 1.0
    # keypoint score from sigma: "poseur" (Eq. 8, prod of 1 - exp(-a / sigma)) or "rle" (mean of 1 - sigma)
    p.SCORE_FORM = "poseur"
    # the interval half-width a of the "poseur" score (normalised units)
    p.SCORE_A = 0.2
    # flip-test fusion: "mean" (average coords and sigmas), "sigma" (coordinates weighted by 1 / sigma^2,
    # as MODEL.RLE.FLIP_FUSE) or "official" (authors' p^5-weighted "type2")
    p.FLIP_FUSE = "mean"
    # EMSDA init: "deformable" (Deformable-DETR) or "official" (Poseur's code: xavier everywhere)
    p.EMSDA_INIT = "deformable"
    # hidden C -> C layers of the decoder's coordinate MLPs (1: C-C-2; the authors' checkpoints: 2)
    p.NUM_REG_FCS = 1
    # the authors' extra per-layer coordinate branch added to each layer's output (not the references)
    p.OUTPUT_DELTA = True
    # feature pooled for the coarse proposal: "backbone" (last raw level, the paper) or "neck" (the code)
    p.COARSE_FEATURE = "backbone"
    # where the coarse proposal's mu comes from: "fc" (the paper's average pool + FC) or "integral"
    # (soft-argmax of K logit maps, sigma still from the pooled FC): top-down on the neck output of
    # COARSE_HEATMAP_FEATURE (one of MODEL.TOPDOWN.IN_FEATURES; "" = the finest), in the ROI head
    # over the S x S ROI grid
    p.COARSE_COORDS = "fc"
    p.COARSE_HEATMAP_FEATURE = ""
    # mean of both RealNVP flows' prior (paper / RLE: 0; the authors' Poseur code: 0.5)
    p.FLOW_PRIOR_MEAN = 0.0
    # end-to-end variant (PoseurROIHeads + PoseurKeypointHead): the FPN levels the decoder attends to,
    # and at most this many foreground ROIs per image train the keypoint head (a random subset)
    p.ROI_MEMORY_FEATURES = ["p2", "p3", "p4", "p5"]
    p.ROI_MAX_TRAIN_INSTANCES = 600

    cfg.MODEL.TIMM = CN()
    # timm backbone (build_timm_backbone): model name, feature levels, optional local checkpoint
    cfg.MODEL.TIMM.NAME = "resnet50"
    cfg.MODEL.TIMM.OUT_INDICES = (1, 2, 3, 4)
    cfg.MODEL.TIMM.CHECKPOINT = ""
    # timm's feature_location ("auto" = the model's default; "" gives HRNet's raw branches 32-256 ch)
    cfg.MODEL.TIMM.FEATURE_LOCATION = "auto"

    # keypoint inference: flip test, instance rescoring rule, OKS-NMS threshold (0 = off)
    cfg.TEST.KEYPOINT_FLIP = True
    cfg.TEST.KEYPOINT_RESCORE = "box_x_mean"
    cfg.TEST.OKS_NMS_THRESH = 0.0

    # optimizer: "SGD" (Detectron2's), "ADAM" or "ADAMW"; lr multipliers for parameters whose name
    # contains one of LR_MULTIPLIER_NAMES
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.LR_MULTIPLIER_NAMES = []
    cfg.SOLVER.LR_MULTIPLIER_VALUES = []
    # training precision (d2pose.engine.precision): "auto" = bfloat16 on CPUs that run it natively
    # (AVX512_BF16 / AMX; about 2x faster than float32 there), float32 on other CPUs (emulated
    # bfloat16 is 70-140x slower), and on CUDA whatever SOLVER.AMP.ENABLED says; "" / "float32",
    # "bfloat16", "float16" force a type (an explicit one that contradicts SOLVER.AMP.ENABLED on CUDA
    # is an error)
    cfg.SOLVER.AUTOCAST_DTYPE = "auto"
    # inference precision of the top-down models, same values and policy (on CUDA "auto" is float32);
    # applied inside the model, so DefaultPredictor, the evaluators, the demo and benchmarks follow it
    cfg.TEST.AUTOCAST_DTYPE = ""
    # Adam/AdamW as one fused kernel per step (PyTorch >= 2.4 on CPU and CUDA), else foreach
    cfg.SOLVER.FUSED_OPTIMIZER = True
    # convolution weights (and so activations) in channels-last layout: oneDNN's fast path on CPUs
    # (measured 1.25x faster ResNet-18 training steps in bfloat16 here), tensor cores on GPUs
    cfg.MODEL.CHANNELS_LAST = False


def add_d2pose_config(cfg: CN) -> CN:
    """Adds every d2pose key to `cfg` (in place) and returns it."""
    if "MS_DEFORM_ATTN" in cfg.MODEL:
        return cfg
    defrosted = cfg.is_frozen()
    cfg.defrost()
    _add_layers(cfg)
    _add_data(cfg)
    _add_models(cfg)
    if defrosted:
        cfg.freeze()
    return cfg


def get_d2pose_cfg() -> CN:
    """Detectron2's default config with every d2pose key added."""
    return add_d2pose_config(get_cfg())
