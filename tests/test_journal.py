"""verify survives kill -9: the restore journal, its recovery, and the real thing on this kernel."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hugecalc.machine import restore
from hugecalc.errors import HostError
from hugecalc.machine.restore import Restorer, recover_abandoned
from tests.conftest import needs_root_and

SELF_KILL = """
import os, signal, sys
from pathlib import Path
from hugecalc.machine.restore import Restorer
a, b = Path(sys.argv[1]), Path(sys.argv[2])
with Restorer() as r:
    r.set(a, "1")
    r.set(b, "never")
    r.scratch("dir", sys.argv[3])
    os.mkdir(sys.argv[3])
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_run(tmp_path, env):
    a, b, scratch = tmp_path / "a", tmp_path / "b", tmp_path / "scratch"
    a.write_text("0\n")
    b.write_text("always [madvise] never\n")
    p = subprocess.run([sys.executable, "-c", SELF_KILL, str(a), str(b), str(scratch)], env=env)
    assert p.returncode == -signal.SIGKILL
    return a, b, scratch


def test_a_killed_run_leaves_a_journal_that_the_next_run_restores(tmp_path, private_state):
    a, b, scratch = _killed_run(tmp_path, dict(os.environ))
    assert (a.read_text(), b.read_text(), scratch.is_dir()) == ("1", "never", True)
    journal = json.loads((private_state / "journal.json").read_text())
    assert journal["settings"] == [[str(a), "0"], [str(b), "madvise"]]  # the selected token, writable back
    assert oct((private_state / "journal.json").stat().st_mode & 0o777) == "0o600"
    notices = []
    restore.on_notice = notices.append
    try:
        with Restorer() as r:  # the next run: restores first, and only then takes a's value as the original
            r.set(a, "7")
    finally:
        restore.on_notice = None
    assert (a.read_text(), b.read_text(), scratch.exists()) == ("0", "madvise", False)
    assert not (private_state / "journal.json").exists()
    assert len(notices) == 1 and f"{a}=0" in notices[0] and "ended without restoring" in notices[0]


def test_verify_restore_command(tmp_path, private_state, run):
    if os.geteuid() != 0:
        r = run("verify", "--restore")
        assert r.exit_code == 1 and "run it as root" in r.stderr
        return
    a, b, _ = _killed_run(tmp_path, dict(os.environ))
    r = run("verify", "--restore")
    assert r.exit_code == 0 and r.stdout == ""
    assert "put back" in r.stderr and (a.read_text(), b.read_text()) == ("0", "madvise")
    r = run("verify", "--restore")
    assert r.exit_code == 0 and "nothing to restore" in r.stderr


def test_a_journal_of_a_live_run_is_left_alone(private_state):
    private_state.mkdir(mode=0o700)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        stat = Path(f"/proc/{sleeper.pid}/stat").read_text()
        start = int(stat[stat.rindex(")") + 2:].split()[19])
        (private_state / "journal.json").write_text(json.dumps(
            {"version": 1, "pid": sleeper.pid, "start_time": start, "settings": [], "scratch": []}))
        with pytest.raises(HostError, match="still running"):
            recover_abandoned()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert recover_abandoned() == [] and not (private_state / "journal.json").exists()  # now abandoned


def test_a_reused_pid_does_not_keep_a_journal_alive(private_state, tmp_path):
    """The journal names its owner by pid and start time: another process with the pid is not it."""
    private_state.mkdir(mode=0o700)
    a = tmp_path / "a"
    a.write_text("5")
    (private_state / "journal.json").write_text(json.dumps(
        {"version": 1, "pid": os.getpid(), "start_time": 1, "settings": [[str(a), "3"]], "scratch": []}))
    assert recover_abandoned() == [f"{a}=3"] and a.read_text() == "3"


def test_a_planted_symlink_is_refused(tmp_path, monkeypatch):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "state").symlink_to(target)
    monkeypatch.setenv("HUGECALC_STATE_DIR", str(tmp_path / "state"))
    with pytest.raises(HostError, match="refusing"):
        with Restorer():
            pass
    assert list(target.iterdir()) == []


def test_a_group_writable_state_dir_is_refused(tmp_path, monkeypatch):
    (tmp_path / "state").mkdir(mode=0o777)
    os.chmod(tmp_path / "state", 0o777)
    monkeypatch.setenv("HUGECALC_STATE_DIR", str(tmp_path / "state"))
    with pytest.raises(HostError, match="mode 0700"):
        recover_abandoned()


def test_an_unreadable_journal_is_reported(private_state):
    private_state.mkdir(mode=0o700)
    (private_state / "journal.json").write_text("{not json")
    with pytest.raises(HostError, match="by hand"):
        recover_abandoned()


@pytest.mark.parametrize("plant", ["fifo", "huge", "dir"])
def test_a_journal_that_is_not_a_small_file_is_refused_without_hanging(private_state, plant):
    """A FIFO, a directory or a huge file where the journal goes: refused at once with the way out
    (a FIFO would block a plain read forever; a huge file would be read whole)."""
    private_state.mkdir(mode=0o700)
    journal = private_state / "journal.json"
    if plant == "fifo":
        os.mkfifo(journal, 0o600)
    elif plant == "dir":
        journal.mkdir()
    else:
        with open(journal, "wb") as f:
            f.truncate(restore.JOURNAL_LIMIT + 1)
    with pytest.raises(HostError, match="by hand"):
        recover_abandoned()


