#!/usr/bin/env python
"""Look inside a Poseur top-down model (`d2pose_poseur.visualize`): per person crop, the coarse
proposals, each decoder layer's reference points and one keypoint's EMSDA samples, and the final
prediction; or, with --stats N, error and sampling statistics over N people.

    python projects/Poseur/tools/visualize_poseur.py --config-file projects/Poseur/configs/synthetic_poseur_topdown.yaml \
        MODEL.WEIGHTS output/synthetic_poseur_topdown/model_final.pth \
        --dataset synthetic_pose_val_mini --keypoint left_wrist --num 4 --output-dir output/vis_poseur
    python projects/Poseur/tools/visualize_poseur.py --config-file projects/Poseur/configs/synthetic_poseur_topdown.yaml \
        --dataset synthetic_pose_val --stats 256 MODEL.WEIGHTS output/synthetic_poseur_topdown/model_final.pth

Config overrides: KEY VALUE pairs at the end, or anywhere after --opts (d2pose.engine.cli).
"""
from typing import List, Optional

import d2pose  # noqa: F401  (registers every component)
from d2pose.engine.cli import overrides_last
from d2pose_poseur import visualize


def main(argv: Optional[List[str]] = None):
    """Draws (or with --stats measures) as the command line says (`d2pose_poseur.visualize.main`)."""
    return visualize.main(overrides_last(argv))


if __name__ == "__main__":
    main()
