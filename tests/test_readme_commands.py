"""Every command line of the READMEs (README.md, projects/*/README.md) is checked against the code, so
that a documented command cannot drift from it: the script exists, its arguments parse with the
tool's own parser (nothing is trained, measured or drawn), every config file it names exists, and
every config override KEY exists in the config that file gives (values merged where they are not
placeholders).

A command is a `python ...` line of a code block (comments dropped, backslash continuations joined)
or an inline code span that starts with `python` or with a script of the repository
(`tools/export_onnx.py ...`). Placeholders parse as they are: `<weights>`, `...`, `CONFIG`, `DIR`;
`[--flag]` is read as the flag; `<printed overrides>` and `--opts ...` stand for KEY VALUE pairs and
are left out. A code block's `make TARGET` and `tools/x.sh ...` lines name a Makefile target and a
script that exist.
"""
import argparse
import glob
import importlib.util
import os
import re
import shlex
from types import ModuleType
from typing import Dict, List, Sequence, Tuple

import pytest

import d2pose  # noqa: F401  (registers every method's config keys)
from d2pose.config import get_d2pose_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READMES = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "projects/*/README.md")))
PYTHON = re.compile(r"^(\S*/)?python3?$")
SCRIPT = re.compile(r"^(train_net\.py|tools/\w+\.py|projects/\w+/tools/\w+\.py)$")
OVERRIDES_PLACEHOLDER = re.compile(r"<[^<>]*overrides[^<>]*>")
PLACEHOLDER = re.compile(r"^(\.\.\.|<[^<>]*>|[A-Z][A-Z_]*)$")  # `<weights>`, `...`, CONFIG, DIR (no dot: not a key)


# --------------------------------------------------------------------------------------------------
# reading the commands


def _code_blocks(text: str) -> Tuple[str, List[Tuple[int, str]]]:
    """(the text with its fenced code blocks blanked, keeping the line count; (first line, block))."""
    blocks = []

    def blank(match: re.Match) -> str:
        blocks.append((text.count("\n", 0, match.start()) + 2, match.group(1)))
        return "\n" * match.group(0).count("\n")

    return re.sub(r"```[^\n]*\n(.*?)```", blank, text, flags=re.S), blocks


def _block_commands(first_line: int, block: str, python: bool = True) -> List[Tuple[int, str]]:
    """(line, command) of a code block's `python` commands (`python=False`: its other commands)."""
    commands, pending, start = [], "", first_line
    for number, line in enumerate(block.split("\n"), first_line):
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        start = start if pending else number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        command, pending = (pending + line).strip(), ""
        if command and bool(PYTHON.match(command.split()[0])) == python:
            commands.append((start, command))
    return commands


def readme_commands(readme: str) -> List[Tuple[int, str]]:
    """(line, command) of every command of a README (see the module docstring), in order."""
    with open(os.path.join(ROOT, readme), encoding="utf-8") as f:
        text, blocks = _code_blocks(f.read())
    commands = [c for first, block in blocks for c in _block_commands(first, block)]
    for match in re.finditer(r"`([^`]+)`", text):
        span = " ".join(match.group(1).split())
        words = span.split()
        if len(words) > 1 and (PYTHON.match(words[0]) or SCRIPT.match(words[0])):
            commands.append((text.count("\n", 0, match.start()) + 1, span))
    return sorted(commands)


def readme_shell_commands(readme: str) -> List[Tuple[int, str]]:
    """(line, command) of the code blocks' other commands: `make TARGET`, `path/to/script.sh ...`."""
    with open(os.path.join(ROOT, readme), encoding="utf-8") as f:
        _, blocks = _code_blocks(f.read())
    return [(line, command) for first, block in blocks for line, command in _block_commands(first, block, python=False)
            if command.split()[0] == "make" or command.split()[0].endswith(".sh")]


def command_argv(command: str) -> Tuple[str, List[str]]:
    """(script, its arguments) of a command, placeholders normalised (see the module docstring)."""
    command = OVERRIDES_PLACEHOLDER.sub("", command)
    command = re.sub(r"(?<!\S)--opts\s+\.\.\.(?!\S)", " ", command)  # "--opts ...": some overrides
    command = re.sub(r"<[^<>]*>", lambda m: m.group(0).replace(" ", "_"), command)
    command = re.sub(r"(?<!\S)\[|\](?!\S)", " ", command)  # [--flag] -> --flag, [DIR ...] -> DIR ...
    words = shlex.split(command)
    if PYTHON.match(words[0]):
        words = words[1:]
    return words[0], words[1:]


def all_commands() -> List[Tuple[str, int, str]]:
    """(readme, line, command) of every README."""
    return [(readme, line, command) for readme in READMES for line, command in readme_commands(readme)]


# --------------------------------------------------------------------------------------------------
# parsing a command's arguments with its tool's parser


class ArgumentsParsed(Exception):
    """Stops a tool's main() right after its parser has read the arguments."""

    def __init__(self, namespace: argparse.Namespace):
        super().__init__("arguments parsed")
        self.namespace = namespace


_SCRIPTS: Dict[str, ModuleType] = {}


def load_script(script: str) -> ModuleType:
    """The script (path relative to the repository) loaded as a module (its `__main__` part not run)."""
    if script not in _SCRIPTS:
        name = "readme_" + re.sub(r"\W", "_", script)
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, script))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _SCRIPTS[script] = module
    return _SCRIPTS[script]


