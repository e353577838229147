#!/usr/bin/env python
"""Pose estimation on one's own images, videos or a webcam, Detectron2's demo style.

    python tools/demo.py --config-file CFG --input IMAGES_OR_GLOBS ... --output DIR [--json FILE]
                         [--opts KEY VALUE ...]
    python tools/demo.py --config-file CFG --video-input FILE --output DIR [--json FILE] [--smooth]
    python tools/demo.py --config-file CFG --webcam --output DIR   (Ctrl-C stops)

Any d2pose config works through Detectron2's `DefaultPredictor`: a top-down one (RLE, Poseur,
TransPose) finds the people with its person detector (`MODEL.TOPDOWN.DETECTOR.CONFIG_FILE` /
`WEIGHTS`; without one each image is one person), a Keypoint R-CNN one with its own boxes. E.g.

    python tools/demo.py --config-file configs/RLE/synthetic_rle_topdown.yaml --input photos/*.jpg \\
        --output out/ --json out/poses.json --opts MODEL.WEIGHTS output/synthetic_rle_topdown/model_final.pth \\
        MODEL.TOPDOWN.DETECTOR.CONFIG_FILE configs/Detectors/synthetic_person_faster_rcnn.yaml \\
        MODEL.TOPDOWN.DETECTOR.WEIGHTS output/synthetic_person_faster_rcnn/model_final.pth

Images are read with Detectron2's `read_image` (EXIF orientation applied; grayscale, palette and
alpha images converted), any size. Each output image shows every person scoring at least
--confidence-threshold: box, skeleton with the dataset's connection rules (Detectron2's
`Visualizer`), keypoints scoring below --keypoint-threshold left out, and the person's score (and
track id for video). `--json` writes a COCO-format result list of every prediction (keypoints as
COCO pixel indices, bbox XYWH, score; "file_name" for images; "frame" and "track_id" for video).

Video: people keep an id across frames (d2pose.utils.tracking.PoseTracker: OKS between each person
and each live track's last pose, optimal assignment, box IoU where no keypoint is confident; a
track survives --max-age unmatched frames); `--smooth` filters each track's keypoints over time
with a One-Euro filter (--smooth-min-cutoff Hz, --smooth-beta: less lag on fast motion). The output
is DIR/<video name>.mp4.

An input that cannot be read is reported with its name and the reason, and the rest go on; the exit
status is 1 when any input failed. Existing outputs are not overwritten without --overwrite.
"""
import argparse
import glob
import json
import logging
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

logger = logging.getLogger("d2pose.demo")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", help="image files, folders or glob patterns")
    src.add_argument("--video-input", help="a video file")
    src.add_argument("--webcam", action="store_true", help="camera 0 (Ctrl-C stops)")
    p.add_argument("--output", required=True, help="folder for the drawn images / video")
    p.add_argument("--json", default="", help="also write every prediction to this COCO-format json")
    p.add_argument("--confidence-threshold", type=float, default=0.3, help="people drawn: score at least this")
    p.add_argument("--keypoint-threshold", type=float, default=0.05, help="keypoints drawn: score above this")
    p.add_argument("--no-track", action="store_true", help="video: no person ids")
    p.add_argument("--max-age", type=int, default=30, help="video: frames a lost track is kept")
    p.add_argument("--match-thresh", type=float, default=0.3, help="video: least OKS / IoU to continue a track")
    p.add_argument("--smooth", action="store_true", help="video: One-Euro filter on each track's keypoints")
    p.add_argument("--smooth-min-cutoff", type=float, default=1.0)
    p.add_argument("--smooth-beta", type=float, default=0.05)
    p.add_argument("--max-frames", type=int, default=0, help="video / webcam: stop after this many frames (0 = all)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ...")
    return p.parse_args(argv)


def setup_cfg(args):
    import d2pose  # noqa: F401  (registers every component)
    from d2pose.config import get_d2pose_cfg

    cfg = get_d2pose_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts))
    cfg.freeze()
    return cfg


