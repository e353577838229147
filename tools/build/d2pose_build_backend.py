"""PEP 517 build backend of d2pose: setuptools' own, compiling `d2pose._C` against the torch that is
installed in the environment d2pose is being installed into.

A C++/CUDA extension must be built against the torch it will run with. pip's default build isolation
builds in a fresh environment holding only the build requirements, so a `torch` build requirement
would pull whatever torch release PyPI serves that day (several GB), not the user's, and the
extension would then fail to load, or crash, beside the user's torch. Pinning the requirement to the
user's version would still download and unpack a second copy of torch for every build. Instead this
backend finds the target environment's torch (its site-packages, which pip's isolation hides but
does not change) and puts that directory at the end of `sys.path` for the build, after the isolated
build requirements, so setuptools and wheel still come from the build environment. Without torch
in the target environment it stops with instructions. `--no-build-isolation` works as well.

setup.py records nothing itself: `d2pose._C.torch_version()` holds the release of the headers it was
compiled with, and d2pose's loader compares it with the running torch.
"""
import importlib.util
import os
import site
import sys
import sysconfig

from setuptools import build_meta as _setuptools

__all__ = [
    "get_requires_for_build_wheel", "get_requires_for_build_editable", "get_requires_for_build_sdist",
    "prepare_metadata_for_build_wheel", "prepare_metadata_for_build_editable",
    "build_wheel", "build_editable", "build_sdist",
]


def _target_site_dirs():
    """site-packages of the interpreter pip runs the build with (the environment being installed into)."""
    paths = sysconfig.get_paths()
    return [p for p in dict.fromkeys([paths["purelib"], paths["platlib"]]) if os.path.isdir(p)]


def _use_target_torch() -> None:
    if importlib.util.find_spec("torch") is not None:
        return  # --no-build-isolation, or torch among the build environment's packages
    before = list(sys.path)
    known = set(sys.path)
    for directory in _target_site_dirs():
        site.addsitedir(directory, known)  # processes .pth files (paths added by other installs) too
    # the target environment's directories go last: the build requirements keep precedence
    sys.path[:] = before + [p for p in sys.path if p not in before]
    importlib.invalidate_caches()
    if importlib.util.find_spec("torch") is None:
        sys.path[:] = before
        raise RuntimeError(
            "d2pose compiles its operators (d2pose._C) against the installed torch, but no torch was found in "
            f"{_target_site_dirs()}. Install torch first (e.g. `pip install torch torchvision`), then "
            "`pip install -e .` again.")


def get_requires_for_build_wheel(config_settings=None):
    _use_target_torch()
    return _setuptools.get_requires_for_build_wheel(config_settings)


def get_requires_for_build_editable(config_settings=None):
    _use_target_torch()
    return _setuptools.get_requires_for_build_editable(config_settings)


def get_requires_for_build_sdist(config_settings=None):
    _use_target_torch()
    return _setuptools.get_requires_for_build_sdist(config_settings)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    _use_target_torch()
    return _setuptools.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def prepare_metadata_for_build_editable(metadata_directory, config_settings=None):
    _use_target_torch()
    return _setuptools.prepare_metadata_for_build_editable(metadata_directory, config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _use_target_torch()
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _use_target_torch()
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory, config_settings=None):
    _use_target_torch()
    return _setuptools.build_sdist(sdist_directory, config_settings)
