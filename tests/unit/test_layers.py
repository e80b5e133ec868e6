"""Import structure, read with the stdlib `ast` (nothing is imported): pyhost's modules form
no cycle (system -> VM -> VCPU, nothing upward), and bench/ uses no invoke task module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, modules: set[str], root: Path = ROOT) -> set[str]:
    """Every module `path` imports, at module level, in functions or under TYPE_CHECKING
    alike; `from P import name` counts as P.name when that is a module."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in modules else base)
    return found


def import_graph(package: str, root: Path = ROOT) -> dict[str, set[str]]:
    files = sorted((root / package).rglob("*.py"))
    modules = {module_name(f, root) for f in files}
    return {module_name(f, root): imports(f, modules, root) & modules for f in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as the list of modules around it), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return [*path[path.index(n):], n]
            if n not in state and (cycle := visit(n)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_pyhost_has_no_import_cycle():
    graph = import_graph("pyhost")
    assert {"pyhost.kvm", "pyhost.vm", "pyhost.vcpu"} <= graph.keys()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_pyhost_fds_import_downward_only():
    graph = import_graph("pyhost")
    assert "pyhost.vm" in graph["pyhost.kvm"] and "pyhost.vcpu" in graph["pyhost.vm"]
    assert not graph["pyhost.vcpu"] & {"pyhost.vm", "pyhost.kvm"}
    assert "pyhost.kvm" not in graph["pyhost.vm"]


def test_the_cycle_finder_finds_cycles():
    # so that the tests above cannot pass by a finder that never finds anything
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None
    graph = import_graph("pyhost")
    graph["pyhost.vcpu"] = graph["pyhost.vcpu"] | {"pyhost.kvm"}
    assert find_cycle(graph) is not None


def test_function_level_imports_count(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import x\n")
    assert find_cycle(import_graph("pkg", tmp_path)) == ["pkg.a", "pkg.b", "pkg.a"]



def test_bench_imports_no_task_module():
    for path in sorted((ROOT / "bench").rglob("*.py")):
        for m in imports(path, set()):
            top = m.split(".")[0]
            assert top != "tasks" and not top.startswith("tasks_") \
                and not m.endswith(".tasks"), f"{path.relative_to(ROOT)} imports {m}"


def test_task_modules_hide_no_top_level_package():
    """invoke puts tasks/ first on sys.path: tasks/lab.py would be what `import lab` finds."""
    tasks = {p.stem for p in (ROOT / "tasks").glob("*.py")} - {"__init__"}
    top = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert tasks and top >= {"lab", "bench", "pyhost"}
    assert not tasks & top, tasks & top
