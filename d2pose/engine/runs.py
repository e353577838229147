"""What a finished training run reached, read back from its output folder.

`train_net.py` leaves in OUTPUT_DIR a log.txt (Detectron2's "Overall training speed: N iterations
in H:MM:SS" line) and a metrics.json (one json object per line; the evaluation at the end of training
writes "keypoints/AP", ...). `run_summary` reads both, so comparisons made one run after the other
(`tools/reproduce_comparisons.sh`, `tools/compare_runs.py`) print what each run cost and reached
from the files, not from memory.
"""
import json
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

__all__ = ["RunSummary", "logged_training_seconds", "final_metrics", "run_summary", "format_runs"]

_SPEED = re.compile(r"Overall training speed: (\d+) iterations in (?:(\d+) days?, )?(\d+):(\d\d):(\d\d)")


@dataclass
class RunSummary:
    """output_dir; iterations and training seconds (the trainer's own measure, hooks and the final
    evaluation excluded; None when the log has none); metrics {task: {name: value}} of the last
    evaluation (e.g. {"keypoints": {"AP": ...}})."""

    output_dir: str
    iterations: Optional[int] = None
    training_seconds: Optional[float] = None
    metrics: Dict[str, Dict[str, float]] = field(default_factory=dict)

    @property
    def minutes(self) -> Optional[float]:
        return None if self.training_seconds is None else self.training_seconds / 60.0


def logged_training_seconds(log_path: str):
    """(iterations, seconds) of the last "Overall training speed" line of a Detectron2 log, or
    (None, None) when the run has not finished."""
    found = (None, None)
    with open(log_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = _SPEED.search(line)
            if m:
                days = int(m.group(2) or 0)
                h, mi, s = (int(v) for v in m.group(3, 4, 5))
                found = (int(m.group(1)), float(((days * 24 + h) * 60 + mi) * 60 + s))
    return found


def final_metrics(metrics_path: str) -> Dict[str, Dict[str, float]]:
    """{task: {metric: value}} of the last line of a metrics.json that holds evaluation results
    ("<task>/<metric>" keys, e.g. "keypoints/AP"); {} when none does."""
    last: Dict[str, Dict[str, float]] = {}
    with open(metrics_path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{metrics_path}: a line is not json ({e}): {line[:80]!r}") from None
            tasks: Dict[str, Dict[str, float]] = {}
            for key, value in row.items():
                task, _, name = key.partition("/")
                if task in ("keypoints", "bbox", "segm") and name and isinstance(value, (int, float)):
                    tasks.setdefault(task, {})[name] = float(value)
            if tasks:
                last = tasks
    return last


def run_summary(output_dir: str) -> RunSummary:
    """The RunSummary of a train_net.py output folder (FileNotFoundError naming the folder when it
    holds neither a log.txt nor a metrics.json)."""
    log, metrics = os.path.join(output_dir, "log.txt"), os.path.join(output_dir, "metrics.json")
    if not os.path.exists(log) and not os.path.exists(metrics):
        raise FileNotFoundError(f"{output_dir}: no log.txt or metrics.json (not a train_net.py output folder?)")
    summary = RunSummary(output_dir)
    if os.path.exists(log):
        summary.iterations, summary.training_seconds = logged_training_seconds(log)
    if os.path.exists(metrics):
        summary.metrics = final_metrics(metrics)
    return summary


def format_runs(runs: Sequence[RunSummary], names: Sequence[str] = (), task: str = "keypoints") -> List[str]:
    """A markdown table: run, iterations, training minutes, AP, AP50, AP75, AR of `task`."""
    lines = ["| run | iterations | training minutes | AP | AP50 | AP75 | AR |", "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(runs):
        name = names[i] if i < len(names) else r.output_dir
        m = r.metrics.get(task, {})
        cells = [f"{m[k]:.1f}" if k in m else "-" for k in ("AP", "AP50", "AP75", "AR")]
        its = "-" if r.iterations is None else str(r.iterations)
        mins = "-" if r.minutes is None else f"{r.minutes:.1f}"
        lines.append(f"| {name} | {its} | {mins} | " + " | ".join(cells) + " |")
    return lines
