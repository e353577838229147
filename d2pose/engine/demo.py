"""The inference demo: pose estimation on one's own images, videos or a webcam through Detectron2's
`DefaultPredictor`, Detectron2's demo style (the command line is tools/demo.py).

    python tools/demo.py --config-file CFG --input IMAGES_FOLDERS_OR_GLOBS ... --output DIR [--json FILE]
                         [KEY VALUE ...]
    python tools/demo.py --config-file CFG --video-input FILE --output DIR [--json FILE] [--smooth]
    python tools/demo.py --config-file CFG --webcam --output DIR   (Ctrl-C stops)

Config overrides (KEY VALUE, e.g. MODEL.WEIGHTS model.pth) go at the end as train_net.py takes them, or
anywhere after --opts (Detectron2's demo style; d2pose.engine.cli).

Any d2pose config works through Detectron2's `DefaultPredictor`: a top-down one (RLE, Poseur,
TransPose) finds the people with its person detector (`MODEL.TOPDOWN.DETECTOR.CONFIG_FILE` /
`WEIGHTS`; without one each image is one person), a Keypoint R-CNN one with its own boxes. E.g.

    python tools/demo.py --config-file projects/RLE/configs/synthetic_rle_topdown.yaml --input photos/*.jpg \\
        --output out/ --json out/poses.json --opts MODEL.WEIGHTS output/synthetic_rle_topdown/model_final.pth \\
        MODEL.TOPDOWN.DETECTOR.CONFIG_FILE configs/Detectors/synthetic_person_faster_rcnn.yaml \\
        MODEL.TOPDOWN.DETECTOR.WEIGHTS output/synthetic_person_faster_rcnn/model_final.pth

Images are read with Detectron2's `read_image` (EXIF orientation applied; grayscale, palette and
alpha images converted), any size. Each output image shows every person scoring at least
--confidence-threshold (0.5, as Detectron2's demo): box, skeleton with the dataset's connection rules (Detectron2's
`Visualizer`), keypoints scoring below --keypoint-threshold left out, and a label in Detectron2's
style, "person 97%" from the person detector's score (and the track id for video); people without a
detector score (no detector: the whole image is the person) show their pose score, the mean
keypoint score, as "pose 73%" with a legend saying so (d2pose.utils.visualizer.PoseDrawer). `--json` writes a COCO-format result list of every prediction (keypoints as
COCO pixel indices, bbox XYWH, score; "file_name" for images; "frame" and "track_id" for video).

Video: people keep an id across frames (d2pose.utils.tracking.PoseTracker: OKS between each person
and each live track's last pose, optimal assignment, box IoU where no keypoint is confident; a
track survives --max-age unmatched frames); `--smooth` filters each track's keypoints over time
with a One-Euro filter (--smooth-min-cutoff Hz, --smooth-beta: less lag on fast motion). The output
is DIR/<video name>.mp4. A video file's frames are timed by its nominal frame rate; a webcam's by the
wall-clock time at which each frame arrived (its nominal rate is often not what it delivers while the
model runs): the filter's time steps are the measured ones, and the output video plays at the rate
measured over its first frames.

Each image's drawing is DIR/<name>.jpg; inputs whose names collide (x.png, y/x.png) keep their path
under the folder they share (x.jpg, y_x.jpg). The log's count of people per image is the number
drawn (those below --confidence-threshold are only in the json). An input that names no image (a
folder without images, a pattern matching nothing, a video: that is --video-input's), that cannot
be read, or on which the model fails, is reported with its name and the reason, and the rest go on
(the json holds their predictions); the exit status is 1 when any input failed. Existing outputs
are refused, before the model is built, unless --overwrite is given.
"""
import argparse
import glob
import json
import logging
import os
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.structures import Instances
from tqdm import tqdm

from ..config import get_d2pose_cfg
from ..data import read_image
from ..evaluation.coco_results import instances_to_coco_results
from ..utils.logger import setup_logger
from ..utils.tracking import PoseTracker
from ..utils.visualizer import PoseDrawer
from .cli import add_config_overrides, parse_with_overrides
from .predictor import PosePredictor