def expand_inputs(patterns):
    """Files named by each pattern (a file, a folder's images, or a glob), in order; a pattern that
    matches nothing is kept as is so that it is reported as unreadable."""
    files = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(f for f in glob.glob(os.path.join(pattern, "*")) if f.lower().endswith(IMAGE_EXTENSIONS))
        elif any(ch in pattern for ch in "*?["):
            found = sorted(glob.glob(pattern))
        else:
            found = [pattern]
        files.extend(found or [pattern])
    return files


def track_color(track_id: int):
    """A stable, distinct RGB colour in [0, 1] per id (golden-ratio hues)."""
    import colorsys

    return colorsys.hsv_to_rgb((0.61803398875 * int(track_id)) % 1.0, 0.85, 1.0)


class PoseDrawer:
    """Draws Instances with Detectron2's Visualizer: boxes, labels, skeletons."""

    def __init__(self, metadata, confidence_threshold: float, keypoint_threshold: float):
        self.metadata = metadata
        self.confidence_threshold = confidence_threshold
        self.keypoint_threshold = keypoint_threshold

    def __call__(self, bgr: np.ndarray, instances, track_ids=None) -> np.ndarray:
        from detectron2.utils.visualizer import Visualizer

        vis = Visualizer(bgr[:, :, ::-1], metadata=self.metadata)
        vis.keypoint_threshold = self.keypoint_threshold
        keep = np.nonzero(instances.scores.numpy() >= self.confidence_threshold)[0]
        if len(keep) == 0:
            return vis.output.get_image()[:, :, ::-1]
        scores = instances.scores.numpy()[keep]
        boxes = instances.pred_boxes.tensor.numpy()[keep] if instances.has("pred_boxes") else None
        kps = instances.pred_keypoints.numpy()[keep] if instances.has("pred_keypoints") else None
        if track_ids is not None:
            ids = np.asarray(track_ids)[keep]
            labels = [f"id {int(i)} {s:.2f}" for i, s in zip(ids, scores)]
            colors = [track_color(i) for i in ids]
        else:
            labels = [f"{s:.2f}" for s in scores]
            colors = None
        out = vis.overlay_instances(boxes=boxes, labels=labels, keypoints=kps, assigned_colors=colors)
        return out.get_image()[:, :, ::-1]


def coco_results(instances, image_id, **extra):
    """COCO keypoint results of one image / frame, with bbox (XYWH) and any extra fields."""
    from d2pose.evaluation.keypoint_evaluator import instances_to_keypoint_results

    results = instances_to_keypoint_results(instances, image_id)
    if instances.has("pred_boxes"):
        for r, b in zip(results, instances.pred_boxes.tensor.tolist()):
            r["bbox"] = [b[0], b[1], b[2] - b[0], b[3] - b[1]]
    for i, r in enumerate(results):
        for key, value in extra.items():
            r[key] = value[i] if isinstance(value, (list, np.ndarray)) else value
            if isinstance(r[key], np.generic):
                r[key] = r[key].item()
    return results


def _output_path(args, name: str) -> str:
    path = os.path.join(args.output, name)
    if os.path.exists(path) and not args.overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    return path


def run_images(args, predictor, drawer):
    """Predicts and draws each image; returns (results, failures)."""
    import cv2
    from tqdm import tqdm

    from d2pose.data import read_image

    files = expand_inputs(args.input)
    results, failures, written, names = [], [], [], set()
    for index, path in enumerate(tqdm(files, desc="images", unit="image", file=sys.stdout)):
        try:
            image = read_image(path, format="BGR")
        except (OSError, ValueError) as e:
            logger.error("skipped %s: %s", path, e)
            failures.append((path, str(e)))
            continue
        start = time.perf_counter()
        instances = predictor(image)["instances"].to("cpu")
        logger.info("%s: %d people in %.2f s", path, len(instances), time.perf_counter() - start)
        base = os.path.splitext(os.path.basename(path))[0]
        name = base + ".jpg" if base not in names else f"{base}_{index}.jpg"
        names.add(base)
        out = _output_path(args, name)
        cv2.imwrite(out, drawer(image, instances))
        written.append(out)
        results += coco_results(instances, index, file_name=path)
    return results, failures, written


