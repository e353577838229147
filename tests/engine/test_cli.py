"""One override syntax for every tool (d2pose.engine.cli): KEY VALUE pairs at the end, as train_net.py
takes them, and `--opts KEY VALUE ...` anywhere, as Detectron2's demo takes them; every tool under
tools/ and projects/*/tools/ that takes config overrides reads both the same way (only its parser
runs: nothing is trained, measured or drawn)."""
import argparse
import os

import pytest

from d2pose.engine import demo, launcher
from d2pose.engine.cli import add_config_overrides, overrides_last, parse_with_overrides, split_overrides
from tests.test_readme_commands import parsed_arguments

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "projects/RLE/configs/synthetic_rle_topdown.yaml"
OPTS = ["MODEL.WEIGHTS", "w.pth", "SOLVER.BASE_LR", "-0.5"]

#: (script, its other arguments, the option after which the overrides may stand) of every tool
#: that takes config overrides
TOOLS = [
    ("train_net.py", ["--config-file", CONFIG, "--eval-only"], "--num-gpus", "1"),
    ("tools/demo.py", ["--config-file", CONFIG, "--input", "a.jpg", "b.jpg"], "--output", "out"),
    ("tools/export_onnx.py", ["--config-file", CONFIG, "--check"], "--output", "m.onnx"),
    ("tools/benchmark.py", ["--config-file", CONFIG], "--repeats", "3"),
    ("tools/time_recipe.py", ["--config-file", CONFIG], "--steps", "2"),
    ("tools/train_demo.py", ["--config-file", CONFIG], "--iters", "5"),
    ("tools/train_model_zoo.py", ["--output-root", "o"], "--dest", "d"),
    ("projects/Poseur/tools/visualize_poseur.py", ["--config-file", CONFIG, "--keypoint", "left_wrist"],
     "--output-dir", "o"),
    ("projects/TransPose/tools/visualize_dependency.py", ["--config-file", CONFIG, "--layer", "-1"],
     "--output", "o.jpg"),
    ("projects/LOGOCAP/tools/logocap_upper_bound.py", ["--config-file", CONFIG], "--dataset", "d"),
]


def test_split_overrides():
    argv = ["--config-file", "c", "MODEL.WEIGHTS", "w", "--keypoint", "k", "--opts", "SOLVER.BASE_LR", "-1",
            "DATASETS.TEST", "()", "--output", "IMG_0001.JPG", "NOT.A_KEY", "x"]
    rest, overrides = split_overrides(argv)
    assert overrides == ["MODEL.WEIGHTS", "w", "SOLVER.BASE_LR", "-1", "DATASETS.TEST", "()"]
    assert rest == ["--config-file", "c", "--keypoint", "k", "--output", "IMG_0001.JPG", "NOT.A_KEY", "x"]
    assert overrides_last(argv) == rest + overrides
    # a KEY followed by an option has no value: it stays, for the parser to report
    assert split_overrides(["MODEL.WEIGHTS", "--eval-only"]) == (["MODEL.WEIGHTS", "--eval-only"], [])


@pytest.mark.parametrize("script, before, option, value", TOOLS, ids=[t[0] for t in TOOLS])
def test_every_tool_takes_both_syntaxes(script, before, option, value, monkeypatch):
    """The overrides at the end, after --opts anywhere (here before the last option), and before an
    option: each time the tool's parser gets the same arguments."""
    at_end = before + [option, value] + OPTS
    with_opts = before + ["--opts"] + OPTS + [option, value]
    between = before + OPTS + [option, value]
    parsed = [parsed_arguments(script, argv, monkeypatch) for argv in (at_end, with_opts, between)]
    for args in parsed:
        assert [t for t in args.opts if t != "--"] == OPTS
        assert str(getattr(args, option[2:].replace("-", "_"))) == value
    assert vars(parsed[0]).keys() == vars(parsed[1]).keys() == vars(parsed[2]).keys()


def test_the_demo_takes_opts_before_its_required_options():
    """Detectron2's demo takes --opts only last (else "required: --output"); here anywhere."""
    args = demo.parse_args(["--config-file", CONFIG, "--opts", "MODEL.WEIGHTS", "w", "--input", "photos/",
                            "--output", "out"])
    assert args.opts == ["MODEL.WEIGHTS", "w"] and args.input == ["photos/"] and args.output == "out"
    # right after --input's files, a config key ends them
    args = demo.parse_args(["--config-file", CONFIG, "--output", "out", "--input", "a.jpg", "b.jpg", *OPTS])
    assert args.input == ["a.jpg", "b.jpg"] and args.opts == OPTS


def test_the_launcher_flags_and_errors():
    args = launcher.parse_args(["--config-file", CONFIG, "MODEL.WEIGHTS", "w", "--resume", "--opts", "SEED", "3",
                                "--num-gpus", "2"])
    assert args.opts == ["MODEL.WEIGHTS", "w", "SEED", "3"] and args.resume and args.num_gpus == 2
    # a key that is no config key stays positional: the flags after it are still read
    args = launcher.parse_args(["--config-file", CONFIG, "MODEL.NO_SUCH_KEY", "1", "--eval-only"])
    assert args.opts == ["MODEL.NO_SUCH_KEY", "1"] and args.eval_only


def test_parse_errors_name_the_token(capsys):
    parser = add_config_overrides(argparse.ArgumentParser(prog="tool"))
    parser.add_argument("--name")
    with pytest.raises(SystemExit):
        parse_with_overrides(parser, ["--name", "n", "MODEL.WEIGHTS"])
    assert "'MODEL.WEIGHTS' has no value" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_with_overrides(parser, ["NO.KEY", "1", "--name", "n"])
    assert "option --name must come before the KEY VALUE overrides" in capsys.readouterr().err
    assert parse_with_overrides(parser, ["--opts", "--name", "n"]).opts == []
