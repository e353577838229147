"""Shared machinery of the training-parity tests (one test module per method, under tests/projects/).

A training-parity fixture (`$D2POSE_TRAIN_PARITY_DATA/<name>/`, default ../shared/reference/train_parity)
holds what the authors' training code computed for the forward fixtures' deterministic weights and a
fixed batch: the annotations, the network input, the authors' targets, the raw outputs, every loss
term, the gradients of the total w.r.t. the outputs the loss consumes, per-parameter gradient norms
and the full gradients of the last layers. Its README gives the tolerances; `noise_floor.json` gives
the measured float32 floor of every array. This module reads a fixture, derives each array's
tolerance from those two files (never from a constant of ours), and collects every mismatch in a
`ParityReport`, so that a test can assert both "this fixture passes" and "a perturbed copy fails".

Tolerance rules (each fixture README's "Tolerances a float32 reimplementation should meet"):
- arrays: max |ours - theirs| <= max(1e-4, 10 x floor) x scale (scale: std, absmax or |value|);
  where the floor is above 1e-3 (the float64 run crossed a discrete boundary) the array also passes
  with ||ours - theirs|| <= 1e-3 x ||theirs||;
- targets that depend on annotations only: integers exactly, floats to 1e-6 x max(1, |target|);
- loss terms: relative error <= the README's bound;
- per-parameter gradient norms: relative error <= the README's bound for parameters whose norm is
  above 1e-6 of the largest; the others (pure rounding noise) absolutely, to that bound x 1e-6 x the
  largest norm; gradient sums: |err| <= bound x norm x sqrt(numel).

The steps every method's check takes the same way live here too, so that the test modules under
tests/projects/ hold only what is particular to a method:
- the authors' weights: `authors_state_dict` (the forward fixture's synth_weights.py rule, cached, plus
  the training fixture's `weight_overrides`);
- the config: `training_cfg` (a config file on the CPU, no weights file) with `RAW_INPUT` (the fixtures'
  inputs are raw network tensors), `NO_AUGMENTATION` and `UNPADDED_BOX` (the top-down identity crop);
- the data: `topdown_training_samples` (annotations.json as a COCO json, read by d2pose's loader: + 0.5,
  the continuous convention; `write_coco_keypoints`), `with_fixture_input` (pixel-index matrices:
  `d2pose.data.transforms.affine.affine_to_pixel_index`);
- the outputs: `OutputRecorder` (forward hooks and wrapped methods that keep tensors, gradients retained);
- the gradients: `ParityReport.parameter_gradients` (norms and last layers by the authors' names);
- the perturbed-fixture tests: `moved_keypoint`, `changed_weight`;
- a ReLU gate within rounding of 0 (the fixture READMEs' allowance for a discrete boundary):
  `ReluGateProbe` and `check_across_rounding_gates`.
"""
from __future__ import annotations

import collections
import copy
import functools
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import pytest
import torch

from d2pose.config import get_d2pose_cfg
from d2pose.data import load_keypoint_json
from d2pose.data.topdown import TopDownDatasetMapper, person_instances
from tests.conftest import PARITY_DATA, TRAIN_PARITY_DATA
from tests.parity import synth_weights

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DISCRETE_FLOOR = 1e-3  # above it, the float64 run crossed a ReLU gate or a floor(): norm criterion allowed
NORM_REL = 1e-3


def _as_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def _readme_bound(readme: str, pattern: str, what: str, folder: str) -> float:
    found = re.search(pattern, readme)
    if not found:
        raise ValueError(f"{folder}/README.md: no {what} bound found (pattern {pattern!r})")
    return float(found.group(1))