__all__ = ["IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "VIDEO_HINT", "RATE_FRAMES", "parse_args", "setup_cfg", "find_inputs",
           "expand_inputs", "output_names", "planned_outputs", "refuse_existing_outputs", "run_images",
           "measured_fps", "run_video", "predictor_num_keypoints", "main"]

logger = logging.getLogger("d2pose.demo")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
#: files that --input refuses with a hint to give them with --video-input
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")
VIDEO_HINT = "a video: give it with --video-input (--input takes images)"

#: (results, failures as (input, reason), written files) of a run
RunOutput = Tuple[List[Dict], List[Tuple[str, str]], List[str]]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The demo's command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", help="image files, folders or glob patterns")
    src.add_argument("--video-input", help="a video file")
    src.add_argument("--webcam", action="store_true", help="camera 0 (Ctrl-C stops)")
    p.add_argument("--output", required=True, help="folder for the drawn images / video")
    p.add_argument("--json", default="", help="also write every prediction to this COCO-format json")
    p.add_argument("--confidence-threshold", type=float, default=0.5,
                   help="people drawn: detector score (else pose score), 0-1, at least this")
    p.add_argument("--keypoint-threshold", type=float, default=0.05, help="keypoints drawn: score above this")
    p.add_argument("--no-track", action="store_true", help="video: no person ids")
    p.add_argument("--max-age", type=int, default=30, help="video: frames a lost track is kept")
    p.add_argument("--match-thresh", type=float, default=0.3, help="video: least OKS / IoU to continue a track")
    p.add_argument("--smooth", action="store_true", help="video: One-Euro filter on each track's keypoints")
    p.add_argument("--smooth-min-cutoff", type=float, default=1.0)
    p.add_argument("--smooth-beta", type=float, default=0.05)
    p.add_argument("--max-frames", type=int, default=0, help="video / webcam: stop after this many frames (0 = all)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_config_overrides(p)
    return parse_with_overrides(p, argv)


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    """The frozen d2pose config of --config-file with the KEY VALUE overrides."""
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts))
    cfg.freeze()
    return cfg


def _pattern_files(pattern: str) -> Tuple[List[str], str]:
    """(the files one --input pattern names, why it names none or "")."""
    if os.path.isdir(pattern):
        found = sorted(f for f in glob.glob(os.path.join(pattern, "*")) if os.path.isfile(f))
        images = [f for f in found if f.lower().endswith(IMAGE_EXTENSIONS)]
        if images:
            return images, ""
        why = f"the folder holds no images (looked for {', '.join(IMAGE_EXTENSIONS)})"
        videos = [os.path.basename(f) for f in found if f.lower().endswith(VIDEO_EXTENSIONS)]
        if videos:
            why += f"; its videos ({', '.join(videos[:3])}{', ...' if len(videos) > 3 else ''}) go one at a time " \
                   "to --video-input"
        return [], why
    if any(ch in pattern for ch in "*?["):
        found = sorted(f for f in glob.glob(pattern) if os.path.isfile(f))
        return found, "" if found else "no file matches this pattern"
    return ([pattern], "") if os.path.exists(pattern) else ([], "no such file or folder")


def find_inputs(patterns: Sequence[str]) -> Tuple[List[str], List[Tuple[str, str]]]:
    """(the image files named by `patterns` (files, folders' images, glob patterns), in order;
    (input, why it names no image) for each pattern that names none and each video among them)."""
    files, problems = [], []
    for pattern in patterns:
        found, why = _pattern_files(pattern)
        if why:
            problems.append((pattern, why))
        for path in found:
            if path.lower().endswith(VIDEO_EXTENSIONS):
                problems.append((path, VIDEO_HINT))
            else:
                files.append(path)
    return files, problems


def expand_inputs(patterns: Sequence[str]) -> List[str]:
    """The image files named by `patterns`, in order (`find_inputs` without the problems)."""
    return find_inputs(patterns)[0]


