"""Poseur (Mao et al., "Poseur: Direct Human Pose Regression with Transformers", ECCV 2022) in
d2pose: the top-down head (`PoseurHead`), the end-to-end Keypoint R-CNN heads (`PoseurROIHeads`,
`PoseurKeypointHead`), the refiner they share (noisy reference points, keypoint encoder, EMSDA
query decoder, RLE losses), its config keys, the converter of the authors' checkpoints and a look
inside the decoder (`visualize`: proposals, reference points, EMSDA samples).
Importing this package registers its components; `import d2pose` does that."""
from . import convert  # noqa: F401  (registers the "poseur" converter)
from .config import add_poseur_config
from .decoder import KeypointEncoder, PoseurDecoder, PoseurDecoderLayer, group_attention_mask, inverse_sigmoid, \
    noisy_reference_points
from .head import PoseurHead
from .neck import ChannelMapper
from .refiner import PoseurRefiner, poseur_rle_losses
from .roi_heads import PoseurKeypointHead, PoseurROIHeads
from . import visualize  # noqa: F401,E402  (registers the training demo's drawing of PoseurHead)

__all__ = ["add_poseur_config", "ChannelMapper", "KeypointEncoder", "PoseurDecoder", "PoseurDecoderLayer",
           "PoseurHead", "PoseurKeypointHead", "PoseurRefiner", "PoseurROIHeads", "group_attention_mask",
           "inverse_sigmoid", "noisy_reference_points", "poseur_rle_losses"]
