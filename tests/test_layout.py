"""The house keeps its shape: layered imports, no cycles, no reaching into another module's
private names, no file too long to read."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "hugecalc"
MAX_LINES = 400
#: A function longer than this hides a page: split it into named stages.  The numba kernels are
#: exempt: one loop each, where a call per stage would cost a call per fault.
MAX_FUNCTION_LINES = 60
LONG_KERNELS = {"hugecalc.calc.faults": {"_walk_block", "fault_walk"},
                # the fault rules written out on local copies of a group's state: a helper per step,
                # passing arrays, made it three times slower (measured)
                "hugecalc.calc.blocksim": {"_group_run"}}

# Lower layers never import higher ones; a module may import its own layer and below.
LAYERS = [
    ("hugecalc.errors", "hugecalc.units", "hugecalc.files"),
    ("hugecalc.result", "hugecalc.versions", "hugecalc.releases"),
    ("hugecalc.profiles", "hugecalc.machine.capture", "hugecalc.machine.trace", "hugecalc.sweep"),
    ("hugecalc.calc",),
    ("hugecalc.render", "hugecalc.plot"),
    ("hugecalc.machine",),  # the running kernel: kernelfs, snapshot, restore, record, _probe (the capture and record documents are below calc)
    ("hugecalc.verify", "hugecalc.fleet"),
    ("hugecalc.cli", "hugecalc.__main__"),
]


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


MODULES = dict(_modules())


def _layer(module: str) -> int:
    """The layer of the longest prefix naming the module (a package's module may sit lower than it)."""
    best, length = 99, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > length:
                best, length = i, len(p)
    if length >= 0:
        return best
    return -1 if module == "hugecalc" else 99


def _runtime_nodes(tree: ast.AST):
    """Every node but those under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(path: Path):
    """(imported module, names taken from it, line) for every import made when the code runs,
    lazy ones included."""
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hugecalc"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if sub in MODULES:
                    yield sub, [], node.lineno
                else:
                    yield node.module, [alias.name], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hugecalc"):
                    yield alias.name, [], node.lineno


def _package(module: str) -> str:
    return module.rsplit(".", 1)[0]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_has_a_layer(module):
    assert _layer(module) != 99, f"{module} is in no layer of LAYERS: place it"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_down_the_layers(module):
    for target, _, line in _imports(MODULES[module]):
        assert _layer(target) <= _layer(module), f"{module}:{line} imports {target}, a higher layer"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_of_another_module(module):
    for target, names, line in _imports(MODULES[module]):
        if target == module:
            continue
        for name in names:
            assert not (name.startswith("_") and not name.startswith("__")), \
                f"{module}:{line} imports {target}.{name}, a private name"
        leaf = target.rsplit(".", 1)[-1]
        if leaf.startswith("_") and not leaf.startswith("__"):
            # A private module serves its own package only.
            assert _package(target) == _package(module) or _package(target) == module, \
                f"{module}:{line} imports {target}, private to {_package(target)}"


def test_no_import_cycles():
    graph = {m: {t for t, _, _ in _imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    done, stack = set(), []

    def visit(m):
        if m in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
        if m in done:
            return
        stack.append(m)
        for t in sorted(graph[m]):
            # A package's __init__ importing its own submodules is how a package is assembled.
            if not t.startswith(m + "."):
                visit(t)
        stack.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_file_too_long_to_read(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (at most {MAX_LINES})"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_function_too_long_to_read(module):
    exempt = LONG_KERNELS.get(module, set())
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in exempt:
            lines = node.end_lineno - node.lineno + 1
            assert lines <= MAX_FUNCTION_LINES, \
                f"{module}.{node.name} has {lines} lines (at most {MAX_FUNCTION_LINES}): split it into named stages"


def test_no_unused_or_undefined_name():
    """pyflakes over the package and the tests (ruff, configured in pyproject.toml)."""
    import subprocess
    import sys

    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    r = subprocess.run([str(ruff), "check", "--quiet", str(PACKAGE), str(PACKAGE.parent / "tests")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
