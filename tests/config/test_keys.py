"""add_d2pose_config's keys: every key is read somewhere in d2pose's code (a key nobody reads is a
setting that silently does nothing), and the count is pinned so that adding or dropping keys is a
visible decision (79 keys before the pruning of 2026-12-02, which removed ablation-only keys and
second keys of one choice)."""
import os
import re

from detectron2.config import get_cfg

from d2pose.config import get_d2pose_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# where keys are defined, not read
DEFINITIONS = {os.path.join("d2pose", "config", "defaults.py"), os.path.join("projects", "RLE", "d2pose_rle", "config.py"),
               os.path.join("projects", "Poseur", "d2pose_poseur", "config.py"),
               os.path.join("projects", "TransPose", "d2pose_transpose", "config.py")}


def _flat(node, prefix=""):
    out = {}
    for k, v in node.items():
        if hasattr(v, "items"):
            out.update(_flat(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


def d2pose_keys():
    base = _flat(get_cfg())
    return sorted(k for k in _flat(get_d2pose_cfg()) if k not in base)


def _sources():
    files = {}
    for top in ("d2pose", "projects", "tools"):
        for folder, _, names in os.walk(os.path.join(ROOT, top)):
            for name in names:
                rel = os.path.relpath(os.path.join(folder, name), ROOT)
                if name.endswith(".py") and rel not in DEFINITIONS:
                    with open(os.path.join(folder, name)) as f:
                        files[rel] = f.read()
    with open(os.path.join(ROOT, "train_net.py")) as f:
        files["train_net.py"] = f.read()
    return files


def test_every_d2pose_key_is_read_by_code():
    """A key A.B.LEAF counts as read where one source file accesses `.LEAF` and names its node B
    (as `cfg.B.LEAF`, or `b = cfg.A.B` then `b.LEAF`)."""
    sources = _sources()
    unread = []
    for key in d2pose_keys():
        *parents, leaf = key.split(".")
        parent = parents[-1]
        access = re.compile(rf"\.{leaf}\b")
        if not any(access.search(text) and re.search(rf"\b{parent}\b", text) for text in sources.values()):
            unread.append(key)
    assert not unread, f"keys no code reads: {unread}"


def test_key_count():
    """67 keys at 0.2.0; TransPose adds TEST.KEYPOINT_FLIP_SHIFT (core: every heatmap head's flip
    test) and its 11 MODEL.TRANSPOSE keys; the top-down person detector adds 6
    (MODEL.TOPDOWN.DETECTOR.*); reproducible and multi-process training add SOLVER.DETERMINISTIC and
    MODEL.DDP_FIND_UNUSED_PARAMETERS (2026-12-03); training parity with the authors adds
    INPUT.TOPDOWN.REGRESSION_SUPERVISE_OUTSIDE (RLE), INPUT.BOTTOMUP.PROTOCOL (LOGO-CAP) and
    MODEL.POSEUR.LOSS_NORMALIZATION / INIT / SIGMA_BRANCH (2026-12-07); LOGO-CAP's training search adds
    INPUT.BOTTOMUP.MIN_CENTER_AREA and MODEL.LOGOCAP.MAX_KEPT, OKS-NMS on whole images
    TEST.OKS_NMS_GT_BOXES (0.3)."""
    keys = d2pose_keys()
    assert len(keys) == 133, (len(keys), keys)
    for key in ("INPUT.TOPDOWN.REGRESSION_SUPERVISE_OUTSIDE", "INPUT.BOTTOMUP.PROTOCOL", "MODEL.POSEUR.LOSS_NORMALIZATION",
                "MODEL.POSEUR.INIT", "MODEL.POSEUR.SIGMA_BRANCH", "INPUT.BOTTOMUP.MIN_CENTER_AREA",
                "MODEL.LOGOCAP.MAX_KEPT", "TEST.OKS_NMS_GT_BOXES"):
        assert key in keys
    assert sum(k.startswith("MODEL.TOPDOWN.DETECTOR.") for k in keys) == 6
    assert sum(k.startswith("MODEL.TRANSPOSE.") for k in keys) == 11
