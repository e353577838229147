from .build import TOPDOWN_HEAD_REGISTRY, build_topdown_head  # noqa: F401
from .regression import RLEIntegralHead, RLERegressionHead  # noqa: F401
from .poseur import PoseurHead  # noqa: F401
