"""Package-level tests: registration on import, config keys, the launcher, the fallback without
the compiled op, the torch version d2pose._C records, and (slow) the FORCE_CUDA build and a
`pip install -e .` with pip's build isolation into a fresh venv."""
import ast
import glob
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest
from detectron2.config import get_cfg

import d2pose
from d2pose.config import add_d2pose_config, get_d2pose_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_ok(code: str) -> None:
    """Runs `code` in a fresh interpreter (so that module state is its own); it must print "ok"."""
    out = subprocess.run([sys.executable, "-c", code + "print('ok')\n"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_add_config_is_local_and_idempotent(tmp_path):
    cfg = add_d2pose_config(get_cfg())
    assert cfg.MODEL.MS_DEFORM_ATTN.BACKEND == "auto"
    add_d2pose_config(cfg)  # harmless twice
    assert "MS_DEFORM_ATTN" not in get_cfg().MODEL  # detectron2's global defaults untouched
    yaml = tmp_path / "c.yaml"
    yaml.write_text("MODEL:\n  MS_DEFORM_ATTN:\n    BACKEND: torch\n")
    cfg.merge_from_file(str(yaml))
    assert cfg.MODEL.MS_DEFORM_ATTN.BACKEND == "torch"
    assert get_d2pose_cfg().MODEL.MS_DEFORM_ATTN.BACKEND == "auto"


def test_frozen_config_stays_frozen():
    cfg = get_cfg()
    cfg.freeze()
    add_d2pose_config(cfg)
    assert cfg.is_frozen() and cfg.MODEL.MS_DEFORM_ATTN.BACKEND == "auto"


def test_version_and_compiled_op():
    assert d2pose.__version__.count(".") == 2
    assert "cpp" in d2pose.layers.compiled_backends(), "d2pose._C should be built by `make setup`"


def test_compiled_op_records_the_running_torch():
    import torch
    from d2pose import _C
    from d2pose.layers.ms_deform_attn import check_build, torch_release

    assert _C.torch_version() == torch_release(torch.__version__)
    assert check_build(_C) is None


@pytest.mark.parametrize("version,release", [("2.14.1+cu130", "2.14.1"), ("2.6.0.dev20241001+cpu", "2.6.0"),
                                             ("2.4.0a0+3bcc3cd", "2.4.0"), ("2.9.1", "2.9.1")])
def test_torch_release_is_what_the_headers_record(version, release):
    from d2pose.layers.ms_deform_attn import torch_release

    assert torch_release(version) == release


def test_compiled_op_built_for_another_torch_is_refused_with_a_rebuild_hint():
    import types

    from d2pose.layers.ms_deform_attn import check_build

    other = types.SimpleNamespace(torch_version=lambda: "1.13.1")
    msg = check_build(other)
    assert "compiled against torch 1.13.1" in msg and "pip install -e ." in msg
    assert "older d2pose" in check_build(types.SimpleNamespace())


def test_mismatched_compiled_op_falls_back_naming_both_versions():
    code = (
        "import warnings, torch\n"
        "import d2pose._C as c\n"
        "c.torch_version = lambda: '0.0.1'\n"  # as if built against another torch
        "import sys\n"
        "from d2pose.layers import compiled_backends\n"
        "assert compiled_backends() == ()\n"
        "mod = sys.modules['d2pose.layers.ms_deform_attn']\n"
        "assert 'compiled against torch 0.0.1' in mod._C_error and 'pip install -e .' in mod._C_error\n"
    )
    _python_ok(code)


@pytest.mark.slow
def test_isolated_editable_install_builds_against_the_installed_torch(tmp_path):
    """`pip install -e .` with pip's default build isolation, in a new venv that already has torch
    (the test venv's, reached through a .pth file), compiles d2pose._C against that torch rather than
    one pip would fetch into the isolated build environment. About a minute (the C++ build)."""
    import sysconfig

    import torch

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    vpy = str(venv / "bin" / "python")
    site = subprocess.run([vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, "outer-torch.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    src = tmp_path / "src"
    anywhere = shutil.ignore_patterns("*.so", "__pycache__", "*.egg-info")

    def ignore(folder, names):  # the repository's own products and data, and build products anywhere
        top = {".venv", ".git", "build", "output", "datasets"} if os.path.samefile(folder, ROOT) else set()
        return set(anywhere(folder, names)) | (top & set(names))

    shutil.copytree(ROOT, src, ignore=ignore)
    out = subprocess.run([vpy, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps", "-e", str(src)],
                         capture_output=True, text=True, timeout=1500, env=dict(os.environ, MAX_JOBS="2"))
    assert out.returncode == 0, out.stderr[-3000:]
    built = list((src / "d2pose").glob("_C*.so"))
    assert len(built) == 1, built
    check = ("import importlib.util, torch\n"
             f"spec = importlib.util.spec_from_file_location('d2pose._C', {str(built[0])!r})\n"
             "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
             "print(m.torch_version())\n")
    out = subprocess.run([vpy, "-c", check], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == torch.__version__.split("+")[0]


def test_train_net_help():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "train_net.py"), "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    for flag in ("--config-file", "--num-gpus", "--eval-only", "--resume", "--num-machines"):
        assert flag in out.stdout


def test_import_without_compiled_op_falls_back():
    code = (
        "import sys, warnings, torch\n"
        "sys.modules['d2pose._C'] = None\n"  # makes `from d2pose import _C` raise ImportError
        "import d2pose\n"
        "from d2pose.layers import MSDeformAttn, compiled_backends\n"
        "assert compiled_backends() == ()\n"
        "m = MSDeformAttn(32, 4, 1, 2)\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    out = m(torch.randn(1, 3, 32), torch.rand(1, 3, 2), torch.randn(1, 12, 32), torch.tensor([[3, 4]]), torch.tensor([0]))\n"
        "assert out.shape == (1, 3, 32)\n"
        "assert any('falls back' in str(x.message) for x in w), [str(x.message) for x in w]\n"
    )
    _python_ok(code)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_force_cuda_build_compiles(tmp_path):
    """The CUDA kernels compile with FORCE_CUDA=1 and register CPU and CUDA dispatch keys."""
    out = subprocess.run(["bash", os.path.join(ROOT, "tools", "build_cuda_check.sh"), str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=1500)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    assert "CUDA build OK" in out.stdout


OUTSIDE_SCRIPT = """
import numpy as np
import d2pose, d2pose_rle, d2pose_poseur, d2pose_transpose
from d2pose import model_zoo
from d2pose.config import add_d2pose_config
from detectron2.config import get_cfg
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

assert "/projects/RLE/configs/" in model_zoo.get_config_file("RLE/synthetic_rle_topdown.yaml")
image = (np.random.RandomState(0).rand(160, 120, 3) * 255).astype(np.uint8)
for name in ("RLE/synthetic_rle_topdown.yaml", "Poseur/synthetic_poseur_topdown.yaml", "Poseur/synthetic_poseur_rcnn.yaml",
             "TransPose/synthetic_transpose_r.yaml"):
    cfg = get_cfg()
    add_d2pose_config(cfg)
    cfg.merge_from_file(model_zoo.get_config_file(name))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.INPUT.MIN_SIZE_TEST = 160
    build_model(cfg)
    out = DefaultPredictor(cfg)(image)["instances"]
    assert out.pred_keypoints.shape[1:] == (17, 3), (name, out.pred_keypoints.shape)
    print(name, len(out))
print("ok")
"""


def test_a_script_outside_the_repository_uses_every_method(tmp_path):
    """After `pip install -e .`, a script in another folder (no sys.path edits, not the repo as cwd)
    imports d2pose, finds the shipped configs through d2pose.model_zoo and runs Detectron2's own
    DefaultPredictor for an RLE, a Poseur top-down and a Poseur Keypoint R-CNN config."""
    script = tmp_path / "predict.py"
    script.write_text(OUTSIDE_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), (out.stdout[-2000:], out.stderr[-3000:])


def test_model_zoo_lists_and_refuses():
    from d2pose import model_zoo

    names = model_zoo.list_configs()
    assert "RLE/synthetic_rle_topdown.yaml" in names and "Poseur/poseur_R_50_256x192_coco.yaml" in names
    assert len(names) == len(set(names))  # the redirects in configs/<Method>/ are not listed again
    path = model_zoo.get_config_file("Poseur/poseur_R_50_256x192_coco.yaml")
    assert os.path.samefile(path, os.path.join(ROOT, "projects", "Poseur", "configs", "poseur_R_50_256x192_coco.yaml"))
    with pytest.raises(FileNotFoundError, match="synthetic_rle_topdown.yaml"):
        model_zoo.get_config_file("RLE/synthetic_rle.yaml")


def _setup_functions(root: str) -> dict:
    """setup.py's package-data functions (`_mirror`, `_model_zoo_configs`) with its ROOT set to `root`
    (setup.py itself calls setup() when run, so its functions are taken from its source)."""
    with open(os.path.join(ROOT, "setup.py")) as f:
        tree = ast.parse(f.read())
    wanted = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("_mirror", "_model_zoo_configs")]
    namespace = {"os": os, "glob": glob, "shutil": shutil, "ROOT": root}
    exec(compile(ast.Module(wanted, type_ignores=[]), "setup.py", "exec"), namespace)
    return namespace


def test_installed_model_zoo_resolves_every_config(tmp_path):
    """A non-editable install: the package data setup.py declares for d2pose.model_zoo, copied as plain
    files into a package outside the repository, names every config once and loads each as the
    repository does (the configs' relative `_BASE_`s resolve inside the package)."""
    from d2pose import model_zoo

    source = tmp_path / "src"
    methods = glob.glob(os.path.join(ROOT, "projects", "*", "configs"))
    for folder in ["configs"] + [os.path.relpath(f, ROOT) for f in methods]:
        shutil.copytree(os.path.join(ROOT, folder), source / folder)
    shutil.copytree(os.path.join(ROOT, "d2pose", "model_zoo"), source / "d2pose" / "model_zoo", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "configs", "projects"))
    package_data = _setup_functions(str(source))["_model_zoo_configs"]()
    installed = tmp_path / "site" / "model_zoo"
    for name in ["config_files.py"] + package_data:  # what build_py copies: files, links followed
        os.makedirs(os.path.dirname(installed / name), exist_ok=True)
        shutil.copyfile(source / "d2pose" / "model_zoo" / name, installed / name)
    spec = importlib.util.spec_from_file_location("installed_model_zoo", str(installed / "config_files.py"))
    zoo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo)
    names = zoo.list_configs()
    assert names == model_zoo.list_configs()
    for name in names:
        path = zoo.get_config_file(name)
        assert path.startswith(str(installed)), path
        via_package, via_repository = get_d2pose_cfg(), get_d2pose_cfg()
        via_package.merge_from_file(path)
        via_repository.merge_from_file(model_zoo.get_config_file(name))
        assert via_package.dump() == via_repository.dump(), name


def test_license_and_metadata():
    from importlib.metadata import metadata

    with open(os.path.join(ROOT, "LICENSE")) as f:
        assert "Apache License" in f.read(200)
    meta = metadata("d2pose")
    assert "Apache" in (meta.get("License") or "") + " ".join(meta.get_all("Classifier") or [])