def run_video(args, predictor, drawer, metadata):
    """Predicts, tracks and draws each frame of a video or the webcam; returns (results, failures)."""
    import cv2
    from tqdm import tqdm

    from d2pose.utils.tracking import PoseTracker

    source = 0 if args.webcam else args.video_input
    if not args.webcam and not os.path.isfile(source):
        logger.error("skipped %s: no such file", source)
        return [], [(source, "no such file")], []
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        logger.error("skipped %s: cannot be opened as a video", source)
        return [], [(str(source), "cannot be opened as a video")], []
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    if not np.isfinite(fps) or fps <= 0:
        fps = 30.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if not args.webcam else 0
    if args.max_frames:
        total = min(total, args.max_frames) if total > 0 else args.max_frames
    base = "webcam" if args.webcam else os.path.splitext(os.path.basename(source))[0]
    out_path = _output_path(args, base + ".mp4")
    sigmas = metadata.get("keypoint_oks_sigmas")
    tracker = None
    if not args.no_track:
        smoothing = (dict(min_cutoff=args.smooth_min_cutoff, beta=args.smooth_beta, d_cutoff=1.0)
                     if args.smooth else None)
        tracker = PoseTracker(sigmas if sigmas is not None else [0.07] * predictor_num_keypoints(predictor),
                              match_thresh=args.match_thresh, max_age=args.max_age, smoothing=smoothing, fps=fps)
    writer, results, failures, frame, seen = None, [], [], 0, set()
    bar = tqdm(total=total or None, desc="frames", unit="frame", file=sys.stdout)
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                break
            instances = predictor(image)["instances"].to("cpu")
            ids = None
            if tracker is not None and instances.has("pred_keypoints"):
                import torch

                ids, kps = tracker.update(instances.pred_keypoints.numpy(), instances.pred_boxes.tensor.numpy(),
                                          instances.scores.numpy(), t=frame / fps)
                instances.pred_keypoints = torch.as_tensor(kps, dtype=torch.float32)
                seen.update(int(i) for i in ids)
            drawn = drawer(image, instances, ids)
            if writer is None:
                h, w = drawn.shape[:2]
                writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                if not writer.isOpened():
                    raise RuntimeError(f"{out_path}: OpenCV cannot write an mp4v video here")
            writer.write(drawn)
            extra = {"frame": frame}
            if ids is not None:
                extra["track_id"] = [int(i) for i in ids]
            results += coco_results(instances, frame, **extra)
            frame += 1
            bar.update(1)
            if args.max_frames and frame >= args.max_frames:
                break
    except KeyboardInterrupt:
        logger.info("stopped after %d frames", frame)
    finally:
        bar.close()
        cap.release()
        if writer is not None:
            writer.release()
    if frame == 0:
        failures.append((str(source), "no frame could be read"))
        logger.error("skipped %s: no frame could be read", source)
        return results, failures, []
    logger.info("%d frames, %d tracks -> %s", frame, len(seen), out_path)
    return results, failures, [out_path]


def predictor_num_keypoints(predictor) -> int:
    head = getattr(predictor.model, "head", None)  # top-down heads; bottom-up models hold it themselves
    return int(getattr(head, "num_keypoints", getattr(predictor.model, "num_keypoints", 17)))


def main(argv=None):
    args = parse_args(argv)
    from detectron2.data import MetadataCatalog
    from detectron2.engine import DefaultPredictor
    from detectron2.utils.logger import setup_logger

    setup_logger(name="d2pose")
    cfg = setup_cfg(args)
    os.makedirs(args.output, exist_ok=True)
    if args.json and os.path.exists(args.json) and not args.overwrite:
        raise SystemExit(f"{args.json} exists; pass --overwrite to replace it")
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__unused")
    predictor = DefaultPredictor(cfg)
    drawer = PoseDrawer(metadata, args.confidence_threshold, args.keypoint_threshold)
    try:
        if args.input:
            results, failures, written = run_images(args, predictor, drawer)
        else:
            results, failures, written = run_video(args, predictor, drawer, metadata)
    except FileExistsError as e:
        raise SystemExit(str(e))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f)
        logger.info("%d predictions -> %s", len(results), args.json)
    logger.info("%d outputs in %s", len(written), args.output)
    for path, why in failures:
        logger.error("failed: %s (%s)", path, why)
    return dict(results=results, failures=failures, written=written)


if __name__ == "__main__":
    summary = main()
    sys.exit(1 if summary["failures"] else 0)
