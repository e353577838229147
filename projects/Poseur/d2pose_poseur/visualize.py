"""Looking inside a Poseur top-down model: coarse proposals, reference points and EMSDA samples.

Follows the Poseur paper's decoder (Mao et al., ECCV 2022: the coarse proposal from pooled features,
query decoder layers refining reference points with EMSDA); the command line is
projects/Poseur/tools/visualize_poseur.py.

For person crops of a dataset, draws on the input crop
  * the coarse proposal mu_f (the FC on pooled features) of every keypoint,
  * each decoder layer's reference points (where that layer attended from),
  * the EMSDA sampling points of one chosen keypoint in each layer (colour = feature level, size =
    attention weight), and
  * the final prediction with the skeleton,
one panel per stage, side by side, one image per crop.

    python projects/Poseur/tools/visualize_poseur.py --config-file projects/Poseur/configs/synthetic_poseur_topdown.yaml \
        MODEL.WEIGHTS output/synthetic_poseur_topdown/model_final.pth \
        --dataset synthetic_pose_val_mini --keypoint left_wrist --num 4 --output-dir output/vis_poseur

Existing files are not overwritten unless --overwrite is given.

With `--stats N` it measures instead of drawing: N people of --dataset cropped from their
ground-truth boxes without augmentation, and per stage (coarse proposal, every decoder layer) the
keypoints' mean and median error in crop pixels and their median sigma, then per layer the share of
attention each memory level gets, the mean distance of its samples from the reference point (crop
units) and the fraction of samples that fall outside their map (they read zeros). A decoder that
barely improves on its proposal, a sigma far from the error or samples off the map show here.

    python projects/Poseur/tools/visualize_poseur.py --config-file projects/Poseur/configs/synthetic_poseur_topdown.yaml \
        --dataset synthetic_pose_val --stats 256 MODEL.WEIGHTS output/synthetic_poseur_topdown/model_final.pth

Shape shorthand: R crops, K keypoints, L decoder layers, M heads, P points per level.
"""
import argparse
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from d2pose.utils.logger import setup_logger

from d2pose.config import get_d2pose_cfg
from d2pose.data.build import build_pose_train_loader
from d2pose.data.topdown import TopDownDatasetMapper
from d2pose.modeling import build_model
from d2pose.utils.visualizer import register_demo_drawing

__all__ = ["LEVEL_COLOURS", "keypoint_colours", "inspect_crops", "draw_panels", "decoder_statistics",
           "print_statistics", "dataset_statistics", "build_inspected_model", "draw_dataset_crops", "main"]

logger = logging.getLogger("d2pose.visualize_poseur")

LEVEL_COLOURS = [(0, 0, 255), (0, 165, 255), (0, 255, 0), (255, 255, 0), (255, 0, 255), (255, 0, 0)]  # BGR


def keypoint_colours(K: int) -> List[tuple]:
    """K distinct BGR colours (hues spread over the wheel)."""
    hsv = np.stack([np.linspace(0, 170, K, endpoint=False), np.full(K, 220), np.full(K, 255)], 1).astype(np.uint8)
    return [tuple(int(c) for c in bgr) for bgr in cv2.cvtColor(hsv[None], cv2.COLOR_HSV2BGR)[0]]


def inspect_crops(model: torch.nn.Module, crops: torch.Tensor) -> Dict[str, np.ndarray]:
    """Runs backbone + Poseur head (no flip) with sampling outputs; everything in crop pixels."""
    head = model.head
    if not hasattr(head, "decoder"):
        raise ValueError(f"MODEL.TOPDOWN.HEAD is {type(head).__name__}: this tool needs PoseurHead")
    head.return_sampling = True
    try:
        with torch.no_grad():
            out = head(model.backbone(model._normalize(crops)))
    finally:
        head.return_sampling = False
    size = torch.tensor(head.codec.input_size, dtype=torch.float32)
    K = head.num_keypoints
    return dict(
        coarse=(out["coarse_coords"] * size).numpy(),  # (R, K, 2)
        layer_refs=np.concatenate([(out["reference_points"][None, :, :K] * size).numpy(),
                                   (out["dec_coords"][:-1, :, :K] * size).numpy()]),  # what layer l attended from
        locations=(out["sampling_locations"][:, :, :K] * size).numpy(),  # (L, R, K, M, levels, P, 2)
        weights=out["attention_weights"][:, :, :K].numpy(),  # (L, R, K, M, levels, P)
        final=(out["coords"] * size).numpy(),
    )


