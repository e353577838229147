"""Tests of step timing and schedule sizing (d2pose.engine.timing) and the demo's use of them."""
import os
import types

import pytest

from d2pose.config import get_d2pose_cfg
from d2pose.engine import timing
from d2pose.engine import train_demo as demo

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_fit_schedule():
    assert timing.fit_schedule(0.5, 60.0, max_iters=600) == 120
    assert timing.fit_schedule(0.01, 60.0, max_iters=600) == 600  # capped
    assert timing.fit_schedule(10.0, 5.0, max_iters=600, min_iters=20) == 20  # floor


def test_scale_schedule_keeps_fractions():
    cfg = get_d2pose_cfg()
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS, cfg.SOLVER.WARMUP_ITERS = 4700, (3760, 4320), 100
    iters, steps, warmup = timing.scale_schedule(cfg, 470)
    assert (iters, steps, warmup) == (470, (376, 432), 47)


def test_measure_step_time_runs_real_steps():
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "projects/RLE/configs/synthetic_rle_topdown.yaml"))
    cfg.DATASETS.TRAIN = ("synthetic_pose_val_mini",)
    cfg.SOLVER.IMS_PER_BATCH = 4
    t = timing.measure_step_time(cfg, steps=2, warmup=1)
    assert t.steps == 2 and 0 < t.seconds_per_iter < 30
    assert t.precision in ("float32", "bfloat16")
    assert t.minutes(600) == pytest.approx(t.seconds_per_iter * 10)


def test_demo_sizes_its_schedule_to_the_budget(monkeypatch, capsys):
    slow = timing.StepTiming(seconds_per_iter=1.5, precision="float32", steps=8, setup_seconds=1.0)
    monkeypatch.setattr(timing, "measure_step_time", lambda cfg, steps, warmup: slow)
    args = types.SimpleNamespace(config_file=os.path.join(ROOT, "projects/Poseur/configs/synthetic_poseur_topdown.yaml"),
                                 opts=[], iters=600, time_budget=5.0, resume=False)
    iters = demo.choose_iterations(args)
    assert 190 <= iters <= 200  # 300 s budget (less the measuring) at 1.5 s/it
    out = capsys.readouterr().out
    assert f"training {iters} iterations instead of 600" in out and "1.500 s/iteration" in out and "float32" in out
    args.time_budget = 0
    assert demo.choose_iterations(args) == 600


def test_demo_reserves_steps_for_its_evaluations(monkeypatch, capsys):
    step = timing.StepTiming(seconds_per_iter=0.5, precision="bfloat16", steps=8, setup_seconds=1.0)
    monkeypatch.setattr(timing, "measure_step_time", lambda cfg, steps, warmup: step)
    config = os.path.join(ROOT, "projects/Poseur/configs/synthetic_poseur_topdown.yaml")
    args = types.SimpleNamespace(config_file=config, opts=[], iters=600, time_budget=5.0, resume=False)
    iters = demo.choose_iterations(args, budget_minutes=2.0, reserve_steps=40)
    assert 190 <= iters <= 200  # (120 s - 20 s reserved) / 0.5 s, less the measuring
    assert "less 20 s for evaluations and drawings" in capsys.readouterr().out


def test_demo_training_budget_is_what_the_total_leaves(capsys):
    args = types.SimpleNamespace(time_budget=5.0, total_budget=9.0)
    assert demo.training_budget(args, 60.0) == 5.0  # 8 min left: the training budget holds
    assert demo.training_budget(args, 300.0) == pytest.approx(4.0)
    assert "4.0 of the 9 min total are left" in capsys.readouterr().out
    assert demo.training_budget(args, 900.0) == pytest.approx(0.01)  # nothing left: the schedule's floor
    args.time_budget = 0.0
    assert demo.training_budget(args, 300.0) == 0.0  # exactly --iters
    args.time_budget, args.total_budget = 5.0, 0.0
    assert demo.training_budget(args, 900.0) == 5.0  # no total


def test_demo_evaluates_about_five_times():
    for iters, points in ((600, 5), (200, 5), (100, 5), (150, 4), (20, 1)):
        period = demo.eval_period(iters)
        assert period % 20 == 0  # Detectron2's writers record every evaluation in metrics.json
        assert len(range(period, iters, period)) + 1 == points, iters  # + the evaluation at the end
