"""ONNX export of d2pose's crop-based pose models (the `TopDownPoseEstimator` meta-architecture).

Exportable: the network of a top-down model from its person crops to crop keypoints, i.e. what
`TopDownPoseEstimator._predict_crops` computes: normalisation, backbone, head, the flip test (when
on: the mirrored crop's pass and the head's own `flip_fuse`, inside the graph) and the head's
decoding (`head.predict`). This covers every crop-based method:

  * RLE (`RLERegressionHead`, `RLEIntegralHead`);
  * Poseur (`PoseurHead`): its deformable attention runs the PyTorch reference (the `grid_sample`
    path of `d2pose.layers.ms_deform_attn`, MODEL.MS_DEFORM_ATTN.BACKEND "torch"); a model built
    with the compiled kernels ("auto", "cpp", "cuda") is switched to the reference for the export,
    with a log message, and switched back afterwards;
  * TransPose (`TransPoseHead`), DARK or arg-max decoding included.

The graph (`CropPoseModel`): input "crops" (B, 3, H, W), uint8 (or float32 with
`input_dtype=torch.float32`), values 0-255 in the model's INPUT.FORMAT channel order and of its
INPUT.TOPDOWN.INPUT_SIZE; outputs, all float32 with the batch first: "keypoints" (B, K, 2) in crop
pixels (d2pose's continuous convention), "scores" (B, K), then the head's extras in sorted name
order (e.g. "pred_keypoint_sigmas" (B, K, 2) of the RLE and Poseur heads). The batch axis is
dynamic (named "batch"). Everything runs in float32: TEST.AUTOCAST_DTYPE does not apply.

Not exported:
  * the person detector and the pose network as one model: detection, cropping (the affine warp of
    each person box) and the inverse affine map of the crop keypoints back to the image stay in
    Python (`TopDownPoseEstimator._crop_inputs` / `_to_instances`, d2pose.data.transforms.affine);
    export the detector with Detectron2's own tools (detectron2.export);
  * Keypoint R-CNN (RLE's and Poseur's ROI keypoint heads; MODEL.META_ARCHITECTURE "PoseRCNN" or
    "GeneralizedRCNN"): refused with NotImplementedError;
  * any model whose MODEL.META_ARCHITECTURE is not "TopDownPoseEstimator" (NotImplementedError).

    from d2pose.export import export_onnx, run_onnx
    names = export_onnx(model, "pose.onnx")        # model: a built TopDownPoseEstimator, eval mode
    outputs = run_onnx("pose.onnx", crops)          # crops: (B, 3, H, W) uint8 numpy array
    dict(zip(names, outputs))["keypoints"]          # (B, K, 2) crop pixels

The exporter is torch.export's (`dynamo=True`) when onnxscript is installed and it succeeds, else
the TorchScript-based one (`dynamo=False`), the one the tests run. `tools/export_onnx.py` is the
command line.
"""
import contextlib
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..layers import EMSDA, MSDeformAttn
from ..modeling.meta_arch.topdown import TopDownPoseEstimator

__all__ = ["CropPoseModel", "export_onnx", "run_onnx", "onnx_session", "max_relative_errors", "check_exportable",
           "check_exportable_config", "reference_deformable_attention", "DEFAULT_OPSET", "INPUT_NAME", "BATCH_AXIS"]

logger = logging.getLogger(__name__)

#: ONNX opset of the export, the first with LayerNormalization (one node per Transformer norm of
#: Poseur and TransPose instead of its decomposition). The lowest that export: RLE 11, TransPose 14
#: (scaled dot-product attention), Poseur 16 (GridSample of the deformable attention).
DEFAULT_OPSET = 17
INPUT_NAME = "crops"
BATCH_AXIS = "batch"

_TOPDOWN = "TopDownPoseEstimator"


