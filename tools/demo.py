#!/usr/bin/env python
"""Pose estimation on one's own images, videos or a webcam (`d2pose.engine.demo`; --help for options).

    python tools/demo.py --config-file CFG --input IMAGES_FOLDERS_OR_GLOBS ... --output DIR [--json FILE]
                         [KEY VALUE ...]
    python tools/demo.py --config-file CFG --video-input FILE --output DIR [--json FILE] [--smooth]
    python tools/demo.py --config-file CFG --webcam --output DIR   (Ctrl-C stops)

Config overrides: KEY VALUE pairs at the end, or anywhere after --opts (d2pose.engine.cli). The exit
status is 1 when any input could not be read.
"""
import sys

from d2pose.engine.demo import main, parse_args  # noqa: F401  (parse_args: the command line alone)

if __name__ == "__main__":
    sys.exit(1 if main()["failures"] else 0)