def output_names(files: Sequence[str], extension: str = ".jpg") -> List[str]:
    """One distinct output file name per input: its name with `extension`, or, for inputs whose names
    collide, their paths under the folder they share joined by "_" (x.png, y/x.png -> x.jpg, y_x.jpg);
    a name still taken gets a number (x_2.jpg)."""
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    groups: Dict[str, List[int]] = {}
    for i, stem in enumerate(stems):
        groups.setdefault(stem, []).append(i)
    wanted = list(stems)
    for indices in groups.values():
        if len(indices) > 1:
            paths = [os.path.abspath(files[i]) for i in indices]
            root = os.path.commonpath([os.path.dirname(p) for p in paths])
            for i, path in zip(indices, paths):
                rel = os.path.splitext(os.path.relpath(path, root))[0]
                wanted[i] = rel.replace(os.sep, "_")
    names, taken = [], set()
    for stem in wanted:
        name, n = stem + extension, 1
        while name.lower() in taken:
            n += 1
            name = f"{stem}_{n}{extension}"
        taken.add(name.lower())
        names.append(name)
    return names


def planned_outputs(args: argparse.Namespace, files: Sequence[str] = ()) -> List[str]:
    """The files the demo will write: a drawing per image of `files` (--input), or the video of
    --video-input / the webcam, and --json."""
    if args.input:
        paths = [os.path.join(args.output, name) for name in output_names(files)]
    else:
        base = "webcam" if args.webcam else os.path.splitext(os.path.basename(args.video_input))[0]
        paths = [os.path.join(args.output, base + ".mp4")]
    return paths + ([args.json] if args.json else [])


def refuse_existing_outputs(args: argparse.Namespace, files: Sequence[str] = ()) -> None:
    """Exits, naming them, when outputs the run would write exist and --overwrite is not given
    (before the model is built: nothing is computed to be thrown away)."""
    existing = [p for p in planned_outputs(args, files) if os.path.exists(p)]
    if existing and not args.overwrite:
        others = existing[1:]
        shown = ", ".join(others[:4]) + (", ..." if len(others) > 4 else "")
        also = f" and the {len(others)} other existing outputs ({shown})" if others else ""
        raise SystemExit(f"{existing[0]} exists; pass --overwrite to replace it{also}, or choose another --output")


def _output_path(args: argparse.Namespace, name: str) -> str:
    path = os.path.join(args.output, name)
    if os.path.exists(path) and not args.overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    return path


def run_images(args: argparse.Namespace, predictor: DefaultPredictor, drawer: PoseDrawer) -> RunOutput:
    """Predicts and draws each image of --input; returns (results, failures, written files)."""
    files, failures = find_inputs(args.input)
    for path, why in failures:
        logger.error("skipped %s: %s", path, why)
    names = output_names(files)
    results, written = [], []
    for index, path in enumerate(tqdm(files, desc="images", unit="image", file=sys.stdout)):
        try:
            image = read_image(path, format="BGR")
        except (OSError, ValueError) as e:
            logger.error("skipped %s: %s", path, e)
            failures.append((path, str(e)))
            continue
        start = time.perf_counter()
        try:
            instances = predictor(image)["instances"].to("cpu")
        except Exception as e:  # a model error on one image: report it, go on with the others
            logger.exception("skipped %s: the model failed on it", path)
            failures.append((path, f"the model failed: {type(e).__name__}: {e}"))
            continue
        _log_count(path, drawer.people_drawn(instances), len(instances), args.confidence_threshold,
                   time.perf_counter() - start)
        out = _output_path(args, names[index])
        cv2.imwrite(out, drawer(image, instances))
        written.append(out)
        results += instances_to_coco_results(instances, index, file_name=path)
    return results, failures, written


def _log_count(path: str, drawn: int, predicted: int, threshold: float, seconds: float) -> None:
    """Logs the people drawn on an image (those below the threshold are only in the json)."""
    below = f" ({predicted - drawn} more below --confidence-threshold {threshold:g})" if predicted > drawn else ""
    logger.info("%s: %d %s drawn%s in %.2f s", path, drawn, "person" if drawn == 1 else "people", below, seconds)


