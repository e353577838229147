"""Keypoint codecs: target encoding from keypoints and decoding of model outputs, apart from the heads.

One contract (`KeypointCodec`, `base`) and one module per family, each registered in `CODEC_REGISTRY`:

* `heatmap`: Gaussian heatmaps, "msra" (`MSRAHeatmap`) and "udp" (`UDPHeatmap`), DARK decoding;
* `regression`: normalised crop coordinates of the regression heads, "regression" (`RegressionCoords`);
* `box_relative`: box-relative coordinates of the ROI heads, "box_relative" (`BoxRelativeCoords`);
* `center_offset`: keypoint and centre heatmaps + centre-to-keypoint offsets of bottom-up methods,
  "center_offset" (`CenterOffsetCodec`).

Method packages register their own codecs beside these (e.g. TransPose's "transpose").
"""
from .base import CODEC_REGISTRY, KeypointCodec, build_codec, check_codec, register_codec
from .box_relative import BoxRelativeCoords
from .center_offset import CenterOffsetCodec
from .heatmap import HeatmapCodec, MSRAHeatmap, UDPHeatmap, dark_refine, gaussian_blur
from .regression import SCORE_FORMS, RegressionCoords, sigma_to_score

__all__ = ["KeypointCodec", "CODEC_REGISTRY", "register_codec", "build_codec", "check_codec", "HeatmapCodec",
           "MSRAHeatmap", "UDPHeatmap", "dark_refine", "gaussian_blur", "RegressionCoords", "SCORE_FORMS",
           "sigma_to_score", "BoxRelativeCoords", "CenterOffsetCodec"]
