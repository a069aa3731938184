"""Any option value, any command: exit 0, 1 or 2, never a traceback; JSON when it succeeds; no
negative counts.  Hypothesis drives the real CLI (issue: "no input reaches a kernel unchecked")."""

import json
import os
import math

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings, strategies as st

from hugecalc.cli import cli
from hugecalc.profiles import bundled_profiles

SUFFIXES = ["", "K", "M", "G", "T", "P", "E", "k", "kB", "MiB", "GiB"]
EDGES = ["0", "1", "4095", "4096", "64k", "2M", "1G", "127T", "128T", "64P", "16E", "1E", "0x0",
         "0xffffffffffffffff", "0x7ffffffff000", "18446744073709551616", "9223372036854775807",
         "9223372036854775808", "-1", "-4096", " 2M ", "2MiB", "1e3", ""]
text = st.text(max_size=6)
plausible_size = st.builds(lambda shift, mult: f"{mult << (shift % 10)}{'KMGTPE'[shift // 10 - 1]}",
                           st.integers(12, 52), st.sampled_from([1, 1, 1, 3, 5]))
size = st.one_of(
    plausible_size, plausible_size, plausible_size,
    st.sampled_from(EDGES),
    st.builds(lambda n, s: f"{n}{s}", st.integers(0, 1 << 20), st.sampled_from(SUFFIXES)),
    st.integers(-(1 << 70), 1 << 70).map(str),
    st.integers(0, 1 << 70).map(hex),
    text,
)
number = st.one_of(st.integers(0, 600).map(str), st.integers(-(1 << 70), 1 << 70).map(str), st.sampled_from(["0", "1", "-1", "511", "512"]), text)
real = st.one_of(
    st.floats(0, 1).map(repr), st.floats(0, 1).map(repr),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "-0", "0", "1", "1e-300", "1e-9", "0.1", "0.5", "1.5", "2"]),
    text,
)
PROFILES = sorted(bundled_profiles())
profile = st.sampled_from(PROFILES + ["no-such-profile"])
kernel = st.one_of(st.sampled_from(["4.0", "4.14", "5.10", "5.14", "5.18", "6.1", "6.8", "6.13", "6.18",
                                    "3.19", "5.25", "4.99", "99.0", "6", "6.18.3"]), text)


def choice(*values):
    return st.one_of(st.sampled_from(values), text)


def size_modes(modes):
    return st.builds(lambda s, m: f"{s}={m}", st.sampled_from(["16K", "32K", "64K", "128K", "2M", "4K", "8K",
                                                               "512M", "1G", "0", "16E"]),
                     st.sampled_from(modes + ("bogus",)))


COMMANDS = {
    "vmemmap": {"--pages": st.one_of(size, number), "--hugepage-size": size, "--struct-page-size": number,
                "--devdax": None, "--layout": choice("packed", "scattered")},
    "pgtable": {"--vma-size": size, "--vma-start": size, "--touch-stride": size, "--touch-fraction": real,
                "--seed": number, "--backing": choice("anon", "thp", "hugetlb-2M", "hugetlb-1G", "hugetlb-64K",
                                                      "hugetlb-32M", "hugetlb-512M", "hugetlb-16G", "hugetlb-4M"),
                "--after": choice("dontneed", "free"), "--shared-by": number, "--worst-case": None},
    "mthp": {"--size": size, "--enabled": size_modes(("always", "inherit", "madvise", "never")),
             "--top-level": choice("always", "madvise", "never"), "--madvise": None, "--nohugepage": None,
             "--memory": choice("anon", "shmem", "tmpfs"),
             "--shmem-enabled": size_modes(("always", "inherit", "within_size", "advise", "never")),
             "--huge": choice("always", "within_size", "advise", "never"), "--vma-size": size, "--vma-start": size,
             "--file-offset": size, "--touch-stride": size, "--prepopulated-stride": size,
             "--access": choice("write", "read-then-write"), "--khugepaged": None, "--max-ptes-none": number},
    "hgm": {"--hugepage-size": size, "--path": st.lists(size, max_size=4).map(",".join),
            "--scheme": choice("thp-like", "head-only", "hstate-level", "folio", "folio-no-page-mapcount"),
            "--operation": choice("collapse", "split", "map", "unmap"), "--guest-memory": size,
            "--atomic-ns": real, "--cache-miss-ns": real, "--entry-ns": real, "--notifier-invalidation-ms": real},
}
COUNT_KEYS = ("tables", "faults", "count", "hugepages", "folios", "entries", "atomic_ops", "_pages", "_bytes")
SIGNED_KEYS = {"saved_bytes", "net_saved_bytes"}  # net figures: page tables can cost more than is freed


def _check_counts(node, key=""):
    if isinstance(node, dict):
        for k, v in node.items():
            _check_counts(v, "tables" if key == "tables" else k)
    elif isinstance(node, list):
        for v in node:
            _check_counts(v, key)
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        if isinstance(node, float):
            assert math.isfinite(node), f"{key} is {node}"
        if any(key.endswith(k) or key == k.strip("_") for k in COUNT_KEYS) and key not in SIGNED_KEYS:
            assert node >= 0, f"{key} is negative: {node}"


def _args(command, draw):
    spec = COMMANDS[command]
    args = [command]
    for option in draw(st.lists(st.sampled_from(sorted(spec)), max_size=4, unique=True)):
        strategy = spec[option]
        args += [option] if strategy is None else [option, draw(strategy)]
    if draw(st.booleans()):
        args += ["--profile", draw(profile)]
    if draw(st.booleans()):
        args += ["--kernel", draw(kernel)]
    args.append("--json")
    return args