# --- the real thing: kill -9 a verify run on this kernel ----------------------------------------

THP = Path("/sys/kernel/mm/transparent_hugepage")
HUGEPAGES = Path("/sys/kernel/mm/hugepages")
HVO = Path("/proc/sys/vm/hugetlb_optimize_vmemmap")
POOL_FILES = ("nr_hugepages", "nr_overcommit_hugepages", "free_hugepages", "resv_hugepages", "surplus_hugepages")


def machine_state() -> dict:
    """Every THP and hugetlb setting, every pool (global and per node), HVO, and our mounts."""
    state = {}
    for path in sorted(THP.rglob("*")):
        if path.is_file() and "stats" not in path.parts and path.name not in ("full_scans", "pages_collapsed"):
            state[str(path)] = path.read_text()
    for path in sorted(HUGEPAGES.glob("*/*")) + sorted(Path("/sys/devices/system/node").glob("node*/hugepages/*/*")):
        if path.name in POOL_FILES:
            state[str(path)] = path.read_text()
    for path in (HVO, Path("/proc/sys/vm/nr_hugepages"), Path("/proc/sys/vm/nr_overcommit_hugepages")):
        if path.exists():
            state[str(path)] = path.read_text()
    state["mounts"] = [line for line in Path("/proc/mounts").read_text().splitlines() if line.startswith("hugecalc ")]
    return state


def put_back(state: dict) -> None:
    """The test's own safety net: writes back whatever differs (selector files by their token)."""
    for name, text in state.items():
        path = Path(name)
        if name == "mounts" or not path.exists() or path.read_text() == text or name.endswith(POOL_FILES[2:]):
            continue
        value = text[text.index("[") + 1:text.index("]")] if "[" in text else text.strip()
        try:
            path.write_text(value)
        except OSError:
            pass


def _probes() -> list[int]:
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"hugecalc.machine._probe" in (proc / "cmdline").read_bytes():
                out.append(int(proc.name))
        except OSError:
            pass
    return out


def _wait_for(condition, timeout=30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0)  # busy: some moments last milliseconds
    return False


JOURNAL = Path("/run/hugecalc/journal.json")
P64K = THP / "hugepages-64kB" / "enabled"
MTHP = ["verify", "mthp", "--size", "64k", "--vma-size", "256M"]
TMPFS = ["verify", "mthp", "--memory", "tmpfs", "--huge", "always", "--vma-size", "64M"]
VMEMMAP = ["verify", "vmemmap", "--count", "4096"]  # 8 GiB: an allocation long enough to catch mid-way


def _selected(path: Path) -> str:
    text = path.read_text()
    return text[text.index("[") + 1:text.index("]")] if "[" in text else text.strip()


@pytest.mark.root
@needs_root_and(P64K, HVO, HUGEPAGES / "hugepages-2048kB")
@pytest.mark.parametrize("args,moment,when", [
    (MTHP, "before any change", lambda: True),
    (MTHP, "with the journal written", JOURNAL.exists),
    (MTHP, "with 64K mTHP switched on", lambda: _selected(P64K) == "always"),
    (MTHP, "with the probe running", lambda: bool(_probes())),
    (TMPFS, "with its tmpfs mounted", lambda: " hugecalc " in " ".join(machine_state()["mounts"]) or
     any(line.startswith("hugecalc ") for line in Path("/proc/mounts").read_text().splitlines())),
    (VMEMMAP, "with hugepages allocated",
     lambda: int((HUGEPAGES / "hugepages-2048kB" / "nr_hugepages").read_text()) > 0),
], ids=["mthp-before", "mthp-journal", "mthp-switched", "mthp-probe", "tmpfs-mounted", "vmemmap-allocated"])
def test_kill_9_then_the_next_run_restores_everything(args, moment, when):
    env = {k: v for k, v in os.environ.items() if k != "HUGECALC_STATE_DIR"}
    subprocess.run([sys.executable, "-m", "hugecalc", "verify", "--restore"], env=env, capture_output=True)
    before = machine_state()
    assert not before["mounts"], "a hugecalc tmpfs is already mounted"
    try:
        run = subprocess.Popen([sys.executable, "-m", "hugecalc", *args], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        reached = _wait_for(when)
        run.send_signal(signal.SIGKILL)
        run.wait()
        assert reached, f"the run never got to the moment '{moment}'"
        if moment != "before any change":
            assert JOURNAL.exists(), "killed mid-way, the run must have left its journal"
        assert _wait_for(lambda: not _probes(), timeout=5), "a probe outlived its killed parent"
        # The next run restores first: `verify --restore`, or (for one moment) a whole verify run.
        following = ["verify", "mthp", "--size", "16k", "--vma-size", "4M"] if moment.startswith("with 64K") else \
            ["verify", "--restore"]
        nxt = subprocess.run([sys.executable, "-m", "hugecalc", *following], env=env, capture_output=True, text=True)
        assert nxt.returncode == 0, nxt.stderr
        if moment != "before any change":
            assert "ended without restoring its settings; put back:" in nxt.stderr
        after = machine_state()
        assert after == before, {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
                                 if before.get(k) != after.get(k)}
        assert not JOURNAL.exists()
    finally:
        put_back(before)
