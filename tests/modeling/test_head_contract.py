"""Every registered top-down head keeps the `TopDownHead` contract (d2pose.modeling.heads.base)."""
import inspect

import pytest

import d2pose  # noqa: F401  (registers every method's heads)
from d2pose.modeling.heads import TOPDOWN_HEAD_REGISTRY, RegressionTopDownHead, TopDownHead

HEADS = sorted(name for name, _ in TOPDOWN_HEAD_REGISTRY)


def test_every_method_registers_a_head():
    assert {"RLERegressionHead", "RLEIntegralHead", "PoseurHead", "TransPoseHead"} <= set(HEADS)


@pytest.mark.parametrize("name", HEADS)
def test_registered_head_is_a_topdown_head(name):
    head = TOPDOWN_HEAD_REGISTRY.get(name)
    assert issubclass(head, TopDownHead), f"{name} does not subclass TopDownHead"
    for method in ("forward", "losses", "predict", "flip_fuse"):
        assert getattr(head, method) is not getattr(TopDownHead, method), f"{name} leaves {method} abstract"
        params = list(inspect.signature(getattr(head, method)).parameters)
        base = list(inspect.signature(getattr(TopDownHead, method)).parameters)
        assert len(params) == len(base), f"{name}.{method}{params} breaks the contract {base}"


def test_regression_heads_share_the_flip_fusion():
    regression = [n for n in HEADS if issubclass(TOPDOWN_HEAD_REGISTRY.get(n), RegressionTopDownHead)]
    assert {"RLERegressionHead", "RLEIntegralHead", "PoseurHead"} <= set(regression)
    assert TOPDOWN_HEAD_REGISTRY.get("RLERegressionHead").flip_fuse is RegressionTopDownHead.flip_fuse
