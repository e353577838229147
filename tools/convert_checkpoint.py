#!/usr/bin/env python
"""Convert an official RLE, Poseur, TransPose or LOGO-CAP checkpoint into a Detectron2 checkpoint for
d2pose (`d2pose.checkpoint.command`; --help for the details).

    python tools/convert_checkpoint.py --method rle --input rle_res50.pth --output output/rle_R_50_d2pose.pth
    python tools/convert_checkpoint.py --method poseur --input poseur_res50.pth --output output/poseur_R_50_d2pose.pth
    python tools/convert_checkpoint.py --method transpose --input tp_r_256x192_enc4_d256_h1024_mh8.pth \
        --output output/transpose_r_a4_d2pose.pth
    python tools/convert_checkpoint.py --method logocap --input logocap_w32_coco.pth \
        --output output/logocap_w32_d2pose.pth

--help lists every method with a registered converter. It prints the config overrides the converted
weights need; an existing output file is never replaced unless --overwrite is given, and a checkpoint
that is d2pose's already is refused with a message saying to load it with MODEL.WEIGHTS.
"""
import d2pose  # noqa: F401  (registers every method's converter)
from d2pose.checkpoint.command import main

if __name__ == "__main__":
    main()