def parsed_arguments(script: str, argv: Sequence[str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """The arguments as the script reads them: its `parse_args(argv)` where it has one, else its
    `main(argv)` stopped as soon as its parser has read them. An argument error exits (SystemExit)."""
    module = load_script(script)
    if hasattr(module, "parse_args"):
        return module.parse_args(list(argv))
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise ArgumentsParsed(parse(self, args, namespace))

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        try:
            module.main(list(argv))
        except ArgumentsParsed as parsed:
            return parsed.namespace
    raise AssertionError(f"{script}: main() returned without parsing its arguments")


# --------------------------------------------------------------------------------------------------
# checking a command's config


def _has_key(cfg, key: str) -> bool:
    node = cfg
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            return False
        node = node[part]
    return True


def check_config(args: argparse.Namespace) -> List[str]:
    """What is wrong with the config of parsed arguments: a missing --config-file or YAML value, an
    override KEY that the config lacks, a value it refuses."""
    problems = []
    files = getattr(args, "config_file", None) or []
    files = [files] if isinstance(files, str) else list(files)
    opts = [t for t in getattr(args, "opts", None) or [] if t != "--"]  # "--": the end of the options
    for value in opts[1::2]:
        if value.endswith(".yaml") and not os.path.isfile(os.path.join(ROOT, value)):
            problems.append(f"no such config file {value}")
    real = [f for f in files if not PLACEHOLDER.match(f)]
    for config in real or [None]:
        if config is not None and not os.path.isfile(os.path.join(ROOT, config)):
            problems.append(f"no such config file {config}")
            continue
        cfg = get_d2pose_cfg()
        if config is not None:
            cfg.merge_from_file(os.path.join(ROOT, config))
        problems += [f"{config}: no config key {key}" for key in opts[0::2] if not _has_key(cfg, key)]
        pairs = [t for key, value in zip(opts[0::2], opts[1::2]) if _has_key(cfg, key) and not PLACEHOLDER.match(value)
                 for t in (key, value)]
        try:
            cfg.merge_from_list(pairs)
        except Exception as e:  # a value of the wrong type
            problems.append(f"{config}: the overrides {pairs} do not merge: {type(e).__name__}: {e}")
    return problems


# --------------------------------------------------------------------------------------------------
# the tests


def test_the_readmes_have_commands():
    commands = all_commands()
    scripts = {command_argv(c)[0] for _, _, c in commands}
    assert len(commands) > 30 and {"train_net.py", "tools/demo.py", "tools/benchmark.py"} <= scripts
    assert any(r == "projects/LOGOCAP/README.md" and command_argv(c)[0] == "tools/demo.py" for r, _, c in commands)


@pytest.mark.parametrize("readme, line, command", all_commands(), ids=lambda v: str(v)[:60])
def test_readme_command(readme, line, command, monkeypatch, capsys):
    where = f"{readme}:{line}: {command}"
    script, argv = command_argv(command)
    assert os.path.isfile(os.path.join(ROOT, script)), f"{where}: no script {script}"
    try:
        args = parsed_arguments(script, argv, monkeypatch)
    except SystemExit:
        pytest.fail(f"{where}: the arguments do not parse: {capsys.readouterr().err.strip()[-600:]}")
    problems = check_config(args)
    assert not problems, f"{where}: {problems}"


@pytest.mark.parametrize("readme", READMES)
def test_readme_shell_commands(readme):
    """`make TARGET` names a target of the Makefile, `tools/x.sh` a script of the repository."""
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as f:
        targets = set(re.findall(r"^([\w-]+):", f.read(), flags=re.M))
    for line, command in readme_shell_commands(readme):
        words = command.split()
        if words[0] == "make":
            assert set(words[1:]) <= targets, f"{readme}:{line}: {command}: no such Makefile target"
        else:
            assert os.path.isfile(os.path.join(ROOT, words[0])), f"{readme}:{line}: {command}: no such script"


def test_the_logocap_demo_command_runs_as_printed(tmp_path, monkeypatch):
    """The LOGO-CAP README's demo command, word for word, run from a folder with photos/ (the model
    replaced by a stand-in that finds one person per image: `<weights>` is no file): every photo is drawn."""
    import cv2
    import numpy as np
    import torch
    from detectron2.structures import Boxes, Instances

    from d2pose.engine import demo

    (command,) = [c for _, c in readme_commands("projects/LOGOCAP/README.md") if command_argv(c)[0] == "tools/demo.py"]
    for shared in ("projects", "configs"):
        os.symlink(os.path.join(ROOT, shared), tmp_path / shared)
    (tmp_path / "photos").mkdir()
    cv2.imwrite(str(tmp_path / "photos" / "walk.jpg"), np.full((64, 48, 3), 90, np.uint8))
    built = []

    def stand_in(cfg):
        built.append(cfg)

        def predict(image):
            people = Instances(image.shape[:2])
            people.pred_keypoints = torch.cat([torch.rand(1, 17, 2) * 40, torch.ones(1, 17, 1)], -1)
            people.pred_boxes = Boxes(torch.tensor([[2.0, 2.0, 40.0, 60.0]]))
            people.scores = torch.ones(1)
            return {"instances": people}
        return predict

    monkeypatch.setattr(demo, "PosePredictor", stand_in)
    monkeypatch.chdir(tmp_path)
    summary = load_script("tools/demo.py").main(command_argv(command)[1])
    assert not summary["failures"] and summary["written"] == [os.path.join("output/demo_logocap", "walk.jpg")]
    assert built[0].MODEL.WEIGHTS == "<weights>" and built[0].MODEL.META_ARCHITECTURE == "LOGOCAP"
