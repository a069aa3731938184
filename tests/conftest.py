import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from hugecalc.cli import cli


@pytest.fixture(autouse=True)
def _wide_plain_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")


_SCHEMAS = {}


def valid_document(command, document):
    """``document`` checked against the schema ``hugecalc schema COMMAND`` publishes."""
    import jsonschema

    from hugecalc.cli.schema import json_schema

    if command not in _SCHEMAS:
        _SCHEMAS[command] = jsonschema.Draft202012Validator(json_schema(command))
    _SCHEMAS[command].validate(document)
    return document


class Run:
    def __init__(self, result, args=()):
        self.result = result
        self.args = list(args)
        self.exit_code = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr

    @property
    def json(self):
        """The --json document; every one a test reads is also held to the published schema."""
        from hugecalc.cli.schema import documented

        document = json.loads(self.stdout)
        if self.args and self.args[0] in documented():
            valid_document(self.args[0], document)
        return document


@pytest.fixture
def run():
    """Invoke the CLI; returns exit code, stdout and stderr kept apart."""

    def _run(*args, input=None):
        return Run(CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False), args)

    return _run


#: The experiments on the running kernel change its settings (THP switches, HVO, hugepage pools;
#: all restored): they run only when asked, with `make test-kernel` (HUGECALC_KERNEL_TESTS=1).
KERNEL_TESTS = os.environ.get("HUGECALC_KERNEL_TESTS") == "1"
NOT_ASKED = "changes this machine's settings: run it with `make test-kernel` (HUGECALC_KERNEL_TESTS=1)"


def needs_root_and(*paths):
    missing = [str(p) for p in paths if not os.path.exists(p)]
    reason = (NOT_ASKED if not KERNEL_TESTS else "needs root" if os.geteuid() != 0
              else f"kernel lacks {', '.join(missing)}")
    return pytest.mark.skipif(not KERNEL_TESTS or os.geteuid() != 0 or bool(missing), reason=reason)


def pytest_report_header(config):
    return ("kernel experiments (tests marked root): " +
            ("on" if KERNEL_TESTS else "off, " + NOT_ASKED.split(": ", 1)[1]))


def pytest_collection_modifyitems(config, items):
    """Every test marked root is an experiment on this machine: skipped unless asked."""
    if not KERNEL_TESTS:
        for item in items:
            if item.get_closest_marker("root"):
                item.add_marker(pytest.mark.skip(reason=NOT_ASKED))


@pytest.fixture
def private_state(tmp_path, monkeypatch):
    """verify's lock and journal in a directory of the test's own, not the machine's."""
    path = tmp_path / "state"
    monkeypatch.setenv("HUGECALC_STATE_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def fleet200(tmp_path_factory):
    """A synthetic fleet of 200 hosts (seed 3), written once per test process: the grouped tables'
    realistic data (tests/test_fleet.py, test_widths.py, test_terminal.py)."""
    folder = tmp_path_factory.mktemp("fleet200") / "hosts"
    subprocess.run([sys.executable, "-m", "hugecalc", "fleet", "synth", "--hosts", "200", "--seed", "3", "--output",
                    str(folder)], check=True, capture_output=True)
    return folder
