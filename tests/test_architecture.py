"""The layering rules of STYLE.md (rule 12), checked on the source text with `ast` (nothing is imported):
no private name imported from another module of this repository, the core (`d2pose/`) never imports
`d2pose.projects` or a method package (only `d2pose/__init__.py` does), and no import cycle inside
`d2pose/` (imports inside functions count: deferring an import does not remove the dependency).

Each checker is a plain function of a folder, so the tests below also run it on small bad trees
written into `tmp_path`, showing that it fails where it should.
"""
import ast
import os
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = ("d2pose", "projects", "tools", "tests")  # folders whose imports are checked
COMPILED = {"_C"}  # a package's compiled extension: a submodule, even before it is built
ALLOWED_PRIVATE = COMPILED


# ---------------------------------------------------------------------------------------------------
# reading imports


def python_files(root: str, folder: str) -> Iterator[str]:
    """Every `.py` file under root/folder (paths relative to root), in a fixed order."""
    for path, dirs, names in os.walk(os.path.join(root, folder)):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
        for name in sorted(names):
            if name.endswith(".py"):
                yield os.path.relpath(os.path.join(path, name), root)


def module_name(rel_path: str, source_root: str = "") -> str:
    """Dotted module name of a file relative to `source_root` (a package's `__init__.py` names the package)."""
    rel = os.path.relpath(rel_path, source_root) if source_root else rel_path
    parts = rel[: -len(".py")].split(os.sep)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def read_imports(path: str) -> List[ast.stmt]:
    """Every `import` / `from ... import` statement of a file, at any depth (functions included)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    return [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def absolute_from(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a `from X import ...` in `module` reads from (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__")) and name not in ALLOWED_PRIVATE


# ---------------------------------------------------------------------------------------------------
# (a) private names across modules


def repo_top_names(root: str) -> Set[str]:
    """Top-level import names that belong to this repository: d2pose, tests, tools and every method package."""
    names = {"d2pose", "tests", "tools", "train_net"}
    projects = os.path.join(root, "projects")
    if os.path.isdir(projects):
        for method in os.listdir(projects):
            folder = os.path.join(projects, method)
            if os.path.isdir(folder):
                names |= {d for d in os.listdir(folder) if d.startswith("d2pose_")}
    return names


def private_imports(root: str, folders: Sequence[str] = SCANNED) -> List[str]:
    """`from <repo module> import _name` and `import <repo module>._name`, one line per offence."""
    ours = repo_top_names(root)
    found = []
    for folder in folders:
        for rel in python_files(root, folder):
            module = module_name(rel)
            is_package = rel.endswith("__init__.py")
            for node in read_imports(os.path.join(root, rel)):
                if isinstance(node, ast.ImportFrom):
                    source = absolute_from(node, module, is_package)
                    if not node.level and source.split(".")[0] not in ours:
                        continue
                    names = [a.name for a in node.names if is_private(a.name)]
                    found += [f"{rel}:{node.lineno}: from {'.' * node.level}{node.module or ''} import {n}"
                              for n in names]
                else:
                    for alias in node.names:
                        parts = alias.name.split(".")
                        if parts[0] in ours and any(is_private(p) for p in parts[1:]):
                            found.append(f"{rel}:{node.lineno}: import {alias.name}")
    return found


# ---------------------------------------------------------------------------------------------------
# (b) the core never imports a method package


def core_imports_of_methods(root: str, core: str = "d2pose") -> List[str]:
    """Imports of `<core>.projects` or of a `d2pose_*` package by a core module other than `<core>/__init__.py`."""
    found = []
    forbidden = f"{core}.projects"
    for rel in python_files(root, core):
        if rel == os.path.join(core, "__init__.py"):
            continue
        module = module_name(rel)
        is_package = rel.endswith("__init__.py")
        for node in read_imports(os.path.join(root, rel)):
            targets = []
            if isinstance(node, ast.ImportFrom):
                source = absolute_from(node, module, is_package)
                targets = [source] + [f"{source}.{a.name}" for a in node.names]
            else:
                targets = [a.name for a in node.names]
            bad = [t for t in targets if t == forbidden or t.startswith(forbidden + ".") or t.startswith("d2pose_")]
            if bad:
                found.append(f"{rel}:{node.lineno}: imports {bad[0]}")
    return found


# ---------------------------------------------------------------------------------------------------
# (c) no import cycle inside the core


def import_graph(root: str, package: str = "d2pose") -> Dict[str, Set[str]]:
    """{module: modules of `package` it imports}: `import a.b` -> a.b; `from a import b` -> a.b when that
    is a module (a compiled `_C` included), else a (a package's `__init__`); relative imports resolved;
    function-level imports count."""
    modules = {module_name(rel): rel for rel in python_files(root, package)}
    graph = {m: set() for m in modules}
    for module, rel in modules.items():
        is_package = rel.endswith("__init__.py")
        for node in read_imports(os.path.join(root, rel)):
            if isinstance(node, ast.ImportFrom):
                source = absolute_from(node, module, is_package)
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules or a.name in COMPILED else source
                           for a in node.names]
            else:
                targets = [a.name for a in node.names]
            graph[module] |= {t for t in targets if t in modules}
    return graph


def _strongly_connected(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Tarjan's strongly connected components (iterative), each as a sorted list."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    components = []
    for start in sorted(graph):
        if start in index:
            continue
        work: List[Tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def _cycle_through(graph: Dict[str, Set[str]], members: Set[str]) -> List[str]:
    """One cycle inside a strongly connected component, as a path that returns to its start."""
    start = min(members)
    parents: Dict[str, Optional[str]] = {start: None}
    frontier = [start]
    while frontier:  # breadth-first, so the printed cycle is a shortest one through `start`
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    return list(reversed(path)) + [start]
                if child not in parents:
                    parents[child] = node
                    following.append(child)
        frontier = following
    return [start]


def import_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """One printed cycle per strongly connected component with a cycle (a self-import included)."""
    cycles = []
    for component in _strongly_connected(graph):
        if len(component) > 1 or component[0] in graph[component[0]]:
            cycles.append(_cycle_through(graph, set(component)))
    return cycles


# ---------------------------------------------------------------------------------------------------
# the repository


def test_no_private_imports_across_modules():
    found = private_imports(ROOT)
    assert not found, "private names imported from another module (make them public):\n" + "\n".join(found)


def test_core_never_imports_a_method_package():
    found = core_imports_of_methods(ROOT)
    assert not found, "the core imports a method package (only d2pose/__init__.py may):\n" + "\n".join(found)


def test_core_has_no_import_cycle():
    cycles = import_cycles(import_graph(ROOT))
    assert not cycles, "import cycles in d2pose/:\n" + "\n".join(" -> ".join(c) for c in cycles)


# ---------------------------------------------------------------------------------------------------
# the checkers fail on bad trees


def _write(root, files: Dict[str, str]) -> str:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(root)


def test_private_imports_are_found(tmp_path):
    root = _write(tmp_path, {
        "d2pose/__init__.py": "from . import _C\n",
        "d2pose/a.py": "def _x(): pass\nfrom .b import __all__\n",
        "d2pose/b.py": "from .a import _x\n",
        "projects/M/d2pose_m/__init__.py": "def f():\n    from d2pose.a import _x, y\n",
        "tools/t.py": "import d2pose_m._hidden\nfrom os import _exit\n",
        "tests/test_t.py": "from tests.helpers import _helper as helper\n",
    })
    found = private_imports(root)
    assert found == ["d2pose/b.py:1: from .a import _x", "projects/M/d2pose_m/__init__.py:2: from d2pose.a import _x",
                     "tools/t.py:1: import d2pose_m._hidden", "tests/test_t.py:1: from tests.helpers import _helper"]


def test_core_imports_of_methods_are_found(tmp_path):
    root = _write(tmp_path, {
        "d2pose/__init__.py": "from . import projects\nimport d2pose_m\n",
        "d2pose/projects.py": "import d2pose_m\n",
        "d2pose/config/defaults.py": "def add(cfg):\n    from ..projects import add_project_configs\n",
        "d2pose/config/__init__.py": "from .. import projects\n",
        "d2pose/ok.py": "import d2pose.config\n",
    })
    found = sorted(core_imports_of_methods(root))
    assert found == ["d2pose/config/__init__.py:1: imports d2pose.projects",
                     "d2pose/config/defaults.py:2: imports d2pose.projects",
                     "d2pose/projects.py:1: imports d2pose_m"]


def test_import_graph_resolves_submodules_and_packages(tmp_path):
    root = _write(tmp_path, {
        "d2pose/__init__.py": "from . import data, layers\n",
        "d2pose/data/__init__.py": "from .io import read\n",
        "d2pose/data/io.py": "import os\nfrom d2pose.data import read as _\n",
        "d2pose/data/sub/__init__.py": "",
        "d2pose/data/sub/x.py": "def f():\n    from ...evaluation import build\n    from ..io import read\n",
        "d2pose/layers.py": "def load():\n    from d2pose import _C\n",  # the extension, not d2pose's __init__
        "d2pose/evaluation/__init__.py": "",
        "d2pose/evaluation/build.py": "",
    })
    graph = import_graph(root)
    assert graph["d2pose"] == {"d2pose.data", "d2pose.layers"}
    assert graph["d2pose.layers"] == set()
    assert graph["d2pose.data"] == {"d2pose.data.io"}
    assert graph["d2pose.data.io"] == {"d2pose.data"}  # a child importing its package's __init__
    assert graph["d2pose.data.sub.x"] == {"d2pose.evaluation.build", "d2pose.data.io"}
    assert import_cycles(graph) == [["d2pose.data", "d2pose.data.io", "d2pose.data"]]


def test_import_cycles_are_found(tmp_path):
    root = _write(tmp_path, {
        "d2pose/__init__.py": "",
        "d2pose/a.py": "from .b import f\n",
        "d2pose/b.py": "def f():\n    from . import c\n",
        "d2pose/c.py": "import d2pose.a\n",
        "d2pose/self.py": "from d2pose import self\n",
        "d2pose/fine.py": "from . import a\n",
    })
    cycles = import_cycles(import_graph(root))
    assert sorted(cycles) == [["d2pose.a", "d2pose.b", "d2pose.c", "d2pose.a"], ["d2pose.self", "d2pose.self"]]
