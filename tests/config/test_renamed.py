"""Renamed config keys (d2pose.config.renamed): old names load with a warning naming old and new key and
give the config the new names give; unknown keys still fail."""
import os

import pytest
from detectron2.config import get_cfg

import d2pose  # noqa: F401  (the merge safeguards and TransPose's renames)
from d2pose.config import RENAMED_KEYS, get_d2pose_cfg, rename_keys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = os.path.join(ROOT, "projects", "TransPose", "configs", "synthetic_transpose_r.yaml")
# a base that sets none of the renamed keys
TOPDOWN_BASE = os.path.join(ROOT, "projects", "TransPose", "configs", "Base-TransPose-TopDown.yaml")
OLD_VALUES = {"D_MODEL": 64, "NHEAD": 2, "NUM_LAYERS": 2, "DIM_FEEDFORWARD": 96}
NEW_VALUES = {"EMBED_DIM": 64, "NUM_HEADS": 2, "NUM_ENCODER_LAYERS": 2, "FFN_DIM": 96}


def _yaml(tmp_path, name, values, base=BASE):
    lines = [f'_BASE_: "{base}"', "MODEL:", "  TRANSPOSE:"] + [f"    {k}: {v}" for k, v in values.items()]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _from_file(path):
    cfg = get_d2pose_cfg()
    cfg.merge_from_file(path)
    return cfg


def test_transpose_renames_are_registered():
    assert {k: v for k, v in RENAMED_KEYS.items() if k.startswith("MODEL.TRANSPOSE.")} == {
        "MODEL.TRANSPOSE.D_MODEL": "MODEL.TRANSPOSE.EMBED_DIM", "MODEL.TRANSPOSE.NHEAD": "MODEL.TRANSPOSE.NUM_HEADS",
        "MODEL.TRANSPOSE.DIM_FEEDFORWARD": "MODEL.TRANSPOSE.FFN_DIM",
        "MODEL.TRANSPOSE.NUM_LAYERS": "MODEL.TRANSPOSE.NUM_ENCODER_LAYERS"}


def test_old_names_in_a_yaml(tmp_path):
    """A file with the old names over a base with the new ones: the file's values, a warning per key."""
    new = _from_file(_yaml(tmp_path, "new.yaml", NEW_VALUES))
    with pytest.warns(FutureWarning) as record:
        old = _from_file(_yaml(tmp_path, "old.yaml", OLD_VALUES))
    assert old == new and new.MODEL.TRANSPOSE.EMBED_DIM == 64 and new.MODEL.TRANSPOSE.NUM_ENCODER_LAYERS == 2
    messages = " ".join(str(w.message) for w in record)
    for old_key, new_key in RENAMED_KEYS.items():
        if old_key.startswith("MODEL.TRANSPOSE."):
            assert f"{old_key} is now {new_key}" in messages


def test_the_later_of_both_names_wins(tmp_path):
    """A derived file's key overrides its base's, whichever of the two names each uses."""
    old_base = _yaml(tmp_path, "old_base.yaml", {"D_MODEL": 32}, base=TOPDOWN_BASE)
    with pytest.warns(FutureWarning, match="set both names; the later-written MODEL.TRANSPOSE.EMBED_DIM wins"):
        assert _from_file(_yaml(tmp_path, "a.yaml", {"EMBED_DIM": 48}, base=old_base)).MODEL.TRANSPOSE.EMBED_DIM == 48
    new_base = _yaml(tmp_path, "new_base.yaml", {"EMBED_DIM": 32})
    with pytest.warns(FutureWarning, match="set both names; the later-written MODEL.TRANSPOSE.D_MODEL wins"):
        assert _from_file(_yaml(tmp_path, "b.yaml", {"D_MODEL": 48}, base=new_base)).MODEL.TRANSPOSE.EMBED_DIM == 48


def test_old_names_in_a_key_value_list():
    opts = [item for k, v in OLD_VALUES.items() for item in (f"MODEL.TRANSPOSE.{k}", str(v))]
    given = list(opts)
    new = get_d2pose_cfg()
    new.merge_from_list([item for k, v in NEW_VALUES.items() for item in (f"MODEL.TRANSPOSE.{k}", str(v))])
    old = get_d2pose_cfg()
    with pytest.warns(FutureWarning) as record:
        old.merge_from_list(opts)
    assert old == new and opts == given  # the caller's list is left as it was
    assert len(record) == 4 and "MODEL.TRANSPOSE.NHEAD is now MODEL.TRANSPOSE.NUM_HEADS" in str(record[1].message)


def test_unknown_keys_still_fail(tmp_path):
    with pytest.raises(AssertionError, match="NO_SUCH_KEY"):
        get_d2pose_cfg().merge_from_list(["MODEL.TRANSPOSE.NO_SUCH_KEY", "1"])
    with pytest.warns(FutureWarning), pytest.raises(KeyError, match="NO_SUCH_KEY"):
        _from_file(_yaml(tmp_path, "bad.yaml", {"NO_SUCH_KEY": 1, "D_MODEL": 64}))
    with pytest.raises(AssertionError):  # a config without d2pose's keys renames nothing
        get_cfg().merge_from_list(["MODEL.TRANSPOSE.D_MODEL", "64"])


def test_rename_keys_in_place():
    nested = {"MODEL": {"TRANSPOSE": {"NHEAD": 4, "DROPOUT": 0.0}}}
    flat = ["MODEL.TRANSPOSE.NUM_LAYERS", "5", "MODEL.TRANSPOSE.DROPOUT", "0.2"]
    with pytest.warns(FutureWarning):
        assert rename_keys(nested) == [("MODEL.TRANSPOSE.NHEAD", "MODEL.TRANSPOSE.NUM_HEADS")]
        assert rename_keys(flat) == [("MODEL.TRANSPOSE.NUM_LAYERS", "MODEL.TRANSPOSE.NUM_ENCODER_LAYERS")]
    assert nested == {"MODEL": {"TRANSPOSE": {"NUM_HEADS": 4, "DROPOUT": 0.0}}}
    assert flat == ["MODEL.TRANSPOSE.NUM_ENCODER_LAYERS", "5", "MODEL.TRANSPOSE.DROPOUT", "0.2"]