def _refusal(arch: str, keypoint_rcnn: bool) -> NotImplementedError:
    if keypoint_rcnn:
        return NotImplementedError(
            f"MODEL.META_ARCHITECTURE {arch!r} (Keypoint R-CNN with an ROI keypoint head) is not exportable to "
            f"ONNX by d2pose: only the crop-based models of MODEL.META_ARCHITECTURE {_TOPDOWN!r} are (RLE, Poseur, "
            "TransPose top-down configs); export a Keypoint R-CNN with Detectron2's own tools (detectron2.export)")
    return NotImplementedError(
        f"MODEL.META_ARCHITECTURE {arch!r} is not exportable to ONNX by d2pose: only the crop-based models of "
        f"MODEL.META_ARCHITECTURE {_TOPDOWN!r} are (RLE, Poseur, TransPose top-down configs)")


def check_exportable_config(cfg) -> None:
    """NotImplementedError naming MODEL.META_ARCHITECTURE unless the config builds a crop-based
    model (checked before building it)."""
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch != _TOPDOWN:
        raise _refusal(arch, bool(cfg.MODEL.KEYPOINT_ON))


def check_exportable(model: nn.Module) -> None:
    """NotImplementedError naming MODEL.META_ARCHITECTURE unless `model` is a TopDownPoseEstimator."""
    if isinstance(model, TopDownPoseEstimator):
        return
    roi_heads = getattr(model, "roi_heads", None)
    keypoint_rcnn = roi_heads is not None and (getattr(roi_heads, "keypoint_on", False)
                                               or hasattr(roi_heads, "keypoint_head"))
    raise _refusal(type(model).__name__, keypoint_rcnn)


