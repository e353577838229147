"""Plots of a training run from Detectron2's `metrics.json` (one JSON object per line, written by its
`JSONWriter` every 20 iterations and after each periodic evaluation): the training loss and the
evaluated AP over iterations, with an optional reference AP (e.g. a longer run's) as a horizontal
line. Drawn with matplotlib's Agg canvas on a `Figure` of its own: no pyplot, no global backend.
"""
import json
import math
import os
from typing import Dict, List, Optional, Tuple

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["read_metrics", "plot_training"]

#: {metric: [(iteration, value), ...]} in the order of the iterations
Series = Dict[str, List[Tuple[int, float]]]


def read_metrics(metrics_json: str) -> Series:
    """Every numeric metric of a metrics.json as (iteration, value) pairs, sorted by iteration; where a
    resumed run wrote an iteration twice the later line wins. Unreadable lines (a run killed while
    writing) are skipped."""
    found: Dict[str, Dict[int, float]] = {}
    with open(metrics_json) as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(entry, dict) or "iteration" not in entry:
                continue
            step = int(entry["iteration"])
            for key, value in entry.items():
                if key != "iteration" and isinstance(value, (int, float)) and math.isfinite(value):
                    found.setdefault(key, {})[step] = float(value)
    return {key: sorted(points.items()) for key, points in found.items()}


def _loss_series(series: Series, loss_key: str) -> List[Tuple[int, float]]:
    """`loss_key` if recorded, else the sum of the loss_* terms at the iterations that have them all."""
    if loss_key in series:
        return series[loss_key]
    terms = [dict(points) for key, points in series.items() if key.startswith("loss_")]
    if not terms:
        return []
    common = sorted(set.intersection(*(set(t) for t in terms)))
    return [(step, sum(t[step] for t in terms)) for step in common]


def plot_training(metrics_json: str, out_png: str, reference: Optional[float] = None, reference_label: str = "",
                  ap_key: str = "keypoints/AP", loss_key: str = "total_loss", title: str = "") -> Dict:
    """Draws the training loss (left) and the AP (`ap_key`, right) of a run over iterations into
    `out_png`; `reference`: an AP drawn as a dashed horizontal line labelled `reference_label`.

    Returns:
        {"png": out_png, "loss": [(iteration, loss)], "ap": [(iteration, AP)]}.
    """
    series = read_metrics(metrics_json)
    loss, ap = _loss_series(series, loss_key), series.get(ap_key, [])
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    if loss:
        left.plot([s for s, _ in loss], [v for _, v in loss], color="tab:blue", marker="o" if len(loss) < 10 else None)
    left.set(xlabel="iteration", ylabel=loss_key if loss_key in series else "sum of loss terms", title="training loss")
    left.grid(alpha=0.3)
    if ap:
        right.plot([s for s, _ in ap], [v for _, v in ap], "o-", color="tab:green", label=f"this run ({ap_key})")
    if reference is not None:
        right.axhline(reference, color="tab:red", linestyle="--", label=reference_label or f"reference {reference:.1f}")
    top = max([v for _, v in ap] + ([reference] if reference is not None else []) + [1.0])
    right.set(xlabel="iteration", ylabel="AP", title="AP on the evaluation set", ylim=(0, min(100.0, top * 1.15)))
    right.grid(alpha=0.3)
    if ap or reference is not None:
        right.legend(loc="center right", fontsize=8)
    if loss or ap:  # both panels share the run's iterations
        steps = [s for s, _ in loss] + [s for s, _ in ap]
        for axis in (left, right):
            axis.set_xlim(0, max(steps) * 1.02 + 1)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png)
    return {"png": out_png, "loss": loss, "ap": ap}