class TrainParityFixture:
    """One fixture folder, read lazily. `annotations`, `losses` and `noise_floor` are the parsed jsons;
    `input`, `targets`, `expected`, `grad_norms`, `last_layer_grads` dicts of numpy arrays. Every
    attribute may be replaced on an instance (see `perturbed`) without touching the files."""

    def __init__(self, folder: str):
        self.folder = folder
        self.name = os.path.basename(os.path.normpath(folder))
        self._cache: Dict[str, object] = {}

    def _json(self, name):
        with open(os.path.join(self.folder, name)) as f:
            return json.load(f)

    def _npz(self, name):
        with np.load(os.path.join(self.folder, name), allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def _get(self, key, loader):
        if key not in self._cache:
            self._cache[key] = loader()
        return self._cache[key]

    annotations = property(lambda self: self._get("annotations", lambda: self._json("annotations.json")))
    losses = property(lambda self: self._get("losses", lambda: self._json("losses.json")))
    noise_floor = property(lambda self: self._get("noise_floor", lambda: self._json("noise_floor.json")))
    input = property(lambda self: self._get("input", lambda: self._npz("input.npz")))
    targets = property(lambda self: self._get("targets", lambda: self._npz("targets.npz")))
    expected = property(lambda self: self._get("expected", lambda: self._npz("expected_train.npz")))
    grad_norms = property(lambda self: self._get("grad_norms", lambda: self._npz("grad_norms.npz")))
    last_layer_grads = property(lambda self: self._get("last", lambda: self._npz("last_layer_grads.npz")))

    @property
    def readme(self) -> str:
        return self._get("readme", lambda: open(os.path.join(self.folder, "README.md")).read())

    @property
    def weight_overrides(self) -> Dict[str, torch.Tensor]:
        """Parameters the training needs that the forward fixture synthesised differently (may be empty)."""
        def load():
            path = os.path.join(self.folder, "weight_overrides.safetensors")
            if not os.path.isfile(path):
                return {}
            from safetensors.torch import load_file
            return load_file(path)
        return self._get("weight_overrides", load)

    @property
    def loss_rel_tol(self) -> float:
        return _readme_bound(self.readme, r"loss terms: relative error <= ([0-9.e+-]+)", "loss-term", self.folder)

    @property
    def grad_norm_rel_tol(self) -> float:
        return _readme_bound(self.readme, r"gradient norms \(grad_norms\.npz\): relative error <= ([0-9.e+-]+)",
                             "gradient-norm", self.folder)

    def array_tolerance(self, key: str):
        """(absolute tolerance, scale, floor) of a noise_floor.json entry (`name`, `last:<param>`, `target:<name>`)."""
        arrays = self.noise_floor["arrays"]
        if key not in arrays:
            raise KeyError(f"{self.folder}/noise_floor.json has no entry {key!r}")
        entry = arrays[key]
        floor = float(entry["rel"])
        return max(1e-4, 10.0 * floor) * float(entry["scale"]), float(entry["scale"]), floor

    def perturbed(self, **replace) -> "TrainParityFixture":
        """A copy whose named attributes (annotations, input, targets, expected, weight_overrides, ...) are
        replaced; the files are not touched. Values are deep-copied from this fixture when a callable
        is given: `fixture.perturbed(annotations=lambda a: ...)` edits a copy in place."""
        other = TrainParityFixture(self.folder)
        other._cache = dict(self._cache)
        for key, value in replace.items():
            attr = "last" if key == "last_layer_grads" else key
            if callable(value):
                current = copy.deepcopy(getattr(self, key))
                result = value(current)
                value = current if result is None else result
            other._cache[attr] = value
        return other


@dataclass
class ParityReport:
    """Every comparison made, the failures among them (a message each, prefixed with the fixture's
    name) and notes on how a comparison was made (e.g. a gate taken the other way)."""

    fixture: TrainParityFixture
    failures: List[str] = field(default_factory=list)
    checked: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def fail(self, message: str):
        """Records a failure found outside the comparisons below (e.g. a missing counterpart)."""
        self.failures.append(f"{self.fixture.name}: {message}")

    def note(self, message: str):
        """Records how a comparison was made, for whoever reads the report."""
        self.notes.append(message)

    def fails_only_on(self, prefix: str) -> bool:
        """Whether there are failures and every one is of a comparison whose key starts with `prefix`
        (e.g. "last:<layer>." for the full gradients of one layer)."""
        head = f"{self.fixture.name}: "
        return bool(self.failures) and all(f[len(head):].startswith(prefix) for f in self.failures)

    def array(self, key: str, ours, theirs=None, tolerance_key: Optional[str] = None, mask=None):
        """One output / gradient / intermediate against the fixture's `expected_train.npz[key]` (or `theirs`),
        with the tolerance of noise_floor.json[`tolerance_key` or key]. With `mask` (boolean, broadcast
        to the array's shape) only the entries where it is true are compared: the others are zeroed on
        both sides (e.g. keypoints of weight 0, whose values reach no loss)."""
        theirs = self.fixture.expected[key] if theirs is None else theirs
        tol_key = tolerance_key or key
        ours, theirs = _as_numpy(ours), _as_numpy(theirs)
        self.checked.append(tol_key)
        if ours.shape != theirs.shape:
            self.fail(f"{tol_key}: shape {ours.shape} != the authors' {theirs.shape}")
            return
        if mask is not None:
            keep = np.broadcast_to(np.asarray(mask, dtype=bool), theirs.shape)
            ours, theirs = np.where(keep, ours, 0.0), np.where(keep, theirs, 0.0)
        tol, scale, floor = self.fixture.array_tolerance(tol_key)
        diff = np.abs(ours - theirs)
        err = float(diff.max()) if diff.size else 0.0
        if not np.all(np.isfinite(ours)):
            self.fail(f"{tol_key}: non-finite values")
        elif err > tol:
            norm_ok = floor > DISCRETE_FLOOR and np.linalg.norm(ours - theirs) <= NORM_REL * np.linalg.norm(theirs)
            if not norm_ok:
                where = np.unravel_index(int(diff.argmax()), diff.shape)
                self.fail(f"{tol_key}: max |error| {err:.3g} at {tuple(int(i) for i in where)} > {tol:.3g} "
                          f"(scale {scale:.3g}, floor {floor:.2g})")

    def last_layer(self, name: str, grad):
        """The full gradient of one last-layer parameter (authors' name) against last_layer_grads.npz."""
        self.array(f"last:{name}", grad, self.fixture.last_layer_grads[name])

    def parameter_gradients(self, model: torch.nn.Module, to_official: Callable[[str], Optional[str]],
                            frozen_buffers: bool = False, reshape_last_layers: bool = False):
        """The parameter gradients of one backward, by the authors' names (`to_official`: d2pose name ->
        authors' name, or None): the per-parameter norms and sums (`grad_norms`) and the full gradient
        of every last-layer parameter of last_layer_grads.npz (`last_layer`; one no d2pose parameter
        maps to, or one without a gradient, is a failure).

        Args:
            frozen_buffers: d2pose holds some of the authors' frozen parameters as buffers (e.g. a fixed
                positional embedding): their gradient norms count as zero.
            reshape_last_layers: a last-layer gradient with the authors' number of entries in another
                shape (a parameter the converter stores reshaped) is compared in the authors' shape.
        """
        grads, numel = gradients_by_official_name(model, to_official)
        if frozen_buffers:
            for name, buffer in model.named_buffers():
                official = to_official(name)
                if official is not None and official not in grads:
                    grads[official], numel[official] = None, buffer.numel()
        self.grad_norms(grads, numel)
        by_official = {to_official(n): p for n, p in model.named_parameters() if to_official(n) is not None}
        for name, theirs in self.fixture.last_layer_grads.items():
            p = by_official.get(name)
            if p is None or p.grad is None:
                self.fail(f"last layer {name}: " + ("no d2pose parameter maps to it" if p is None else "no gradient"))
                continue
            grad = p.grad
            if reshape_last_layers and grad.numel() == theirs.size:
                grad = grad.reshape(theirs.shape)
            self.last_layer(name, grad)

    def target(self, name: str, ours, theirs=None):
        """A target made from the annotations against targets.npz[name]: integers / booleans exactly,
        floats to 1e-6 x max(1, |target|)."""
        theirs = np.asarray(self.fixture.targets[name] if theirs is None else theirs)
        ours_np = ours.detach().cpu().numpy() if isinstance(ours, torch.Tensor) else np.asarray(ours)
        self.checked.append(f"target:{name}")
        if ours_np.shape != theirs.shape:
            self.fail(f"target {name}: shape {ours_np.shape} != the authors' {theirs.shape}")
            return
        if theirs.dtype.kind in "biu":
            bad = int((ours_np.astype(np.int64) != theirs.astype(np.int64)).sum())
            if bad:
                self.fail(f"target {name}: {bad} integer entries differ")
            return
        ours64, theirs64 = ours_np.astype(np.float64), theirs.astype(np.float64)
        excess = np.abs(ours64 - theirs64) - 1e-6 * np.maximum(1.0, np.abs(theirs64))
        if excess.size and excess.max() > 0:
            where = np.unravel_index(int(excess.argmax()), excess.shape)
            self.fail(f"target {name}: {int((excess > 0).sum())} entries differ, e.g. at {tuple(int(i) for i in where)}: "
                      f"{ours64[where]:.7g} vs {theirs64[where]:.7g}")

    def loss(self, name: str, ours, theirs: float):
        """A loss term against the authors' value (losses.json), relative error <= the README's bound."""
        ours = float(_as_numpy(ours))
        self.checked.append(f"loss:{name}")
        rel = abs(ours - theirs) / max(abs(theirs), 1e-30)
        if not math.isfinite(ours) or rel > self.fixture.loss_rel_tol:
            self.fail(f"loss {name}: {ours:.8g} vs the authors' {theirs:.8g} (relative error {rel:.2g} > "
                      f"{self.fixture.loss_rel_tol:g})")

    def grad_norms(self, grads: Mapping[str, Optional[torch.Tensor]], numel: Mapping[str, int],
                   skip: Iterable[str] = ()):
        """Per-parameter gradient norms and sums, keyed by the authors' parameter names. `grads` must hold
        every name of grad_norms.npz that is not in `skip` (a parameter without gradient counts as zero)."""
        data = self.fixture.grad_norms
        names = [str(n) for n in data["__names__"]]
        bound = self.fixture.grad_norm_rel_tol
        largest = max(float(data[f"{n}::norm"]) for n in names)
        skip = set(skip)
        missing = [n for n in names if n not in grads and n not in skip]
        if missing:
            self.fail(f"grad norms: {len(missing)} parameters have no counterpart, e.g. {missing[:5]}")
        bad = []
        for n in names:
            if n in skip or n not in grads:
                continue
            g = grads[n]
            norm = 0.0 if g is None else float(g.detach().double().norm())
            total = 0.0 if g is None else float(g.detach().double().sum())
            theirs, theirs_sum = float(data[f"{n}::norm"]), float(data[f"{n}::sum"])
            if theirs > 1e-6 * largest:
                ok = abs(norm - theirs) <= bound * theirs
                ok = ok and abs(total - theirs_sum) <= bound * theirs * math.sqrt(numel[n])
            else:
                ok = abs(norm - theirs) <= bound * 1e-6 * largest
            if not ok:
                bad.append(f"{n} (norm {norm:.6g} vs {theirs:.6g}, sum {total:.6g} vs {theirs_sum:.6g})")
        self.checked.append("grad_norms")
        if bad:
            self.fail(f"grad norms: {len(bad)} of {len(names)} parameters off, e.g. " + "; ".join(bad[:4]))

    def identity_crops(self, samples: Sequence[Mapping], atol: float):
        """Each top-down training sample's crop matrix is the identity to `atol` (np.allclose): augmentation
        off and the person box the region whose padding is the whole crop (`write_coco_keypoints`)."""
        identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        for i, sample in enumerate(samples):
            if not np.allclose(_as_numpy(sample["crop_matrix"]), identity, atol=atol):
                self.fail(f"sample {i}: the mapper's crop is not the identity: {sample['crop_matrix'].tolist()}")

    def assert_ok(self):
        assert not self.failures, "training parity failures:\n  " + "\n  ".join(self.failures)

    def assert_compared(self, keys: Iterable[str]):
        """For the passing tests: each of `keys` (as `checked` lists them: "target:<name>", "loss:<name>",
        array keys, "grad_norms") was compared, and each last layer of last_layer_grads.npz exactly once."""
        missing = sorted(set(keys) - set(self.checked))
        assert not missing, f"{self.fixture.name}: not compared: {missing}"
        last = collections.Counter(c for c in self.checked if c.startswith("last:"))
        assert last == collections.Counter(f"last:{n}" for n in self.fixture.last_layer_grads), \
            f"{self.fixture.name}: the last layers compared are not last_layer_grads.npz's: {sorted(last)}"

    def assert_fails(self, *substrings: str):
        """For the perturbed-fixture tests: the report holds failures, and one mentions each substring."""
        assert self.failures, f"{self.fixture.name}: a perturbed fixture passed every check ({len(self.checked)} made)"
        for s in substrings:
            assert any(s in f for f in self.failures), f"no failure mentions {s!r}: {self.failures}"


def train_parity_fixture(name: str) -> TrainParityFixture:
    """The named fixture of $D2POSE_TRAIN_PARITY_DATA; skips the test when it is absent."""
    folder = os.path.join(TRAIN_PARITY_DATA, name)
    if not os.path.isdir(folder):
        pytest.skip(f"training-parity fixture not found at {folder}")
    return TrainParityFixture(folder)


def gradients_by_official_name(model: torch.nn.Module, to_official: Callable[[str], Optional[str]]):
    """{authors' name: (grad, numel)} for every d2pose parameter that `to_official` maps to a name."""
    grads, numel = {}, {}
    for name, p in model.named_parameters():
        official = to_official(name)
        if official is not None:
            grads[official] = p.grad
            numel[official] = p.numel()
    return grads, numel


# ---------------------------------------------------------------------------------------------------
# the steps every method's check takes the same way


def config_path(method: str, name: str) -> str:
    """A method's config file (projects/<method>/configs/): `config_path("RLE", "rle_R_50_256x192_coco.yaml")`."""
    return os.path.join(REPO_ROOT, "projects", method, "configs", name)


# the fixtures' inputs are raw network tensors: no pixel normalisation
RAW_INPUT = ["MODEL.PIXEL_MEAN", "[0.0, 0.0, 0.0]", "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]"]
# top-down augmentation off: no scale, rotation, flip or half-body
NO_AUGMENTATION = ["INPUT.TOPDOWN.SCALE_FACTOR", "0.0", "INPUT.TOPDOWN.ROTATION_PROB", "0.0",
                   "INPUT.TOPDOWN.FLIP_PROB", "0.0", "INPUT.TOPDOWN.HALF_BODY_PROB", "0.0"]
# the person box is the whole crop (no padding around it): with NO_AUGMENTATION, the identity crop
UNPADDED_BOX = ["INPUT.TOPDOWN.PADDING", "1.0"]


def training_cfg(config_file: str, *opts: str):
    """The d2pose config of a training-parity check: `config_file` on the CPU with no weights file (the
    converted weights are loaded by the check), then `opts` (e.g. the converter's overrides, RAW_INPUT)."""
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""] + list(opts))
    return cfg