def predictor_num_keypoints(predictor: DefaultPredictor) -> int:
    """K of the predictor's model (17 where the model does not say)."""
    head = getattr(predictor.model, "head", None)  # top-down heads; bottom-up models hold it themselves
    return int(getattr(head, "num_keypoints", getattr(predictor.model, "num_keypoints", 17)))


def _make_tracker(args: argparse.Namespace, predictor: DefaultPredictor, metadata, fps: float) -> Optional[PoseTracker]:
    if args.no_track:
        return None
    smoothing = dict(min_cutoff=args.smooth_min_cutoff, beta=args.smooth_beta, d_cutoff=1.0) if args.smooth else None
    sigmas = metadata.get("keypoint_oks_sigmas")
    return PoseTracker(sigmas if sigmas is not None else [0.07] * predictor_num_keypoints(predictor),
                       match_thresh=args.match_thresh, max_age=args.max_age, smoothing=smoothing, fps=fps)


#: frames of a live source timed before its output video is opened at their measured rate
RATE_FRAMES = 10


def _open_video(args: argparse.Namespace, open_capture: Callable = cv2.VideoCapture
                ) -> Tuple[Optional[cv2.VideoCapture], float, int, str]:
    """(capture, nominal fps, expected frames or 0, "") of --video-input / the webcam, or (None, 0, 0, why not)."""
    source = 0 if args.webcam else args.video_input
    if not args.webcam and not os.path.isfile(source):
        return None, 0.0, 0, "no such file"
    cap = open_capture(source)
    if not cap.isOpened():
        return None, 0.0, 0, "cannot be opened as a video"
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    if not np.isfinite(fps) or fps <= 0:
        fps = 30.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if not args.webcam else 0
    if args.max_frames:
        total = min(total, args.max_frames) if total > 0 else args.max_frames
    return cap, fps, total, ""


def _track(tracker: Optional[PoseTracker], instances: Instances, t: float) -> Optional[np.ndarray]:
    """Track ids (R,) of this frame's people, their keypoints replaced by the (smoothed) tracked ones."""
    if tracker is None or not instances.has("pred_keypoints"):
        return None
    ids, kps = tracker.update(instances.pred_keypoints.numpy(), instances.pred_boxes.tensor.numpy(),
                              instances.scores.numpy(), t=t)
    instances.pred_keypoints = torch.as_tensor(kps, dtype=torch.float32)
    return ids


def measured_fps(times: Sequence[float], nominal: float) -> float:
    """Frames per second of frames that arrived at `times` (seconds), or `nominal` without two distinct times."""
    if len(times) < 2 or not times[-1] > times[0]:
        return nominal
    return (len(times) - 1) / (times[-1] - times[0])


class _VideoOutput:
    """The drawn frames into an mp4v video; for a live source, the first RATE_FRAMES frames are held
    until their arrival times give the rate the video is written at."""

    def __init__(self, path: str, nominal_fps: float, live: bool):
        self.path, self.fps, self.live = path, nominal_fps, live
        self.writer, self.held, self.times = None, [], []

    def add(self, drawn: np.ndarray, t: float) -> None:
        self.held.append(drawn)
        self.times.append(t)
        if self.writer is None and (not self.live or len(self.times) >= RATE_FRAMES):
            self._open()
        if self.writer is not None:
            self._flush()

    def _open(self) -> None:
        if self.live:
            self.fps = measured_fps(self.times, self.fps)
            logger.info("live source: %.1f frames per second measured over %d frames", self.fps, len(self.times))
        h, w = self.held[0].shape[:2]
        self.writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
        if not self.writer.isOpened():
            raise RuntimeError(f"{self.path}: OpenCV cannot write an mp4v video here")

    def _flush(self) -> None:
        for drawn in self.held:
            self.writer.write(drawn)
        self.held.clear()

    def close(self) -> None:
        """Writes what is held (a live source of fewer than RATE_FRAMES frames) and closes the file."""
        if self.held and self.writer is None:
            self._open()
        if self.writer is not None:
            self._flush()
            self.writer.release()


