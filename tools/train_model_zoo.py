#!/usr/bin/env python
"""Regenerates the small trained models shipped in d2pose's model zoo (d2pose/model_zoo/trained/):
trains each zoo recipe from scratch, stores its weights in float16, evaluates them and records
sha256, schedule, minutes, machine and AP in d2pose/model_zoo/trained/MODELS.json
(d2pose.engine.zoo).

    python tools/train_model_zoo.py [--output-root output/model_zoo] [--only NAME ...]
"""
from d2pose.engine.zoo import main

if __name__ == "__main__":
    main()