@functools.lru_cache(maxsize=1)
def _forward_fixture_weights(folder: str) -> Dict[str, torch.Tensor]:
    return synth_weights(PARITY_DATA).load_fixture_state_dict(folder)


def authors_state_dict(fixture: TrainParityFixture, forward_fixture: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """The authors' state_dict of the training step, by the forward fixture's rule: the deterministic
    weights that `$D2POSE_PARITY_DATA/synth_weights.py` (`load_fixture_state_dict`) rebuilds for the
    forward fixture `forward_fixture` (default: the one of the training fixture's name), then the
    training fixture's `weight_overrides` (each must replace an authors' tensor of the same shape).
    Skips the test when the forward fixture is absent.

    The weights are cached (the last forward fixture's) and the tensors shared with the cache: never
    modify them in place (`changed_weight` clones)."""
    folder = os.path.join(PARITY_DATA, forward_fixture or fixture.name)
    if not os.path.isdir(folder):
        pytest.skip(f"forward parity fixture (the weights) not found at {folder}")
    state_dict = collections.OrderedDict(_forward_fixture_weights(folder))
    for name, value in fixture.weight_overrides.items():
        if name not in state_dict or tuple(state_dict[name].shape) != tuple(value.shape):
            raise KeyError(f"weight override {name!r} {tuple(value.shape)} matches no authors' tensor")
        state_dict[name] = value
    return state_dict


def write_coco_keypoints(annotations: Mapping, folder: str, padding: float = 1.0) -> str:
    """A top-down fixture's annotations.json as a COCO person-keypoint json in `folder` (keypoints as the
    fixture and COCO store them: pixel indices), with a blank image per crop; returns the json's path.

    Each person's box is the region that, padded by `padding` (INPUT.TOPDOWN.PADDING), is the whole
    W x H crop: centre (W / 2, H / 2), so that the crop matrix is the identity (for padding 1, the
    crop itself)."""
    images, anns = [], []
    for image in annotations["images"]:
        W, H = image["crop_size"]
        file_name = f"{image['image_id']:06d}.png"
        cv2.imwrite(os.path.join(folder, file_name), np.zeros((H, W, 3), np.uint8))
        images.append(dict(id=image["image_id"], file_name=file_name, width=W, height=H))
        box = [W / 2 - W / (2 * padding), H / 2 - H / (2 * padding), W / padding, H / padding]
        for person in image["people"]:
            kps = [float(v) for kp in person["keypoints"] for v in kp]
            anns.append(dict(id=len(anns) + 1, image_id=image["image_id"], category_id=1, iscrowd=0, keypoints=kps,
                             num_keypoints=int(sum(v > 0 for v in kps[2::3])), bbox=box, area=float(person["area"])))
    path = os.path.join(folder, "person_keypoints.json")
    with open(path, "w") as f:
        json.dump(dict(images=images, annotations=anns,
                       categories=[dict(id=1, name="person", supercategory="person")]), f)
    return path


def topdown_training_samples(fixture: TrainParityFixture, cfg, folder: Optional[str] = None) -> List[dict]:
    """The training samples of a top-down fixture's people through d2pose's data path, in the fixture's
    order: annotations.json as a COCO json (`write_coco_keypoints`, padding INPUT.TOPDOWN.PADDING) read
    by d2pose's loader (`load_keypoint_json`: + 0.5 to the pixel indices, the continuous convention),
    `person_instances` (INPUT.TOPDOWN.MIN_KEYPOINTS) and cfg's top-down training mapper and codec.
    `folder` receives the json and the blank images (a temporary folder by default); the samples'
    crops are blank: `with_fixture_input` puts the fixture's input in their place."""
    if folder is None:
        with tempfile.TemporaryDirectory() as tmp:
            return topdown_training_samples(fixture, cfg, tmp)
    t = cfg.INPUT.TOPDOWN
    json_file = write_coco_keypoints(fixture.annotations, folder, float(t.PADDING))
    records = person_instances(load_keypoint_json(json_file, folder), t.MIN_KEYPOINTS)
    mapper = TopDownDatasetMapper(cfg, is_train=True)
    return [mapper(r) for r in records]


def with_fixture_input(fixture: TrainParityFixture, samples: Sequence[Mapping]) -> List[dict]:
    """The training batch: a copy of each sample with the fixture's network input (input.npz, one crop
    or image per sample, in order) as its image. Raises AssertionError when the counts differ."""
    x = torch.from_numpy(fixture.input["input"])
    if len(samples) != x.shape[0]:
        raise AssertionError(f"{len(samples)} training samples from annotations.json, {x.shape[0]} inputs in input.npz")
    return [dict(s, image=x[i]) for i, s in enumerate(samples)]


class OutputRecorder:
    """Tensors of a forward pass kept by forward hooks and wrapped methods, their gradients retained, so
    that a check can compare them and, after `backward()`, the gradients of the loss w.r.t. them.

    Use as a context manager around the forward: on exit the hooks are removed and the methods
    restored; the kept tensors stay (`recorder[name]`). Each `pick` returns {name: value} from what the
    hook sees; a value is kept under its name (appended to a list with `collect`, one per call), and a
    tensor that requires a gradient (or each such tensor of a list, tuple or dict) retains it."""

    def __init__(self):
        self.tensors: Dict[str, Any] = {}
        self._undo: List[Callable[[], None]] = []

    def __getitem__(self, name: str):
        return self.tensors[name]

    def keep(self, name: str, value, collect: bool = False):
        """Keeps `value` under `name` (see the class docstring); returns it."""
        items = value.values() if isinstance(value, Mapping) else value
        for t in items if isinstance(value, (Mapping, list, tuple)) else [value]:
            if isinstance(t, torch.Tensor) and t.requires_grad:
                t.retain_grad()
        if collect:
            self.tensors.setdefault(name, []).append(value)
        else:
            self.tensors[name] = value
        return value

    def _keep_all(self, picked: Mapping[str, Any], collect: bool):
        for name, value in picked.items():
            self.keep(name, value, collect)

    def outputs(self, module: torch.nn.Module, pick: Callable[[Any], Mapping[str, Any]], collect: bool = False):
        """Keeps pick(output) of every call of `module`."""
        handle = module.register_forward_hook(lambda _m, _args, out: self._keep_all(pick(out), collect))
        self._undo.append(handle.remove)

    def inputs(self, module: torch.nn.Module, pick: Callable[[tuple], Mapping[str, Any]], collect: bool = False):
        """Keeps pick(positional inputs) of every call of `module`, before it runs."""
        handle = module.register_forward_pre_hook(lambda _m, args: self._keep_all(pick(args), collect))
        self._undo.append(handle.remove)

    def calls(self, owner: Any, method: str, pick: Callable[[tuple, Any], Mapping[str, Any]], collect: bool = False):
        """Keeps pick(positional arguments, result) of every call of `owner.<method>` (for what no module
        returns, e.g. a loss's intermediate terms or a flow's log-density): the method is replaced by an
        instance attribute until exit."""
        had_own = method in vars(owner)
        original = getattr(owner, method)

        def recording(*args, **kwargs):
            result = original(*args, **kwargs)
            self._keep_all(pick(args, result), collect)
            return result

        setattr(owner, method, recording)
        self._undo.append(lambda: setattr(owner, method, original) if had_own else delattr(owner, method))

    def close(self):
        """Removes the hooks and restores the methods (the kept tensors stay)."""
        while self._undo:
            self._undo.pop()()

    def __enter__(self) -> "OutputRecorder":
        return self

    def __exit__(self, *exc):
        self.close()


def moved_keypoint(image: int, person: int, keypoint: int, dx: float = 3.0,
                   require: Optional[Callable[[Mapping, List[float]], bool]] = None) -> Callable[[dict], None]:
    """An edit of annotations.json for `TrainParityFixture.perturbed(annotations=...)`: a labelled
    keypoint (v > 0, and `require(person, keypoint)` true where given, e.g. well inside the crop)
    moved `dx` pixels to the right, so that the perturbed fixture moves a keypoint some target reads.
    The preferred one is keypoint `keypoint` of person `person` of image `image` (indices from 0);
    when it does not qualify (another batch made the same way, e.g. another seed), the first one that
    does, in image, person, keypoint order. No qualifying keypoint at all raises AssertionError."""

    def qualifies(who: Mapping, kp: List[float]) -> bool:
        return kp[2] > 0 and (require is None or require(who, kp))

    def move(annotations: dict):
        people = [who for img in annotations["images"] for who in img["people"]]
        preferred = annotations["images"][image]["people"][person] if image < len(annotations["images"]) and \
            person < len(annotations["images"][image]["people"]) else None
        order = ([(preferred, keypoint)] if preferred is not None and keypoint < len(preferred["keypoints"]) else []) + \
            [(who, k) for who in people for k in range(len(who["keypoints"]))]
        for who, k in order:
            if qualifies(who, who["keypoints"][k]):
                who["keypoints"][k][0] += dx
                return
        raise AssertionError("no labelled keypoint qualifies for the perturbation")

    return move


def changed_weight(fixture: TrainParityFixture, name: str, index: Union[int, Tuple[int, ...]], delta: float,
                   forward_fixture: Optional[str] = None) -> TrainParityFixture:
    """A perturbed copy of `fixture` whose authors' parameter `name` (from `authors_state_dict`) has
    `delta` added at `index`: a weight override on top of the fixture's own."""
    value = authors_state_dict(fixture, forward_fixture)[name].clone()
    value[index] += delta
    return fixture.perturbed(weight_overrides={**fixture.weight_overrides, name: value})


class ReluGateProbe:
    """A forward hook on the layer whose output is a ReLU's input (e.g. an FFN's first Linear): keeps
    that output (`pre`, detached) and, with `flip` (a boolean mask of it), moves the masked entries to
    the other side of 0 (x -> -x, at most 2 |x| away) while passing their gradient on unchanged: the
    ReLU gates there are taken the other way. `remove()` takes the hook off."""

    def __init__(self, layer: torch.nn.Module, flip: Optional[torch.Tensor] = None):
        self.pre: Optional[torch.Tensor] = None
        self.flip = flip
        self._handle = layer.register_forward_hook(self._hook)

    def _hook(self, _module, _args, out: torch.Tensor):
        self.pre = out.detach()
        if self.flip is not None:
            return out + torch.where(self.flip, -2.0 * out, torch.zeros_like(out)).detach()
        return out

    def remove(self):
        self._handle.remove()


def check_across_rounding_gates(check: Callable[[Optional[torch.Tensor]], Tuple[ParityReport, Optional[torch.Tensor]]],
                                prefix: str, rounding: float, layer: str) -> ParityReport:
    """The fixture READMEs' allowance for a discrete boundary ("a ReLU gate whose input is within
    rounding of 0 ... a reimplementation may cross it too"), for a gate that d2pose's float32 run and
    the authors' cross differently.

    `check(flip)` runs every comparison with the ReLU gates of one layer probed (`ReluGateProbe`) and
    those of the mask `flip` taken the other way (None: as computed); it returns its report and the
    probed gate inputs (None when it stopped before the forward). When the only failures are of
    comparisons whose key starts with `prefix` (the arrays of that layer compared entry by entry) and
    some gate inputs are within `rounding` x their std of 0, the check runs again with exactly those
    gates flipped (the forward moves by < 2 |x|): that run's report is returned, with a note naming
    `layer`. Otherwise the first run's report."""
    report, pre = check(None)
    if pre is None:
        return report
    near_zero = pre.abs() < rounding * pre.std()
    if not report.fails_only_on(prefix) or not near_zero.any():
        return report
    retry, _ = check(near_zero)
    retry.note(f"gates: {int(near_zero.sum())} ReLU gate(s) of {layer} within rounding of 0 (|x| <= "
               f"{float(pre.abs()[near_zero].max()):.2g}) taken the other way; as computed, "
               f"{len(report.failures)} comparison(s) failed")
    return retry


def module_fixture(name: str):
    """A module-scoped pytest fixture named `fixture` that loads the training-parity fixture `name`
    once per test module; a method's test module declares it as `fixture = module_fixture(FIXTURE)`."""

    @pytest.fixture(scope="module", name="fixture")
    def load() -> TrainParityFixture:
        return train_parity_fixture(name)

    return load
