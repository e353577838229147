"""A d2pose config merged into a plain Detectron2 config: the error says what to call."""
import os

import pytest
from detectron2.config import get_cfg

import d2pose  # installs the safeguards, the hint among them
from d2pose.config import add_d2pose_config, d2pose_keys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_missing_add_d2pose_config_is_named():
    cfg = get_cfg()
    with pytest.raises(KeyError, match=r"MODEL\.TOPDOWN.*add_d2pose_config"):
        cfg.merge_from_file(os.path.join(ROOT, "projects/RLE/configs/synthetic_rle_topdown.yaml"))
    with pytest.raises(AssertionError, match=r"MODEL\.LOGOCAP\.TOPK_CENTERS.*add_d2pose_config"):
        get_cfg().merge_from_list(["MODEL.LOGOCAP.TOPK_CENTERS", "5"])


def test_other_key_errors_are_unchanged():
    cfg = add_d2pose_config(get_cfg())
    with pytest.raises(AssertionError) as e:
        cfg.merge_from_list(["MODEL.TOPDOWN.NO_SUCH_KEY", "1"])
    assert "add_d2pose_config" not in str(e.value)
    with pytest.raises(AssertionError) as e:
        get_cfg().merge_from_list(["MODEL.NOT_A_KEY_ANYWHERE", "1"])
    assert "add_d2pose_config" not in str(e.value)
    assert "MODEL.TOPDOWN" in d2pose_keys() and "MODEL.ROI_HEADS" not in d2pose_keys()
    cfg.merge_from_file(os.path.join(ROOT, "projects/RLE/configs/synthetic_rle_topdown.yaml"))  # with the keys: fine


def test_the_hint_is_a_safeguard_that_uninstalls():
    """Detectron2's CfgNode as shipped (safeguards off): yacs' own message, no hint."""
    installed = d2pose.safeguards.installed()
    d2pose.uninstall_safeguards()
    try:
        with pytest.raises(AssertionError) as e:
            get_cfg().merge_from_list(["MODEL.LOGOCAP.TOPK_CENTERS", "5"])
        assert "add_d2pose_config" not in str(e.value)
    finally:
        if installed:
            d2pose.install_safeguards()
    with pytest.raises(AssertionError, match="add_d2pose_config"):
        get_cfg().merge_from_list(["MODEL.LOGOCAP.TOPK_CENTERS", "5"])
