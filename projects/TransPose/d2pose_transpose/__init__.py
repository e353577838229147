"""TransPose (Yang et al., "TransPose: Keypoint Localization via Transformer", ICCV 2021) in d2pose:
CNN stems (`build_resnet_s_backbone`, `build_hrnet_s_backbone`), the Transformer-encoder heatmap head
(`TransPoseHead`), dependency areas from its attention (`dependency`, drawn by `visualize`), its
config keys and the converter of the authors' checkpoints, the heatmap codec of the authors' target
convention ("transpose"). The other heatmap codecs, DARK decoding, the heatmap loss and the sine
position encoding are d2pose core primitives. Importing this package registers its components;
`import d2pose` does that."""
from . import convert  # noqa: F401  (registers the "transpose" converter)
from .codec import TransPoseHeatmap  # registers the "transpose" heatmap codec (the authors' target frame)
from .backbone import HRNetStem, build_hrnet_s_backbone, build_resnet_s_backbone
from .config import add_transpose_config
from .dependency import affected_areas, dependency_areas
from .encoder import TokenPositionEmbedding, TransformerEncoder, TransformerEncoderLayer
from .head import TransPoseHead
from . import visualize  # noqa: F401,E402  (registers the training demo's drawing of TransPoseHead)

__all__ = ["add_transpose_config", "TransPoseHeatmap", "HRNetStem", "build_hrnet_s_backbone", "build_resnet_s_backbone",
           "TokenPositionEmbedding", "TransformerEncoder", "TransformerEncoderLayer", "TransPoseHead",
           "dependency_areas", "affected_areas"]
