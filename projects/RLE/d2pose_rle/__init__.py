"""RLE (Li et al., "Human Pose Regression with Residual Log-likelihood Estimation", ICCV 2021) in
d2pose: the top-down heads (`RLERegressionHead`, `RLEIntegralHead`), the Keypoint R-CNN head
(`RLEKeypointHead`), its config keys and the converter of the authors' checkpoints. The RLE loss,
flow and output layers are d2pose core primitives (`d2pose.modeling`), shared with Poseur.
Importing this package registers its components; `import d2pose` does that."""
from . import convert  # noqa: F401  (registers the "rle" converter)
from .config import add_rle_config
from .heads import RLEIntegralHead, RLERegressionHead
from .roi_heads import RLEKeypointHead

__all__ = ["add_rle_config", "RLEIntegralHead", "RLERegressionHead", "RLEKeypointHead"]
