"""Every command has help with an example and is documented in the README."""

from pathlib import Path

import click
import pytest

from hugecalc.cli import cli

README = (Path(__file__).parent.parent / "README.md").read_text()


def _commands(group, prefix=""):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        yield f"{prefix}{name}", cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, f"{prefix}{name} ")


@pytest.mark.parametrize("name,command", list(_commands(cli)))
def test_command_has_help_and_is_in_readme(name, command):
    assert command.help, f"{name} has no help"
    assert f"hugecalc {name}" in README, f"README does not show `hugecalc {name}`"
    if not isinstance(command, click.Group):
        assert "Example" in command.help, f"{name} --help shows no example"


def _calculations():
    import importlib
    import inspect
    import pkgutil

    import hugecalc.calc

    for info in pkgutil.iter_modules(hugecalc.calc.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"hugecalc.calc.{info.name}")
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("compute_") and fn.__module__ == module.__name__:
                yield f"{info.name}.{name}", fn


@pytest.mark.parametrize("name,fn", list(_calculations()), ids=[n for n, _ in _calculations()])
def test_every_calculation_cites_its_kernel_rule(name, fn):
    assert "Kernel reference" in (fn.__doc__ or ""), f"{name} has no 'Kernel reference' section"


@pytest.mark.parametrize("module,absent", [
    ("vmemmap", ("click", "rich", "yaml", "numba")),  # one-shot formulas never pay numba's start-up
    ("hgm", ("click", "rich", "yaml", "numba")),
    ("tables", ("click", "rich", "yaml", "numba")),  # shared geometry and the worst case: closed forms
    ("orders", ("click", "rich", "yaml", "numba")),
    ("pgtable", ("click", "rich", "yaml", "numba")),  # strides and fractions in closed form / NumPy
    ("mthp", ("click", "rich", "yaml", "numba")),  # the walk compiles only when it is big
])
def test_calculations_stay_pure(module, absent):
    """calc/ imports no CLI, rendering or YAML code of its own."""
    import subprocess
    import sys

    code = f"import sys, hugecalc.calc.{module}; print(sorted(m for m in {absent!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("args,numba", [
    (["vmemmap", "--pages", "1024G", "--json"], False),
    (["hgm", "--json"], False),
    (["pgtable", "--worst-case", "--json"], False),
    (["pgtable", "--vma-size", "1T", "--touch-fraction", "0.1", "--json"], False),
    (["mthp", "--size", "64k", "--json"], False),  # one period of the walk: Python is quicker
    (["mthp", "--size", "64k", "--touch-stride", "12K", "--prepopulated-stride", "1000K", "--vma-size", "64G",
      "--json"], True),
])
def test_numba_only_where_a_walk_is_big(args, numba):
    """Closed forms and small walks never import numba (nor rich, for --json): start-up is the cost."""
    import subprocess
    import sys

    code = ("import sys; from hugecalc.cli import cli; cli.main(args=%r, standalone_mode=False); "
            "print('\\nIMPORTED', 'numba' in sys.modules, 'rich' in sys.modules, file=sys.stderr)" % (args,))
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert f"IMPORTED {numba} False" in err


def _complete(words, cword):
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "hugecalc"
    env = {**os.environ, "_HUGECALC_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    out = subprocess.run([str(exe)], env=env, capture_output=True, text=True, check=True).stdout
    return [line.split(",", 1)[1] for line in out.splitlines()]


def test_shell_completion_as_the_readme_documents_it():
    assert "_HUGECALC_COMPLETE=bash_source hugecalc" in README
    assert _complete("hugecalc pg", 1) == ["pgtable"]
    assert _complete("hugecalc mthp --profile arm", 3) == ["arm64-16k", "arm64-4k", "arm64-64k"]
    assert _complete("hugecalc pgtable --backing hug", 3) == ["hugetlb-2M", "hugetlb-1G"]
    assert _complete("hugecalc mthp --memory ", 3) == ["anon", "shmem", "sysv", "tmpfs"]


def test_make_test_does_not_run_the_kernel_experiments_unless_asked():
    """The experiments change THP/HVO settings and allocate hugepages: only with make test-kernel."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "HUGECALC_KERNEL_TESTS"}
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                        "tests/test_verify.py::test_verify_vmemmap_on_running_kernel"],
                       env=env, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert "1 skipped" in p.stdout and "make test-kernel" in p.stdout, p.stdout
    makefile = (Path(__file__).parent.parent / "Makefile").read_text()
    assert '-m "not root"' in makefile and "HUGECALC_KERNEL_TESTS=1 $(MAKE) test" in makefile
    assert 'if [ -n "$$HUGECALC_KERNEL_TESTS" ]; then $(PY) -m pytest -m root; fi' in makefile
    assert "make test-kernel" in README


def test_packaging_metadata_gives_no_deprecation_warning():
    """`make run` printed setuptools' warning for `license = { text = ... }`."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    data = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert isinstance(data["project"]["license"], str)  # an SPDX expression, not a table
    assert any(r.replace(" ", "").startswith("setuptools>=77") for r in data["build-system"]["requires"])


def test_every_release_bound_names_its_commit():
    """Every bound of every rule in releases.py stands beside the mainline commit that sets it: its
    id (12 hex digits) and title. A bound at OLDEST needs none (as far back as modelled); a span
    whose release is unconfirmed may lack one, and then every figure resting on it says so."""
    import re

    from hugecalc import releases

    rules = [r for r in vars(releases).values() if isinstance(r, releases.Rule)]
    assert len(rules) >= 23
    missing = []
    for rule in rules:
        spans = [s for spans in (rule.per_arch or {"": rule.spans}).values() for s in spans]
        for span in spans:
            for bound, commit in ((span.since, span.by), (span.until, span.until_by)):
                if bound is None or tuple(bound) == releases.OLDEST or (commit is None and not span.confirmed):
                    continue
                if commit is None or not re.fullmatch(r"[0-9a-f]{12}", commit.sha) or not commit.title.strip():
                    missing.append(f"{rule.name}: {bound}")
    assert not missing, "bounds without a commit id and title: " + "; ".join(missing)