def run_video(args: argparse.Namespace, predictor: DefaultPredictor, drawer: PoseDrawer, metadata, *,
              open_capture: Callable = cv2.VideoCapture, clock: Callable[[], float] = time.monotonic) -> RunOutput:
    """Predicts, tracks and draws each frame of --video-input or the webcam into
    --output/<video name>.mp4; returns (results, failures, written files).

    A file's frame i is at i / (its nominal fps) seconds; a webcam's frames at the `clock` time
    (seconds) at which each was read, counted from the first. `open_capture(source)` opens the
    video (cv2.VideoCapture's interface: isOpened, get, read, release)."""
    source = 0 if args.webcam else args.video_input
    cap, fps, total, why = _open_video(args, open_capture)
    if cap is None:
        logger.error("skipped %s: %s", source, why)
        return [], [(str(source), why)], []
    base = "webcam" if args.webcam else os.path.splitext(os.path.basename(source))[0]
    out_path = _output_path(args, base + ".mp4")
    tracker = _make_tracker(args, predictor, metadata, fps)
    video = _VideoOutput(out_path, fps, live=bool(args.webcam))
    results, failures, frame, seen, start, t = [], [], 0, set(), None, -1.0
    bar = tqdm(total=total or None, desc="frames", unit="frame", file=sys.stdout)
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                break
            if args.webcam:
                now = clock()
                start = now if start is None else start
                t = max(now - start, t + 1e-6)  # the One-Euro filter needs strictly increasing times
            else:
                t = frame / fps
            instances = predictor(image)["instances"].to("cpu")
            ids = _track(tracker, instances, t)
            if ids is not None:
                seen.update(int(i) for i in ids)
            video.add(drawer(image, instances, ids), t)
            extra = {"frame": frame}
            if ids is not None:
                extra["track_id"] = [int(i) for i in ids]
            results += instances_to_coco_results(instances, frame, **extra)
            frame += 1
            bar.update(1)
            if args.max_frames and frame >= args.max_frames:
                break
    except KeyboardInterrupt:
        logger.info("stopped after %d frames", frame)
    finally:
        bar.close()
        cap.release()
        video.close()
    if frame == 0:
        failures.append((str(source), "no frame could be read"))
        logger.error("skipped %s: no frame could be read", source)
        return results, failures, []
    logger.info("%d frames at %.1f fps, %d tracks -> %s", frame, video.fps, len(seen), out_path)
    return results, failures, [out_path]


def main(argv: Optional[List[str]] = None) -> Dict:
    """Runs the demo; returns {"results": COCO results, "failures": [(input, reason)], "written": files}."""
    args = parse_args(argv)
    setup_logger(name="d2pose")
    cfg = setup_cfg(args)
    files, problems = find_inputs(args.input) if args.input else ([], [])
    refuse_existing_outputs(args, files)
    if args.input and not files:  # nothing to predict on: no model built
        for path, why in problems:
            logger.error("skipped %s: %s", path, why)
        results, failures, written = [], problems, []
    else:
        results, failures, written = _predict(args, cfg)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f)
        logger.info("%d predictions -> %s", len(results), args.json)
    logger.info("%d outputs in %s", len(written), args.output)
    for path, why in failures:
        logger.error("failed: %s (%s)", path, why)
    return dict(results=results, failures=failures, written=written)


def _predict(args: argparse.Namespace, cfg: CfgNode) -> RunOutput:
    """Builds the predictor and runs it on the images, or on the video / webcam."""
    os.makedirs(args.output, exist_ok=True)
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__unused")
    predictor = PosePredictor(cfg)
    drawer = PoseDrawer(metadata, args.confidence_threshold, args.keypoint_threshold)
    try:
        if args.input:
            return run_images(args, predictor, drawer)
        return run_video(args, predictor, drawer, metadata)
    except FileExistsError as e:
        raise SystemExit(str(e))
