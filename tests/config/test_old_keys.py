"""Config keys renamed or removed since d2pose 0.1.0 (d2pose.config.MOVED_KEYS, RENAMED_KEYS): a YAML file
or a KEY VALUE override that still sets one fails naming the new key (yacs' "Key <old> was renamed to
<new>") instead of a bare "Non-existent config key", with d2pose's safeguards and without them; the
safeguards load RENAMED_KEYS' old names with a warning."""
import os
import subprocess
import sys

import pytest
from detectron2.config import get_cfg

import d2pose
from d2pose.config import MOVED_KEYS, RENAMED_KEYS, add_d2pose_config, get_d2pose_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RLE_COCO = os.path.join(ROOT, "projects", "RLE", "configs", "rle_R_50_256x192_coco.yaml")


def _yaml(tmp_path, key: str, value: str = "1") -> str:
    """A config over RLE's COCO config that sets the full dotted `key`."""
    parts = key.split(".")
    lines = [f'_BASE_: "{RLE_COCO}"'] + [f"{'  ' * i}{p}:" for i, p in enumerate(parts[:-1])]
    lines.append(f"{'  ' * (len(parts) - 1)}{parts[-1]}: {value}")
    path = tmp_path / "old.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _new_name(old: str) -> str:
    return MOVED_KEYS[old][0] if old in MOVED_KEYS else RENAMED_KEYS[old]


def _assert_names_new_key(error: BaseException, old: str) -> None:
    message = str(error)
    assert f"Key {old} was renamed to {_new_name(old)}" in message, message
    assert "Non-existent" not in message


def test_the_table_holds_every_key_gone_since_0_1_0():
    """The keys of d2pose 0.1.0 (and the 0.2 root DETERMINISTIC) that no config has now, each with its new
    name or "removed"; none of them is a key of today's config."""
    assert set(MOVED_KEYS) == {
        "MODEL.RLE.FLIP_FUSE", "MODEL.POSEUR.FLIP_FUSE", "MODEL.RLE.SCORE_FORM", "MODEL.POSEUR.SCORE_FORM",
        "MODEL.POSEUR.SCORE_A", "MODEL.RLE.ROI_COORDS", "MODEL.RLE.ROI_MAX_TRAIN_INSTANCES",
        "MODEL.POSEUR.ROI_MAX_TRAIN_INSTANCES", "MODEL.RLE.ROI_CONV_DIMS", "DETERMINISTIC",
        "MODEL.TOPDOWN.COORD_CHANNELS", "MODEL.RLE.AUX_HEATMAP_FEATURE", "MODEL.RLE.AUX_HEATMAP_SIGMA",
        "MODEL.RLE.AUX_HEATMAP_WEIGHT", "MODEL.RLE.INTEGRAL_CONV_DIM", "MODEL.POSEUR.COARSE_HEATMAP_FEATURE",
        "MODEL.POSEUR.EMSDA_INIT", "SOLVER.FUSED_OPTIMIZER"}
    cfg = get_d2pose_cfg()
    for old, (new, note) in MOVED_KEYS.items():
        assert not _has(cfg, old) and note and cfg.key_is_renamed(old), old
        assert new.startswith("nothing: it was removed") or _has(cfg, new), new


def _has(cfg, key: str) -> bool:
    """Whether the full dotted `key` is in `cfg`."""
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@pytest.mark.parametrize("old", ["MODEL.RLE.FLIP_FUSE", "MODEL.POSEUR.SCORE_A", "DETERMINISTIC",
                                 "MODEL.TOPDOWN.COORD_CHANNELS", "SOLVER.FUSED_OPTIMIZER"])
def test_old_key_on_the_command_line_and_in_a_yaml(old, tmp_path):
    for safeguards in (True, False):
        if not safeguards:
            d2pose.uninstall_safeguards()
        try:
            with pytest.raises(KeyError) as e:
                get_d2pose_cfg().merge_from_list([old, "1"])
            _assert_names_new_key(e.value, old)
            with pytest.raises(KeyError) as e:
                get_d2pose_cfg().merge_from_file(_yaml(tmp_path, old))
            _assert_names_new_key(e.value, old)
        finally:
            d2pose.install_safeguards()


def test_removed_keys_say_so():
    with pytest.raises(KeyError, match=r"MODEL\.RLE\.INTEGRAL_CONV_DIM was renamed to nothing: it was removed in "
                                       r"d2pose 0\.2\.0.*delete the key"):
        get_d2pose_cfg().merge_from_list(["MODEL.RLE.INTEGRAL_CONV_DIM", "64"])


def test_renamed_keys_warn_with_the_safeguards_and_fail_without(no_safeguards):
    old = "MODEL.TRANSPOSE.NHEAD"
    with pytest.raises(KeyError) as e:
        get_d2pose_cfg().merge_from_list([old, "4"])
    _assert_names_new_key(e.value, old)
    d2pose.install_safeguards()
    with pytest.warns(FutureWarning, match="MODEL.TRANSPOSE.NHEAD is now MODEL.TRANSPOSE.NUM_HEADS"):
        cfg = get_d2pose_cfg()
        cfg.merge_from_list([old, "4"])
    assert cfg.MODEL.TRANSPOSE.NUM_HEADS == 4


def test_registration_is_per_config_and_survives_clone():
    """Detectron2's global defaults are untouched; a clone (DefaultPredictor, the trainer) keeps it; adding
    the keys twice is harmless."""
    assert not get_cfg().key_is_renamed("MODEL.RLE.FLIP_FUSE")
    cfg = add_d2pose_config(get_cfg())
    assert cfg.key_is_renamed("MODEL.RLE.FLIP_FUSE") and cfg.clone().key_is_renamed("MODEL.RLE.FLIP_FUSE")
    add_d2pose_config(cfg)
    with pytest.raises(KeyError, match="TEST.KEYPOINT_FLIP_FUSE"):
        cfg.clone().merge_from_list(["MODEL.RLE.FLIP_FUSE", "max"])
    cfg.merge_from_list(["TEST.KEYPOINT_FLIP_FUSE", "mean", "MODEL.RLE.LOSS_WEIGHT", "2.0"])  # today's keys merge


def test_train_net_names_the_new_key_without_safeguards(tmp_path):
    """`train_net.py` with D2POSE_NO_SAFEGUARDS=1 and a 0.1.0 override: the error names the new key."""
    env = dict(os.environ, D2POSE_NO_SAFEGUARDS="1", OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", RLE_COCO,
                          "--eval-only", "OUTPUT_DIR", str(tmp_path), "MODEL.RLE.SCORE_FORM", "rle"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert run.returncode != 0
    assert "Key MODEL.RLE.SCORE_FORM was renamed to TEST.KEYPOINT_SCORE" in run.stderr, run.stderr[-2000:]