def _invoked(args):
    """The CLI run on ``args``, held to what every run must be: exit 0, 1 or 2, never a traceback."""
    result = CliRunner().invoke(cli, args)
    event(f"exit {result.exit_code}")
    note = f"hugecalc {' '.join(map(repr, args))}: exit {result.exit_code}\n{result.stderr}"
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        note + f"raised {type(result.exception).__name__}: {result.exception}"
    assert result.exit_code in (0, 1, 2), note
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, note
    return result, note


@pytest.mark.parametrize("command", sorted(COMMANDS))
@settings(max_examples=int(os.environ.get("HUGECALC_PROPERTY_EXAMPLES", 150)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_option_values(command, data):
    args = _args(command, data.draw)
    result, note = _invoked(args)
    if result.exit_code == 0:
        _check_counts(json.loads(result.stdout))
    else:
        assert result.stdout == "", note
        assert 0 < len(result.stderr.strip().splitlines()) <= 4, note


DATA = os.path.join(os.path.dirname(__file__), "data")


def _small_record() -> str:
    """A record of a heap and an arena, a few hundred faults: the options are what is drawn here, and
    a replay of it takes milliseconds (the real program's record is replayed by test_trace*.py)."""
    import tempfile

    from tests.records import brk, madvise, mmap, touch, write_events

    arena, heap = 0x40000000, 0x10000000
    events = [mmap(arena, 4 << 20), *(touch(arena + p * 4096) for p in range(0, 1024, 3)), brk(heap),
              brk(heap + (1 << 20)), *(touch(heap + p * 4096, write=p % 2 == 0) for p in range(256)),
              madvise(arena, 1 << 20, 4), *(touch(arena + p * 4096) for p in range(64))]
    return str(write_events(os.path.join(tempfile.mkdtemp(prefix="hugecalc-property-"), "small.record"), events))


RECORD = _small_record()
CAPTURE = os.path.join(DATA, "captures", "x86-64-6.18.json")
path = st.sampled_from([RECORD, CAPTURE, "/nonexistent/x", "/dev/null", DATA, ""]) | text
percent = st.one_of(st.sampled_from(["5%", "0", "0%", "2.5", "100%", "-1", "nan", "inf", "1e9", "５%"]), text)
#: The commands over recorded programs and fleets: fewer examples each (a replay takes a second).
OTHERS = {
    "advise": {"--trace": path, "--pid": number, "--host": path, "--max-bloat": percent, "--max-memory": size,
               "--all": None, "--explain": None, "--profile": profile, "--kernel": kernel},
    "mthp --trace": {"--trace": path, "--pid": number, "--size": size, "--top-level": choice("always", "never"),
                     "--khugepaged": None, "--max-ptes-none": number, "--profile": profile, "--kernel": kernel},
    "pgtable --trace": {"--trace": path, "--pid": number, "--after": choice("dontneed", "free"), "--vma-size": size},
    "fleet vmemmap": {"--by": choice("arch", "kernel", "profile", "thp.enabled", "config.X", "bogus"),
                      "--kernel": kernel, "--zones": number, "--timeout": choice("5s", "0", "1h", "2d")},
    "fleet mthp": {"--by": choice("arch", "profile"), "--size": size, "--top-level": choice("always", "never"),
                   "--kernel": kernel},
    "fleet advise": {"--max-bloat": percent, "--max-memory": size, "--profile": profile, "--kernel": kernel,
                     "--timeout": choice("5s", "0")},
    "record": {"--pid": number, "--duration": st.one_of(st.sampled_from(["30s", "500ms", "0", "2d", "nan", "1h"]), text),
               "--fault-source": choice("auto", "tracepoint", "perf"), "--output": path},
}
#: what most examples start from (a source, the record), so that good runs are drawn too
SOURCES = {"fleet vmemmap": [CAPTURE], "fleet mthp": [CAPTURE], "fleet advise": [RECORD],
           "advise": ["--trace", RECORD], "mthp --trace": ["--trace", RECORD], "pgtable --trace": ["--trace", RECORD]}


@pytest.mark.parametrize("command", sorted(OTHERS))
@settings(max_examples=int(os.environ.get("HUGECALC_PROPERTY_EXAMPLES", 15)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_option_values_of_the_record_advise_and_fleet_commands(command, data, monkeypatch):
    """As above for advise, replays, fleet and record. record runs as if not root: its checks of the
    options come first, and no test records anything."""
    from hugecalc.machine import kernelfs

    monkeypatch.setattr(kernelfs, "is_root", lambda: False)
    spec = OTHERS[command]
    base, words = SOURCES.get(command, []), command.split()
    args = (words if words[0] == "fleet" else words[:1]) + [*data.draw(st.sampled_from([[], base, base, base]))]
    for option in data.draw(st.lists(st.sampled_from(sorted(spec)), max_size=4, unique=True)):
        args += [option] if spec[option] is None else [option, data.draw(spec[option])]
    if command == "record" and data.draw(st.booleans()):
        args += ["--", "true"]
    elif command != "record":
        args.append("--json")
    result, note = _invoked(args)
    if result.exit_code == 0 and command != "record":
        _check_counts(json.loads(result.stdout))
    elif result.exit_code == 2:
        assert result.stdout == "", note
        assert 0 < len(result.stderr.strip().splitlines()) <= 4, note