class CropPoseModel(nn.Module):
    """A TopDownPoseEstimator's crop inference as one traceable module (see the module docstring).

    forward(crops (B, 3, H, W) uint8 or float, 0-255, INPUT.FORMAT order) -> tuple of float32
    tensors named by :attr:`output_names`: keypoints (B, K, 2) in crop pixels, scores (B, K), then
    each extra of `head.predict` in sorted name order. The same computation as the model's
    `_predict_crops` (its `_normalize`, backbone, head, `head.flip_fuse`, `head.predict`), in
    float32 without autocast.
    """

    def __init__(self, model: nn.Module, flip_test: Optional[bool] = None):
        """
        Args:
            model: a built TopDownPoseEstimator (its parameters are shared, not copied).
            flip_test: run the flip test (None: the model's `flip_test`); needs the model's
                `flip_indices` (the dataset's keypoint_flip_indices metadata).
        """
        super().__init__()
        check_exportable(model)
        if flip_test is None:
            flip_test = model.flip_test
        if flip_test and model.flip_indices is None:
            raise ValueError("flip test requested but the model has no flip_indices (the keypoint_flip_indices "
                             "metadata of its DATASETS.TEST / TRAIN); export without the flip test")
        self.model = model
        self.flip_test = bool(flip_test)
        self._extra_names: Optional[List[str]] = None
        self.training = model.training  # a new module is in training mode: take the model's

    @property
    def input_size(self) -> Tuple[int, int]:
        """Crop (W, H) (INPUT.TOPDOWN.INPUT_SIZE)."""
        return self.model.input_size

    @property
    def num_keypoints(self) -> int:
        return self.model.head.num_keypoints

    def _predict(self, crops: torch.Tensor):
        model = self.model
        images = model._normalize(crops)
        with torch.autocast(images.device.type, enabled=False):
            outputs = model.head(model.backbone(images))
            if self.flip_test:
                flipped = model.head(model.backbone(images.flip(-1)))
                outputs = model.head.flip_fuse(outputs, flipped, model.flip_indices)
            return model.head.predict(outputs)

    def forward(self, crops: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        coords, scores, extras = self._predict(crops)
        names = sorted(extras)
        if self._extra_names is None:
            self._extra_names = names
        return (coords.float(), scores.float()) + tuple(extras[k].float() for k in names)

    @property
    def output_names(self) -> List[str]:
        """["keypoints", "scores", *sorted extra names] (the extras found by one forward pass on a
        blank crop the first time they are asked for before any forward)."""
        if self._extra_names is None:
            W, H = self.input_size
            blank = torch.zeros(1, len(self.model.pixel_mean), H, W, device=self.model.device)
            with _eval_mode(self), torch.no_grad():
                self(blank)
        return ["keypoints", "scores"] + list(self._extra_names)

    def outputs_dict(self, crops: torch.Tensor) -> Dict[str, torch.Tensor]:
        """forward's outputs by name."""
        return dict(zip(self.output_names, self(crops)))


def _deformable_modules(module: nn.Module):
    return [m for m in module.modules() if isinstance(m, (MSDeformAttn, EMSDA))]


@contextlib.contextmanager
def reference_deformable_attention(module: nn.Module):
    """Within the context every MSDeformAttn / EMSDA of `module` runs the PyTorch reference
    (backend "torch", the grid_sample path that traces to ONNX GridSample) whatever its
    MODEL.MS_DEFORM_ATTN.BACKEND; the backends are restored on exit. Logs the switch."""
    switched = [(m, m.backend) for m in _deformable_modules(module) if m.backend != "torch"]
    if switched:
        logger.info("ONNX export: %d deformable attention module(s) switched from MODEL.MS_DEFORM_ATTN.BACKEND %s to "
                    "'torch' (the grid_sample reference path) for the export; restored afterwards",
                    len(switched), sorted({b for _, b in switched}))
    try:
        for m, _ in switched:
            m.backend = "torch"
        yield
    finally:
        for m, backend in switched:
            m.backend = backend


@contextlib.contextmanager
def _eval_mode(module: nn.Module):
    """Every submodule in eval mode within the context (BatchNorm must not update its statistics on
    the example crops); each one's training flag is restored on exit."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def _export_mode(wrapper: CropPoseModel):
    """eval mode, no MHA fast path (its fused op has no ONNX form), reference deformable attention."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with _eval_mode(wrapper), reference_deformable_attention(wrapper), torch.no_grad():
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _has_onnxscript() -> bool:
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def export_onnx(model: nn.Module, path: str, *, batch: int = 2, opset: int = DEFAULT_OPSET,
                flip_test: Optional[bool] = None, dynamic_batch: bool = True,
                input_dtype: torch.dtype = torch.uint8, dynamo: Optional[bool] = None) -> List[str]:
    """Exports a TopDownPoseEstimator's crop inference (:class:`CropPoseModel`) to `path`.

    Args:
        model: a TopDownPoseEstimator (or a CropPoseModel); others raise NotImplementedError.
        path: the .onnx file (replaced if it exists; the command line refuses that without
            --overwrite).
        batch: the batch of the example crops traced.
        opset: ONNX opset (the lowest that export: RLE 11, TransPose 14, Poseur 16).
        flip_test: flip test in the graph (None: the model's TEST.KEYPOINT_FLIP).
        dynamic_batch: the batch axis of "crops" and of every output is dynamic ("batch").
        input_dtype: torch.uint8 or torch.float32, the type of the "crops" input.
        dynamo: True: torch.export's exporter only; False: the TorchScript-based one only; None:
            torch.export's when onnxscript is installed, the TorchScript-based one if that is
            absent or fails.

    Returns:
        the output names: ["keypoints", "scores", *sorted extras].
    """
    wrapper = model if isinstance(model, CropPoseModel) else CropPoseModel(model, flip_test)
    if flip_test is not None and bool(flip_test) != wrapper.flip_test:
        raise ValueError(f"flip_test={flip_test} differs from the given CropPoseModel's {wrapper.flip_test}")
    if input_dtype not in (torch.uint8, torch.float32):
        raise ValueError(f"input_dtype must be torch.uint8 or torch.float32, got {input_dtype}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if wrapper.model.inference_dtype is not None:
        logger.info("ONNX export: the graph runs in float32 (TEST.AUTOCAST_DTYPE's %s is not applied)",
                    str(wrapper.model.inference_dtype).replace("torch.", ""))
    W, H = wrapper.input_size
    C = len(wrapper.model.pixel_mean)
    generator = torch.Generator().manual_seed(0)
    crops = torch.randint(0, 256, (batch, C, H, W), generator=generator, dtype=torch.uint8)
    crops = crops.to(device=wrapper.model.device, dtype=input_dtype)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with _export_mode(wrapper):
        names = wrapper.output_names
        axes = {n: {0: BATCH_AXIS} for n in [INPUT_NAME] + names} if dynamic_batch else None
        kwargs = dict(input_names=[INPUT_NAME], output_names=names, opset_version=opset, dynamic_axes=axes)
        use_dynamo = _has_onnxscript() if dynamo is None else dynamo
        if use_dynamo:
            try:
                torch.onnx.export(wrapper, (crops,), path, dynamo=True, external_data=False, **kwargs)
                if dynamic_batch and not _batch_is_dynamic(path):
                    raise RuntimeError("the exported graph has a fixed batch size")
            except Exception as e:  # noqa: BLE001 - any failure of the new exporter falls back
                if dynamo:
                    raise
                logger.warning("ONNX export: the torch.export-based exporter failed (%s: %s); using the "
                               "TorchScript-based exporter", type(e).__name__, e)
                use_dynamo = False
        if not use_dynamo:
            import warnings

            with warnings.catch_warnings():
                # the deprecation notice of the TorchScript-based exporter; the tracer's notes on
                # Python values taken from shapes (the crop size is fixed by the config); the notes on
                # reversing slices (flip) left unfolded and on advanced indexing with negative indices
                # (DARK's stencil indexes a padded map, its indices are >= 0)
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.filterwarnings("ignore", "Constant folding - Only steps=1", UserWarning)
                warnings.filterwarnings("ignore", "Exporting aten::index operator of advanced indexing", UserWarning)
                torch.onnx.export(wrapper, (crops,), path, dynamo=False, do_constant_folding=True, **kwargs)
    logger.info("ONNX export: %s (opset %d, %s, %dx%d crops, flip test %s, outputs %s)", path, opset,
                "dynamic batch" if dynamic_batch else f"batch {batch}", W, H, "on" if wrapper.flip_test else "off",
                names)
    return names


def _batch_is_dynamic(path: str) -> bool:
    """Whether the first axis of every input and output of the ONNX file is symbolic."""
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    return all(v.type.tensor_type.shape.dim[0].dim_param for v in list(graph.input) + list(graph.output))


def _numpy_type(onnx_type: str):
    types = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(double)": np.float64}
    if onnx_type not in types:
        raise TypeError(f"unsupported ONNX input type {onnx_type}")
    return types[onnx_type]


def onnx_session(path: str, intra_op_num_threads: Optional[int] = None):
    """An onnxruntime InferenceSession on the CPU (CPUExecutionProvider)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if intra_op_num_threads:
        options.intra_op_num_threads = int(intra_op_num_threads)
        options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run_onnx(path, crops: np.ndarray, intra_op_num_threads: Optional[int] = None) -> List[np.ndarray]:
    """Runs an exported model with onnxruntime on the CPU.

    Args:
        path: the .onnx file, or an onnxruntime InferenceSession (from :func:`onnx_session`).
        crops: (B, 3, H, W) crops, 0-255, INPUT.FORMAT order (numpy or torch; cast to the graph's
            input type).
        intra_op_num_threads: onnxruntime's intra-op threads (None: its default).

    Returns:
        the outputs in the graph's order (keypoints, scores, extras).
    """
    session = onnx_session(path, intra_op_num_threads) if isinstance(path, (str, os.PathLike)) else path
    if isinstance(crops, torch.Tensor):
        crops = crops.detach().cpu().numpy()
    inp = session.get_inputs()[0]
    crops = np.ascontiguousarray(crops, dtype=_numpy_type(inp.type))
    return session.run(None, {inp.name: crops})


def max_relative_errors(outputs: Sequence[np.ndarray], references: Sequence[np.ndarray]) -> List[float]:
    """Per output: max |a - b| / max(max |b|, 1e-6) (the error relative to the reference's scale)."""
    errors = []
    for a, b in zip(outputs, references):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape:
            raise ValueError(f"shape {a.shape} vs reference {b.shape}")
        scale = max(float(np.abs(b).max()) if b.size else 0.0, 1e-6)
        errors.append(float(np.abs(a - b).max()) / scale if b.size else 0.0)
    return errors
