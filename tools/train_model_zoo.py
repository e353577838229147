#!/usr/bin/env python
"""Regenerates the small trained models shipped in d2pose's model zoo (d2pose/model_zoo/trained/):
trains each zoo recipe from scratch, stores its weights in float16, evaluates them and records
sha256, schedule, minutes, machine and AP in d2pose/model_zoo/trained/MODELS.json
(d2pose.engine.zoo).

    python tools/train_model_zoo.py [--output-root output/model_zoo] [--only NAME ...] [KEY VALUE ...]

Config overrides (of every recipe): KEY VALUE pairs at the end, or anywhere after --opts
(d2pose.engine.cli); after --only's names, give them after another option or after "--".
"""
from typing import Dict, List, Optional

from d2pose.engine import zoo
from d2pose.engine.cli import overrides_last


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict]:
    """Regenerates the models as the command line says (`d2pose.engine.zoo.main`)."""
    return zoo.main(overrides_last(argv))


if __name__ == "__main__":
    main()
