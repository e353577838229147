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
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional

import numpy as np
import pytest
import torch

_SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
TRAIN_PARITY_DATA = os.path.abspath(
    os.environ.get("D2POSE_TRAIN_PARITY_DATA", os.path.join(_SHARED, "reference", "train_parity")))

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
    """Every comparison made, and the failures among them (a message each)."""

    fixture: TrainParityFixture
    failures: List[str] = field(default_factory=list)
    checked: List[str] = field(default_factory=list)

    def _fail(self, message: str):
        self.failures.append(f"{self.fixture.name}: {message}")

    def array(self, key: str, ours, theirs=None, tolerance_key: Optional[str] = None):
        """One output / gradient / intermediate against the fixture's `expected_train.npz[key]` (or `theirs`),
        with the tolerance of noise_floor.json[`tolerance_key` or key]."""
        theirs = self.fixture.expected[key] if theirs is None else theirs
        tol_key = tolerance_key or key
        ours, theirs = _as_numpy(ours), _as_numpy(theirs)
        self.checked.append(tol_key)
        if ours.shape != theirs.shape:
            self._fail(f"{tol_key}: shape {ours.shape} != the authors' {theirs.shape}")
            return
        tol, scale, floor = self.fixture.array_tolerance(tol_key)
        diff = np.abs(ours - theirs)
        err = float(diff.max()) if diff.size else 0.0
        if not np.all(np.isfinite(ours)):
            self._fail(f"{tol_key}: non-finite values")
        elif err > tol:
            norm_ok = floor > DISCRETE_FLOOR and np.linalg.norm(ours - theirs) <= NORM_REL * np.linalg.norm(theirs)
            if not norm_ok:
                where = np.unravel_index(int(diff.argmax()), diff.shape)
                self._fail(f"{tol_key}: max |error| {err:.3g} at {tuple(int(i) for i in where)} > {tol:.3g} "
                           f"(scale {scale:.3g}, floor {floor:.2g})")

    def last_layer(self, name: str, grad):
        """The full gradient of one last-layer parameter (authors' name) against last_layer_grads.npz."""
        self.array(f"last:{name}", grad, self.fixture.last_layer_grads[name])

    def target(self, name: str, ours, theirs=None):
        """A target made from the annotations against targets.npz[name]: integers / booleans exactly,
        floats to 1e-6 x max(1, |target|)."""
        theirs = np.asarray(self.fixture.targets[name] if theirs is None else theirs)
        ours_np = ours.detach().cpu().numpy() if isinstance(ours, torch.Tensor) else np.asarray(ours)
        self.checked.append(f"target:{name}")
        if ours_np.shape != theirs.shape:
            self._fail(f"target {name}: shape {ours_np.shape} != the authors' {theirs.shape}")
            return
        if theirs.dtype.kind in "biu":
            bad = int((ours_np.astype(np.int64) != theirs.astype(np.int64)).sum())
            if bad:
                self._fail(f"target {name}: {bad} integer entries differ")
            return
        ours64, theirs64 = ours_np.astype(np.float64), theirs.astype(np.float64)
        excess = np.abs(ours64 - theirs64) - 1e-6 * np.maximum(1.0, np.abs(theirs64))
        if excess.size and excess.max() > 0:
            where = np.unravel_index(int(excess.argmax()), excess.shape)
            self._fail(f"target {name}: {int((excess > 0).sum())} entries differ, e.g. at {tuple(int(i) for i in where)}: "
                       f"{ours64[where]:.7g} vs {theirs64[where]:.7g}")

    def loss(self, name: str, ours, theirs: float):
        """A loss term against the authors' value (losses.json), relative error <= the README's bound."""
        ours = float(_as_numpy(ours))
        self.checked.append(f"loss:{name}")
        rel = abs(ours - theirs) / max(abs(theirs), 1e-30)
        if not math.isfinite(ours) or rel > self.fixture.loss_rel_tol:
            self._fail(f"loss {name}: {ours:.8g} vs the authors' {theirs:.8g} (relative error {rel:.2g} > "
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
            self._fail(f"grad norms: {len(missing)} parameters have no counterpart, e.g. {missing[:5]}")
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
            self._fail(f"grad norms: {len(bad)} of {len(names)} parameters off, e.g. " + "; ".join(bad[:4]))

    def assert_ok(self):
        assert not self.failures, "training parity failures:\n  " + "\n  ".join(self.failures)

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
