"""Every d2pose config key, each with a one-line comment.

`add_d2pose_config(cfg)` adds the keys to the config it is given and never touches Detectron2's
global defaults, so configs that do not use d2pose are unaffected. Calling it twice is harmless.
The core's keys are here; each method adds its own: its package under projects/ registers its
`add_<method>_config` in `CONFIG_ADDERS`, which `add_d2pose_config` calls after the core's keys
(`import d2pose` imports every method package, so every method's keys are added).
"""
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg
from detectron2.utils.registry import Registry

from .renamed import register_old_key_errors

__all__ = ["add_d2pose_config", "add_transformer_keys", "CONFIG_ADDERS", "d2pose_keys", "get_d2pose_cfg"]

CONFIG_ADDERS = Registry("CONFIG_ADDERS")
CONFIG_ADDERS.__doc__ = """Every method's `add_<method>_config(cfg: CfgNode) -> None`, which adds the method's keys
(each with a one-line comment) to a config that already has the core's. A method package registers it
with `@CONFIG_ADDERS.register()`; `add_d2pose_config` calls them in registration order."""


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
    # target codec (CODEC_REGISTRY): "regression" (normalised coordinates), "msra" or "udp" (heatmaps);
    # methods register their own (TransPose: "transpose", the authors' (W-1)/(w-1) heatmap frame)
    t.CODEC = "msra"
    # heatmap stride, Gaussian sigma (cells), unbiased sub-pixel centres, decoding ("dark"/"argmax")
    t.HEATMAP_STRIDE = 4
    t.SIGMA = 2.0
    t.UNBIASED = True
    t.DECODE = "dark"
    # regression targets as x / W - 0.5 (RLE's official form) instead of x / W
    t.REGRESSION_CENTERED = False
    # regression coordinates in the pixel-index convention of the authors' RLE and Poseur code (pixel i
    # at x = i): set for models converted from their checkpoints (tools/convert_checkpoint.py does)
    t.REGRESSION_PIXEL_INDEX = False
    # regression targets: labelled keypoints outside the crop keep weight 1 (the authors' RLE training
    # code) instead of 0 (d2pose's default, Poseur's authors)
    t.REGRESSION_SUPERVISE_OUTSIDE = False
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
    # training augmentation (DEKR / LOGO-CAP): rotation +- degrees, scale range, translation +- px, flip
    b.MAX_ROTATION = 30.0
    b.SCALE_RANGE = (0.75, 1.5)
    b.MAX_TRANSLATION = 40.0
    b.FLIP_PROB = 0.5
    # "d2pose": the targets above on d2pose's grid (cell u centred at (u + 0.5) * STRIDE); "dekr": the
    # data pipeline of the DEKR / LOGO-CAP authors' code line for line (their random affine, grid,
    # target generators and rules: d2pose/data/bottomup_mapper.py), what the LOGO-CAP COCO configs train with
    b.PROTOCOL = "d2pose"
    # the small-person rule: people whose annotated area in the source image is below this many
    # pixels get no centre (and no offsets) in training; 32^2 as the DEKR / LOGO-CAP authors
    b.MIN_CENTER_AREA = 32 ** 2

    cfg.MODEL.TOPDOWN = CN()
    # top-down head (TOPDOWN_HEAD_REGISTRY) and the backbone features it reads
    cfg.MODEL.TOPDOWN.HEAD = "RLERegressionHead"
    cfg.MODEL.TOPDOWN.IN_FEATURES = ["res5"]
    # the person detector of whole-image inference (d2pose.modeling.person_detector): any Detectron2
    # detection config (a file or a model-zoo name, "" = none: crops from the boxes given with each
    # input, else the whole image) and its weights (a file, URL or model-zoo name); the detector's
    # class id of a person, the score threshold, an extra NMS over the person boxes (1.0 = only the
    # detector's own) and the most people per image. Dataset evaluation crops TEST.PERSON_DETECTIONS
    # when set, else the detector's boxes when a detector is set, else the ground-truth boxes
    det = cfg.MODEL.TOPDOWN.DETECTOR = CN()
    det.CONFIG_FILE = ""
    det.WEIGHTS = ""
    det.CLASS_INDEX = 0
    det.SCORE_THRESH = 0.05
    det.NMS_THRESH = 1.0
    det.MAX_PEOPLE = 100

    # the RLE loss and its flow (d2pose.modeling.losses.RLELoss), shared by every regression head
    cfg.MODEL.RLE = CN()
    # regression loss: "rle" (Eq. 8), "dle" (flow only) or "l1"; preset density "laplace"/"gaussian"
    cfg.MODEL.RLE.LOSS = "rle"
    cfg.MODEL.RLE.BASE_DENSITY = "laplace"
    # the authors' loss (log sigma counted twice) instead of the paper's Eq. 8
    cfg.MODEL.RLE.OFFICIAL_FORM = False
    # with OFFICIAL_FORM: -log G_phi once per coordinate ("per_coordinate", the authors' broadcast of
    # log_phi (B, K, 1) against sigma (B, K, 2)) or once per keypoint ("per_keypoint": the only count
    # under which sigma has an optimum of its own; see d2pose.modeling.losses)
    cfg.MODEL.RLE.OFFICIAL_FLOW_TERM = "per_coordinate"
    # soft-argmax heads (RLEIntegralHead, ROI heads with MODEL.ROI_REGRESSION.COORDS "integral",
    # Poseur's integral coarse proposal): weight of a training-only KL term pulling each keypoint's
    # softmax towards a Gaussian of INTEGRAL_HEATMAP_SIGMA cells around the target (0 = off)
    cfg.MODEL.RLE.INTEGRAL_HEATMAP_WEIGHT = 0.0
    cfg.MODEL.RLE.INTEGRAL_HEATMAP_SIGMA = 1.0

    # the regression ROI keypoint heads of Keypoint R-CNN (d2pose.modeling.roi_regression; their conv
    # stack and loss weight are Detectron2's MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS / LOSS_WEIGHT)
    cfg.MODEL.ROI_REGRESSION = CN()
    # where the box-relative mu comes from: "fc" (average pool + FC, the papers' heads) or
    # "integral" (soft-argmax of K logit maps over the S x S ROI grid, sigma still from the FC) or
    # "deconv" (soft-argmax over Detectron2's heatmap-head output: 4x4 stride-2 deconv + 2x bilinear,
    # 4S x 4S; a heatmap Keypoint R-CNN's score_lowres loads into it)
    cfg.MODEL.ROI_REGRESSION.COORDS = "fc"
    # in training, a random subset of at most this many foreground ROIs per image (0: all)
    cfg.MODEL.ROI_REGRESSION.MAX_TRAIN_INSTANCES = 0
    # a box is a reference frame, not a cage: labelled keypoints up to this many box sizes outside
    # the proposal box are supervised (box-relative [-m, 1 + m]) and Poseur's reference points may
    # move there; 0: inside the box only. "integral" coordinates supervise inside the box only
    cfg.MODEL.ROI_REGRESSION.FRAME_MARGIN = 0.5
    # loading a heatmap Keypoint R-CNN (MODEL.WEIGHTS) into a regression head: its conv stack starts
    # from the heatmap head's conv_fcn1.. where the shapes agree and a "deconv" branch from its
    # score_lowres (the head swap of RLE's author's Mask R-CNN recipe); False: random init
    cfg.MODEL.ROI_REGRESSION.FROM_HEATMAP_HEAD = True
    # "integral" / "deconv" coordinates: > 0 makes the soft-argmax local, the softmax over the
    # (2n + 1)^2 cells around each map's peak only (a map with two people's keypoints in one ROI
    # then gives the stronger one, not a point between them); 0: the whole map (integral regression)
    cfg.MODEL.ROI_REGRESSION.SOFT_ARGMAX_WINDOW = 0

    cfg.MODEL.TIMM = CN()
    # timm backbone (build_timm_backbone): model name, feature levels, optional local checkpoint
    cfg.MODEL.TIMM.NAME = "resnet50"
    cfg.MODEL.TIMM.OUT_INDICES = (1, 2, 3, 4)
    cfg.MODEL.TIMM.CHECKPOINT = ""
    # timm's feature_location ("auto" = the model's default; "" gives HRNet's raw branches 32-256 ch)
    cfg.MODEL.TIMM.FEATURE_LOCATION = "auto"

    # keypoint inference: flip test and the fusion of the two views ("mean": coordinates and sigmas
    # averaged, the authors' default; "sigma": coordinates weighted by 1 / sigma^2; "official":
    # Poseur's p^5-weighted "type2"), the keypoint score from a regression head's sigma ("rle":
    # mean of 1 - sigma; "poseur": Eq. 8, prod of 1 - exp(-a / sigma) with a = KEYPOINT_SCORE_A),
    # the instance rescoring rule (top-down `Instances.scores` in [0, 1]: "box_x_mean" or
    # "box_plus_mean_max" / 3, d2pose.evaluation.rescore_instances), the OKS-NMS threshold (0 = off)
    # over detected people's poses (whole images, TEST.PERSON_DETECTIONS) and whether it also runs
    # over the poses of ground-truth boxes (one per person; the COCO configs: True, the authors' protocol)
    cfg.TEST.KEYPOINT_FLIP = True
    # with TEST.EVAL_PERIOD > 0, train_net keeps the checkpoint with the best value of this result
    # (Detectron2's BestCheckpointer: OUTPUT_DIR/model_best.pth); a leading "-" keeps the lowest;
    # "" turns it off. Names are the flattened evaluation results: "keypoints/AP", "bbox/AP", ...
    cfg.TEST.BEST_CHECKPOINT_METRIC = "keypoints/AP"
    cfg.TEST.KEYPOINT_FLIP_FUSE = "mean"
    cfg.TEST.KEYPOINT_SCORE = "rle"
    cfg.TEST.KEYPOINT_SCORE_A = 0.2
    cfg.TEST.KEYPOINT_RESCORE = "box_x_mean"
    cfg.TEST.OKS_NMS_THRESH = 0.9
    cfg.TEST.OKS_NMS_GT_BOXES = False
    # heatmap heads' flip test: how heatmaps of the mirrored crop are mapped back ("exact": the
    # codec's exact sub-cell mirror; "cell": a one-cell shift, HRNet's code; "none": no shift,
    # TransPose's and LOGO-CAP's code)
    cfg.TEST.KEYPOINT_FLIP_SHIFT = "exact"

    # optimizer: "SGD", "ADAM" or "ADAMW" (Detectron2's parameter groups: SOLVER.WEIGHT_DECAY_NORM,
    # BIAS_LR_FACTOR, ... apply to all three; Adam/AdamW run fused where PyTorch can); lr multipliers
    # for parameters whose name contains one of LR_MULTIPLIER_NAMES
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
    # convolution weights (and so activations) in channels-last layout: oneDNN's fast path on CPUs
    # (measured 1.25x faster ResNet-18 training steps in bfloat16 here), tensor cores on GPUs; applied
    # by d2pose's meta-architectures themselves (TopDownPoseEstimator, PoseRCNN), so DefaultPredictor
    # gets it too
    cfg.MODEL.CHANNELS_LAST = False
    # reproducible training (needs SEED >= 0): each sample's augmentation is seeded by its position
    # in the data stream and the model's random draws by the iteration, so a run resumed after a kill
    # ends with the weights of an uninterrupted one (d2pose.data.samplers, train_net.py)
    cfg.SOLVER.DETERMINISTIC = False
    # multi-process training: DDP looks for parameters a step does not use (FPN levels a head does
    # not read, heads whose losses skip a batch); False saves that search on models that use them all
    cfg.MODEL.DDP_FIND_UNUSED_PARAMETERS = True


