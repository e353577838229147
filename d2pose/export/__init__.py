"""Export of d2pose models to other runtimes: ONNX for the crop-based pose models
(`d2pose.export.onnx`; the command line is tools/export_onnx.py)."""
from .onnx import (BATCH_AXIS, DEFAULT_OPSET, INPUT_NAME, CropPoseModel, check_exportable, check_exportable_config,
                   export_onnx, max_relative_errors, onnx_session, reference_deformable_attention, run_onnx)

__all__ = ["CropPoseModel", "export_onnx", "run_onnx", "onnx_session", "max_relative_errors", "check_exportable",
           "check_exportable_config", "reference_deformable_attention", "DEFAULT_OPSET", "INPUT_NAME", "BATCH_AXIS"]
