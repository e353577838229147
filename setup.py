#!/usr/bin/env python
"""Build and install d2pose.

`d2pose._C` holds the compiled operators: C++ kernels always, CUDA kernels when CUDA is available
(or `FORCE_CUDA=1`, which builds them on a machine without a GPU). `NVCC_FLAGS` adds nvcc flags and
`TORCH_CUDA_ARCH_LIST` chooses the GPU architectures, as in Detectron2.
"""
import glob
import os
import shutil
import sysconfig

from setuptools import find_packages, setup

import torch
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _version() -> str:
    with open(os.path.join(ROOT, "d2pose", "__init__.py")) as f:
        for line in f:
            if line.startswith("__version__"):
                return line.split("=")[1].strip().strip("\"'")
    raise RuntimeError("d2pose/__init__.py has no __version__")


def _cuda_home():
    """The CUDA toolkit folder whose include/ holds cuda_runtime.h.

    torch guesses CUDA_HOME from where `nvcc` is found, which may be a wrapper outside the toolkit;
    follow the wrapper to the real toolkit when the guess has no headers.
    """
    candidates = [os.environ.get("CUDA_HOME"), cpp_extension.CUDA_HOME]
    nvcc = cpp_extension._find_cuda_home() if hasattr(cpp_extension, "_find_cuda_home") else None
    candidates.append(nvcc)
    candidates += sorted(glob.glob("/usr/local/cuda*"), reverse=True)
    for home in candidates:
        if home and os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
            return os.path.realpath(home)
    return None


def _extra_cuda_includes():
    """Header folders of the pip-installed CUDA libraries (e.g. cusparse.h under nvidia/cu13)."""
    site = sysconfig.get_paths()["purelib"]
    found = []
    for pattern in ("nvidia/cu*/include", "nvidia/*/include"):
        found += [p for p in glob.glob(os.path.join(site, pattern)) if os.path.isdir(p)]
    return sorted(set(found))


def get_extensions():
    csrc = os.path.join("d2pose", "layers", "csrc")
    sources = sorted(glob.glob(os.path.join(csrc, "*.cpp")) + glob.glob(os.path.join(csrc, "*", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join(csrc, "*", "*.cu")))

    extension = cpp_extension.CppExtension
    define_macros = []
    include_dirs = [os.path.join(ROOT, csrc)]
    extra_compile_args = {"cxx": ["-O3", "-fopenmp"]}
    extra_link_args = ["-fopenmp"]

    force_cuda = os.environ.get("FORCE_CUDA", "0") == "1"
    cuda_home = _cuda_home()
    if (torch.cuda.is_available() and cuda_home is not None) or force_cuda:
        if cuda_home is None:
            raise RuntimeError("FORCE_CUDA=1 but no CUDA toolkit (include/cuda_runtime.h) was found; set CUDA_HOME")
        os.environ["CUDA_HOME"] = cuda_home
        cpp_extension.CUDA_HOME = cuda_home
        extension = cpp_extension.CUDAExtension
        sources += cuda_sources
        define_macros += [("WITH_CUDA", None)]
        include_dirs += _extra_cuda_includes()
        nvcc_flags = os.environ.get("NVCC_FLAGS", "").split()
        extra_compile_args["nvcc"] = [
            "-O3",
            "-DCUDA_HAS_FP16=1",
            "-D__CUDA_NO_HALF_OPERATORS__",
            "-D__CUDA_NO_HALF_CONVERSIONS__",
            "-D__CUDA_NO_HALF2_OPERATORS__",
        ] + nvcc_flags

    return [
        extension(
            "d2pose._C",
            sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        )
    ]


#: the method packages: projects/<Method>/<package>/, installed as top-level packages beside d2pose
#: (imported by d2pose/__init__.py, the core's one registration point)
PROJECTS = {"d2pose_rle": "projects/RLE/d2pose_rle", "d2pose_poseur": "projects/Poseur/d2pose_poseur",
            "d2pose_transpose": "projects/TransPose/d2pose_transpose", "d2pose_logocap": "projects/LOGOCAP/d2pose_logocap"}


def _packages():
    core = find_packages(include=("d2pose", "d2pose.*"))
    return core + sorted(PROJECTS)


def _mirror(source: str, destination: str) -> None:
    """destination becomes a link to source (a copy where links are not allowed)."""
    if os.path.islink(destination):
        os.unlink(destination)
    elif os.path.isdir(destination):
        shutil.rmtree(destination)
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    try:
        os.symlink(os.path.relpath(source, os.path.dirname(destination)), destination)
    except OSError:
        shutil.copytree(source, destination)


def _model_zoo_configs():
    """The configs as package data of d2pose.model_zoo (what `d2pose.model_zoo.get_config_file` reads),
    in the repository's layout so that relative `_BASE_`s resolve the same: d2pose/model_zoo/configs
    links to configs/ and d2pose/model_zoo/projects/<Method>/configs to projects/<Method>/configs
    (copies where links are not allowed), as Detectron2's setup.py does for its model zoo."""
    package = os.path.join(ROOT, "d2pose", "model_zoo")
    methods = glob.glob(os.path.join(ROOT, "projects", "*", "configs"))
    folders = ["configs"] + sorted(os.path.relpath(f, ROOT) for f in methods)
    if os.path.isdir(os.path.join(ROOT, "configs")):
        if os.path.isdir(os.path.join(package, "projects")):  # the method folders of an earlier build
            shutil.rmtree(os.path.join(package, "projects"))
        for folder in folders:
            _mirror(os.path.join(ROOT, folder), os.path.join(package, folder))
    return [os.path.relpath(p, ROOT) for folder in folders
            for p in glob.glob(os.path.join(ROOT, folder, "**", "*.yaml"), recursive=True)]


setup(
    name="d2pose",
    version=_version(),
    author="d2pose developers",
    license="Apache-2.0",
    license_files=["LICENSE"],
    classifiers=["License :: OSI Approved :: Apache Software License", "Programming Language :: Python :: 3"],
    description="Human pose estimation methods (RLE, Poseur, TransPose, LOGO-CAP) for Detectron2",
    packages=_packages(),
    package_dir={name: path for name, path in PROJECTS.items()},
    package_data={"d2pose.model_zoo": _model_zoo_configs() + ["trained/*.json", "trained/*.pth"]},
    python_requires=">=3.9",
    ext_modules=get_extensions(),
    cmdclass={"build_ext": cpp_extension.BuildExtension},
    zip_safe=False,
)