def add_transformer_keys(node: CN) -> CN:
    """Adds the keys of a method's transformer layers to its node (`MODEL.<METHOD>`), the same names and
    defaults for every method (TransPose's encoder, Poseur's decoder), and returns the node."""
    # token / query width d
    node.EMBED_DIM = 256
    # attention heads
    node.NUM_HEADS = 8
    # hidden width of the feed-forward layers
    node.FFN_DIM = 1024
    # dropout in the transformer layers
    node.DROPOUT = 0.1
    return node


def add_d2pose_config(cfg: CN) -> CN:
    """Adds every d2pose key to `cfg` (in place) and returns it."""
    if "MS_DEFORM_ATTN" in cfg.MODEL:
        return cfg
    defrosted = cfg.is_frozen()
    cfg.defrost()
    _add_layers(cfg)
    _add_data(cfg)
    _add_models(cfg)
    for _, add_method_config in CONFIG_ADDERS:  # the methods' own keys
        add_method_config(cfg)
    register_old_key_errors(cfg)  # an old key name fails naming its new one (d2pose.config.renamed)
    if defrosted:
        cfg.freeze()
    return cfg


def get_d2pose_cfg() -> CN:
    """Detectron2's default config with every d2pose key added."""
    return add_d2pose_config(get_cfg())


_D2POSE_KEYS = None


def _flat_keys(node, prefix=""):
    out = set()
    for k, v in node.items():
        full = f"{prefix}{k}"
        out.add(full)
        if isinstance(v, CN):
            out |= _flat_keys(v, full + ".")
    return out


def d2pose_keys() -> set:
    """Every config key (full dotted name, nodes included) that d2pose adds to Detectron2's defaults."""
    global _D2POSE_KEYS
    if _D2POSE_KEYS is None:
        _D2POSE_KEYS = frozenset(_flat_keys(get_d2pose_cfg()) - _flat_keys(get_cfg()))
    return _D2POSE_KEYS