def draw_panels(crop_bgr: np.ndarray, info: Dict[str, np.ndarray], r: int, k: int, skeleton: Sequence[Tuple[int, int]],
                scale: int = 4, names: Optional[Sequence[str]] = None) -> np.ndarray:
    """One crop's panels: coarse | layer 1..L (references + chosen keypoint's samples) | final."""
    H, W = crop_bgr.shape[:2]
    base = cv2.resize(crop_bgr, (W * scale, H * scale), interpolation=cv2.INTER_NEAREST)
    K = info["final"].shape[1]
    colours = keypoint_colours(K)

    def pt(p):
        return int(round(p[0] * scale)), int(round(p[1] * scale))

    def panel(title, points=None, samples=None, sample_weights=None, skeleton_points=None):
        img = base.copy()
        if samples is not None:  # (M, levels, P, 2) with weights (M, levels, P)
            wmax = max(float(sample_weights.max()), 1e-9)
            for (m, lvl, p) in np.ndindex(*sample_weights.shape):
                rad = 1 + int(round(5 * sample_weights[m, lvl, p] / wmax))
                cv2.circle(img, pt(samples[m, lvl, p]), rad, LEVEL_COLOURS[lvl % len(LEVEL_COLOURS)], -1, cv2.LINE_AA)
        if skeleton_points is not None:
            for a, b in skeleton:
                cv2.line(img, pt(skeleton_points[a]), pt(skeleton_points[b]), (255, 255, 255), 1, cv2.LINE_AA)
        if points is not None:
            for j in range(K):
                big = j == k
                cv2.circle(img, pt(points[j]), 5 if big else 3, colours[j], -1, cv2.LINE_AA)
                if big:
                    cv2.circle(img, pt(points[j]), 7, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.rectangle(img, (0, 0), (img.shape[1], 16), (0, 0, 0), -1)
        cv2.putText(img, title, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        return img

    panels = [panel("coarse proposal", points=info["coarse"][r])]
    for l in range(info["locations"].shape[0]):
        panels.append(panel(f"layer {l + 1}: refs + {names[k] if names else k} samples", points=info["layer_refs"][l, r],
                            samples=info["locations"][l, r, k], sample_weights=info["weights"][l, r, k]))
    panels.append(panel("prediction", points=info["final"][r], skeleton_points=info["final"][r]))
    return np.concatenate(panels, axis=1)


def decoder_statistics(model: torch.nn.Module, crops: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> Dict:
    """Per-stage errors and per-layer sampling statistics of a Poseur top-down model (see the module
    docstring). `target` (R, K, 2) normalised crop coordinates (the codec's), `weight` (R, K)."""
    head = model.head
    if not hasattr(head, "decoder"):
        raise ValueError(f"MODEL.TOPDOWN.HEAD is {type(head).__name__}: this tool needs PoseurHead")
    head.return_sampling, head.all_layer_outputs = True, True
    try:
        with torch.no_grad():
            out = head(model.backbone(model._normalize(crops)))
    finally:
        head.return_sampling, head.all_layer_outputs = False, False
    K = head.num_keypoints
    size = torch.tensor(head.codec.input_size, dtype=torch.float32)
    labelled = weight > 0

    def stage(coords, sigma):
        err = ((coords[:, :K].float() - target) * size).norm(dim=-1)[labelled]
        return dict(mean_px=float(err.mean()), median_px=float(err.median()),
                    median_sigma=float(sigma[:, :K].float()[labelled].median()))

    stages = {"coarse": stage(out["coarse_coords"], out["coarse_sigma"])}
    for l in range(out["dec_coords"].shape[0]):
        stages[f"layer{l}"] = stage(out["dec_coords"][l], out["dec_sigmas"][l])
    loc = out["sampling_locations"][:, :, :K]  # (L, R, K, M, levels, P, 2)
    att = out["attention_weights"][:, :, :K]  # (L, R, K, M, levels, P)
    refs = torch.cat([out["reference_points"][None, :, :K], out["dec_coords"][:-1, :, :K]])  # what layer l read from
    layers = []
    for l in range(loc.shape[0]):
        dist = (loc[l] - refs[l][:, :, None, None, None, :]).norm(dim=-1)  # (R, K, M, levels, P)
        outside = ((loc[l] < 0) | (loc[l] > 1)).any(-1)
        layers.append(dict(
            level_share=[float(att[l][..., v, :].sum(-1).mean()) for v in range(att.shape[-2])],
            level_distance=[float(dist[..., v, :].mean()) for v in range(dist.shape[-2])],
            level_outside=[float(outside[..., v, :].float().mean()) for v in range(outside.shape[-2])],
        ))
    return dict(stages=stages, layers=layers, num_crops=int(crops.shape[0]))


def print_statistics(stats: Dict, features: List[str]) -> None:
    """Prints `decoder_statistics` (`features`: the memory levels' names)."""
    print(f"{stats['num_crops']} crops; keypoint error in crop pixels and median sigma (crop units):")
    for name, s in stats["stages"].items():
        print(f"  {name:8s} mean {s['mean_px']:7.3f}  median {s['median_px']:7.3f}  sigma {s['median_sigma']:.4f}")
    print("per layer and memory level (" + ", ".join(features) + "): attention share / mean sample distance "
          "(crop units) / samples off the map")
    for l, s in enumerate(stats["layers"]):
        cells = [f"{a:.3f} / {d:.3f} / {o:.0%}" for a, d, o in zip(s["level_share"], s["level_distance"], s["level_outside"])]
        print(f"  layer{l}: " + " | ".join(cells))


def dataset_statistics(cfg: CfgNode, model: torch.nn.Module, dataset: str, num: int) -> Dict:
    """Prints and returns `decoder_statistics` of the first `num` people of `dataset` (ground-truth
    boxes, no augmentation)."""
    cfg = cfg.clone()
    cfg.DATASETS.TRAIN = (dataset,)
    t = cfg.INPUT.TOPDOWN
    t.SCALE_FACTOR, t.ROTATION_PROB, t.FLIP_PROB, t.HALF_BODY_PROB = 0.0, 0.0, 0.0, 0.0
    cfg.SOLVER.IMS_PER_BATCH = num
    cfg.DATALOADER.NUM_WORKERS = 0
    batch = next(iter(build_pose_train_loader(cfg)))
    crops = torch.stack([x["image"] for x in batch])
    target = torch.stack([x["target"] for x in batch]).float()
    weight = torch.stack([x["target_weight"] for x in batch]).float()
    if weight.dim() == 3:
        weight = weight[..., 0]
    stats = decoder_statistics(model, crops, target, weight)
    print_statistics(stats, list(cfg.MODEL.TOPDOWN.IN_FEATURES))
    return stats


def build_inspected_model(config_file: str, dataset: str, opts: Sequence[str]) -> Tuple[CfgNode, torch.nn.Module]:
    """(cfg, eval model on the CPU) of a Poseur top-down config with `opts` (MODEL.WEIGHTS loaded
    when set), for crops of `dataset`: no person detector is built."""
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    # crops only: no person detector to build or load
    cfg.MODEL.TOPDOWN.DETECTOR.CONFIG_FILE, cfg.MODEL.TOPDOWN.DETECTOR.WEIGHTS = "", ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.DATASETS.TEST = (dataset,)
    cfg.TEST.PERSON_DETECTIONS = ""
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    else:
        logger.warning("MODEL.WEIGHTS is empty: drawing an untrained model")
    return cfg, model


def _keypoint_index(keypoint: str, names: List[str]) -> int:
    k = int(keypoint) if keypoint.isdigit() else (names.index(keypoint) if keypoint in names else -1)
    if not 0 <= k < len(names):
        raise SystemExit(f"--keypoint {keypoint!r}: not one of {names}")
    return k


def draw_dataset_crops(cfg: CfgNode, model: torch.nn.Module, dataset: str, keypoint: str, num: int, scale: int,
                       output_dir: str, overwrite: bool = False) -> List[str]:
    """Draws the panels (`draw_panels`, the samples of `keypoint`: a name or an index) of the first
    `num` person crops of `dataset` into output_dir/poseur_<image id>_<person>.jpg; an existing file is
    refused unless `overwrite`. Returns the paths."""
    meta = MetadataCatalog.get(dataset)
    names = list(meta.keypoint_names)
    k = _keypoint_index(keypoint, names)
    skeleton = [(names.index(a), names.index(b)) for a, b, _ in meta.get("keypoint_connection_rules", [])]
    os.makedirs(output_dir, exist_ok=True)
    mapper = TopDownDatasetMapper(cfg, is_train=False)
    written = []
    for record in DatasetCatalog.get(dataset):
        if len(written) >= num:
            break
        x = mapper(record)
        if len(x["image"]) == 0:
            continue
        info = inspect_crops(model, x["image"])
        for r in range(min(len(x["image"]), num - len(written))):
            crop = x["image"][r].permute(1, 2, 0).numpy()
            if cfg.INPUT.FORMAT == "RGB":
                crop = crop[..., ::-1]
            path = os.path.join(output_dir, f"poseur_{record['image_id']}_{r}.jpg")
            if os.path.exists(path) and not overwrite:
                raise FileExistsError(f"{path} exists: pass --overwrite or choose another --output-dir")
            cv2.imwrite(path, draw_panels(np.ascontiguousarray(crop), info, r, k, skeleton, scale, names))
            logger.info("wrote %s", path)
            written.append(path)
    return written


def main(argv: Optional[List[str]] = None):
    """The command line (see the module docstring): the drawn paths, or with --stats the statistics."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--dataset", default="synthetic_pose_val_mini")
    p.add_argument("--keypoint", default="left_wrist", help="keypoint name or index whose samples are drawn")
    p.add_argument("--num", type=int, default=4, help="crops to draw")
    p.add_argument("--scale", type=int, default=4, help="upscaling of the crop for drawing")
    p.add_argument("--output-dir", default="", help="where the drawings go (required unless --stats)")
    p.add_argument("--stats", type=int, default=0, metavar="N",
                   help="print error and sampling statistics over N people instead of drawing")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    setup_logger(name="d2pose")
    cfg, model = build_inspected_model(args.config_file, args.dataset, args.opts)
    if args.stats > 0:
        return dataset_statistics(cfg, model, args.dataset, args.stats)
    if not args.output_dir:
        raise SystemExit("--output-dir is required (or --stats N to measure instead of drawing)")
    return draw_dataset_crops(cfg, model, args.dataset, args.keypoint, args.num, args.scale, args.output_dir,
                              args.overwrite)


@register_demo_drawing("PoseurHead")
def demo_drawing(config_file: str, dataset: str, weights: str, output_dir: str, num: int, opts: Sequence[str]) -> None:
    """The training demo's drawing: the panels of `num` crops of `dataset` into output_dir/vis_poseur."""
    inside = os.path.join(output_dir, "vis_poseur")
    drawn = main(["--config-file", config_file, "--dataset", dataset, "--num", str(num), "--output-dir", inside,
                  "--overwrite", "MODEL.WEIGHTS", weights] + list(opts))
    print(f"Poseur's coarse proposals, per-layer reference points and left-wrist EMSDA samples: "
          f"{len(drawn)} crops in {inside}")
