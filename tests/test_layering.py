"""The house rules about imports, checked statically on the source (AST), so a stray import
fails here even where the imported package is not installed.

- No import circle among the project's modules (Tarjan's strongly connected components on
  the import graph). Every import statement counts: module level, inside functions (lazy
  imports), under ``if TYPE_CHECKING``, and package ``__init__`` files. The ``"module:attr"``
  strings of the lazy registration tables (CLI ``COMMANDS``, config ``SECTIONS``, engine
  backends, reference models) are not imports; the script also prints the loops they close.
- ``toolchain`` imports nothing from ``device_agent``.
- ``runtime.contracts`` (the formats crossing the host/device boundary) imports neither side
  and nothing but the standard library, numpy, ``cryptography`` (the Ed25519 signatures of
  the control plane, lazily) and ``runtime``'s own errors/spec.
- ``device_agent`` and ``runtime`` import no torch, onnx, openvino, litert_torch, tensorflow
  or ``toolchain`` (runtime's OpenVINO backend alone imports openvino, lazily).

Run it as a script to print the graph's circles and the largest modules:
``python tests/test_layering.py``.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("toolchain", "runtime", "device_agent")
HEAVY = ("torch", "onnx", "openvino", "litert_torch", "tensorflow", "toolchain")
#: the only modules of device_agent/runtime allowed to import a heavy package (and only lazily)
HEAVY_ALLOWED = {"runtime.backends.openvino": {"openvino"}}
CONTRACTS = "runtime.contracts"
#: runtime.numerics: numpy-only definitions (the exact-answer rule) the golden gate shares with compile
CONTRACTS_MAY_IMPORT = ("numpy", "cryptography", "runtime.contracts", "runtime.errors", "runtime.spec",
                        "runtime.numerics")
_TARGET = re.compile(r"^([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+):[A-Za-z_]\w*$")


# ------------------------------------------------------------------ the graph
def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Every project module by dotted name (a package by its ``__init__``)."""
    out = {}
    for pkg in PACKAGES:
        for p in sorted((root / pkg).rglob("*.py")):
            parts = p.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = p
    return out


def _base_package(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imports_of(name: str, path: Path, *, strings: bool = False) -> list[tuple[str, tuple[str, ...], int]]:
    """``(module, imported names, line)`` for every import in a module, wherever it is written
    (``import a.b`` gives ``("a.b", (), line)``; a registration string ``"a.b:f"`` gives
    ``("a.b", ("f",), line)``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, (), node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _base_package(name, path).split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((mod, tuple(a.name for a in node.names), node.lineno))
        elif strings and isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = _TARGET.match(node.value)
            if m and m.group(1).split(".")[0] in PACKAGES:
                out.append((m.group(1), (), node.lineno))
    return out


def _resolve(mod: str, names: tuple[str, ...], files) -> set[str]:
    """The project modules one import statement depends on: each ``mod.name`` that is a
    module, and ``mod`` itself when something else is taken from it (or for ``import mod``)."""
    found = {f"{mod}.{n}" for n in names if f"{mod}.{n}" in files}
    if len(found) < len(names) or not names:
        while mod and mod not in files:  # `import a.b.c` of a non-module: its nearest module
            mod = mod.rpartition(".")[0]
        if mod:
            found.add(mod)
    return found


def graph(root: Path = ROOT, *, strings: bool = False) -> dict[str, set[str]]:
    """Module -> the project modules it imports (``strings``: also the registration strings)."""
    files = module_files(root)
    edges: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        for mod, names, _ in imports_of(name, path, strings=strings):
            if mod.split(".")[0] in PACKAGES:
                deps |= _resolve(mod, names, files)
        edges[name] = deps - {name}
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                elif nxt in on_stack:
                    low[v] = min(low[v], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def violations() -> list[str]:
    """Every import that breaks a layering rule, as ``module:line imports name (rule)``."""
    bad = []
    for name, path in module_files().items():
        top = name.split(".")[0]
        for imp, _names, line in imports_of(name, path):
            root = imp.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line} imports {imp}"
            if top == "toolchain" and root == "device_agent":
                bad.append(f"{where} (toolchain imports nothing from device_agent)")
            if top in ("device_agent", "runtime") and root in HEAVY and root not in HEAVY_ALLOWED.get(name, ()):
                bad.append(f"{where} (device_agent and runtime import no {'/'.join(HEAVY)})")
            if name == CONTRACTS or name.startswith(CONTRACTS + "."):
                if root in ("toolchain", "device_agent"):
                    bad.append(f"{where} (the contracts import neither side)")
                elif root in PACKAGES and not imp.startswith(CONTRACTS_MAY_IMPORT):
                    bad.append(f"{where} (the contracts import only {', '.join(CONTRACTS_MAY_IMPORT)})")
                elif root not in PACKAGES and root not in sys.stdlib_module_names and root not in ("numpy", "cryptography"):
                    bad.append(f"{where} (the contracts use the standard library, numpy and cryptography only)")
    return bad


# ------------------------------------------------------------------ the tests
def test_no_import_circle():
    found = circles(graph())
    assert found == [], "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_layering_rules():
    bad = violations()
    assert bad == [], "\n".join(bad)


def test_the_checker_sees_lazy_type_checking_and_string_imports(tmp_path):
    """The checker itself: a circle through a lazy import, a TYPE_CHECKING import and a
    registration string is found; a stray heavy import is flagged without being installed."""
    pkg = tmp_path / "device_agent"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n")
    (pkg / "c.py").write_text("T = {'x': 'device_agent.d:thing'}\nimport not_installed_heavy_pkg\n")
    (pkg / "d.py").write_text("from .c import T\nimport torch\n")
    (tmp_path / "toolchain").mkdir()
    (tmp_path / "runtime").mkdir()
    assert circles(graph(tmp_path)) == [["device_agent.a", "device_agent.b"]]
    assert circles(graph(tmp_path, strings=True)) == [["device_agent.a", "device_agent.b"],
                                                       ["device_agent.c", "device_agent.d"]]
    assert ("torch", (), 2) in imports_of("device_agent.d", pkg / "d.py")


def largest_modules(n: int = 5) -> list[tuple[int, str]]:
    sizes = [(len(p.read_text().splitlines()), str(p.relative_to(ROOT))) for p in module_files().values()]
    return sorted(sizes, reverse=True)[:n]


def test_modules_stay_under_450_lines():
    big = [(n, p) for n, p in largest_modules(50) if n >= 450]
    assert big == [], f"split these along their seams: {big}"


if __name__ == "__main__":
    edges = graph()
    found = circles(edges)
    print(f"{len(edges)} modules, {sum(len(v) for v in edges.values())} import edges, {len(found)} circle(s)")
    for c in found:
        print("  circle: " + " <-> ".join(c))
    loops = [c for c in circles(graph(strings=True)) if c not in found]
    print(f"{len(loops)} loop(s) closed only by a registration string (\"module:attr\", imported lazily by name)")
    for c in loops:
        print("  registry loop: " + " <-> ".join(c))
    for v in violations():
        print("  layering: " + v)
    print("largest modules:")
    for n, p in largest_modules():
        print(f"  {n:5d}  {p}")
    sys.exit(1 if found or violations() else 0)
