"""Config overrides on the command line, the same for every d2pose tool (train_net.py, tools/*.py,
projects/*/tools/*.py): KEY VALUE pairs at the end, as Detectron2's train_net.py takes them, or after
`--opts` anywhere, as Detectron2's demo takes them:

    python tools/demo.py --config-file CFG --input photos/ --output out/ MODEL.WEIGHTS model.pth
    python tools/demo.py --config-file CFG --opts MODEL.WEIGHTS model.pth --input photos/ --output out/

`--opts` takes the tokens after it up to the next option (a token starting with "-" that is not a
number). A KEY VALUE pair whose KEY is a key of the d2pose config (`MODEL.WEIGHTS`, a renamed key's
old name too) may also stand between options (`... MODEL.WEIGHTS w --dataset d`). Every override is
moved to the end, in its order, before the tool's parser reads the arguments; a KEY that is no config
key stays where it is and is reported by the merge (`Non-existent config key`).

A parser built here (`add_config_overrides`, `parse_with_overrides`) also takes overrides right
after an option with several values (`--input a.jpg b.jpg MODEL.WEIGHTS w`); a tool whose parser is
built elsewhere reads `overrides_last(argv)`, after which such an option would take them as its own
values: put another option, or `--opts`, before them there.
"""
import argparse
import re
import sys
from functools import lru_cache
from typing import FrozenSet, List, Optional, Sequence, Tuple

from detectron2.config import CfgNode

from ..config import RENAMED_KEYS, get_d2pose_cfg

__all__ = ["OPTS_HELP", "config_keys", "split_overrides", "overrides_last", "add_config_overrides",
           "parse_with_overrides"]

#: the help of the positional overrides and of their `--opts` alias
OPTS_HELP = ("config overrides KEY VALUE ... at the end (e.g. MODEL.WEIGHTS model.pth), or anywhere after --opts "
             "(up to the next option)")

_NUMBER = re.compile(r"^-\d+(\.\d*)?([eE][-+]?\d+)?$|^-\.\d+$")
#: ends the options before overrides (parse_with_overrides drops it from the overrides)
_SEPARATOR = "--"


def _leaf_keys(node: CfgNode, prefix: str = "") -> List[str]:
    keys = []
    for name, value in node.items():
        keys += _leaf_keys(value, f"{prefix}{name}.") if isinstance(value, CfgNode) else [prefix + name]
    return keys


@lru_cache(maxsize=1)
def config_keys() -> FrozenSet[str]:
    """Every leaf key of the d2pose config (full dotted names) and the old names of renamed keys."""
    return frozenset(_leaf_keys(get_d2pose_cfg())) | frozenset(RENAMED_KEYS)


def _is_option(token: str) -> bool:
    return token.startswith("-") and len(token) > 1 and not _NUMBER.match(token)


def split_overrides(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(the other arguments, the config overrides), each in its order: the overrides are the tokens
    after `--opts` up to the next option and each config KEY followed by a value (see the module
    docstring); `--opts` itself is dropped."""
    rest, overrides, after_opts, i = [], [], False, 0
    keys = config_keys()
    while i < len(argv):
        token = argv[i]
        if token == "--opts":
            after_opts = True
        elif _is_option(token):  # the separator "--" too
            after_opts = False
            rest.append(token)
        elif after_opts:
            overrides.append(token)
        elif token in keys and i + 1 < len(argv) and not _is_option(argv[i + 1]):
            overrides += [token, argv[i + 1]]
            i += 1
        else:
            rest.append(token)
        i += 1
    return rest, overrides


def overrides_last(argv: Optional[Sequence[str]] = None) -> List[str]:
    """`argv` (default: the command line) with its config overrides at the end, for a parser whose
    overrides are its last positional argument (nargs=argparse.REMAINDER)."""
    rest, overrides = split_overrides(sys.argv[1:] if argv is None else list(argv))
    return rest + overrides


def add_config_overrides(parser: argparse.ArgumentParser, positional: bool = True) -> argparse.ArgumentParser:
    """Adds the overrides to `parser`: the positional `opts` (unless the parser has it, as Detectron2's
    `default_argument_parser`: `positional=False`) and its `--opts` alias; parse with
    `parse_with_overrides`, which gathers both into `args.opts`."""
    parser.add_argument("--opts", dest="opts_anywhere", nargs="*", default=[], metavar="KEY VALUE", help=OPTS_HELP)
    if positional:
        parser.add_argument("opts", nargs=argparse.REMAINDER, help=OPTS_HELP)
    return parser


def parse_with_overrides(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None,
                         flags: Sequence[str] = ()) -> argparse.Namespace:
    """`parser` (with `add_config_overrides`) on `argv` (default: the command line), the overrides
    gathered in `args.opts` as KEY VALUE pairs; the boolean options `flags` are also read from among
    the overrides. An option among the overrides, or a KEY without a value, is an error naming it."""
    rest, overrides = split_overrides(sys.argv[1:] if argv is None else list(argv))
    args = parser.parse_args(rest + ([_SEPARATOR] + overrides if overrides else []))
    opts = []
    for token in list(args.opts) + list(getattr(args, "opts_anywhere", [])):
        if token == _SEPARATOR:
            continue
        if token in flags:
            setattr(args, token[2:].replace("-", "_"), True)
        elif _is_option(token):
            parser.error(f"option {token} must come before the KEY VALUE overrides "
                         f"(after them it would be read as a key; overrides so far: {opts})")
        else:
            opts.append(token)
    if len(opts) % 2:
        parser.error(f"the overrides must be KEY VALUE pairs; {opts[-1]!r} has no value (overrides: {opts})")
    args.opts = opts
    if hasattr(args, "opts_anywhere"):
        del args.opts_anywhere
    return args
