"""`hugecalc host`, captures, `--profile host`/`--host FILE`, and process replay on real processes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hugecalc.machine.capture import CAPTURE_SCHEMA_VERSION, decode_runs, encode_runs, load_capture
from hugecalc.profiles import load_profile
from tests.conftest import needs_root_and

CAPTURES = Path(__file__).parent / "data" / "captures"
X86 = CAPTURES / "x86-64-6.18.json"
ARM = CAPTURES / "arm64-4k-6.8-synthetic.json"
THP = Path("/sys/kernel/mm/transparent_hugepage")


def test_host_reads_this_machine(run, tmp_path):
    r = run("host", "--json")
    assert r.exit_code == 0, r.stderr
    doc = r.json
    assert doc["kind"] == "hugecalc-capture" and doc["schema_version"] == CAPTURE_SCHEMA_VERSION
    assert doc["kernel"] == os.uname().release and doc["page_size"] == os.sysconf("SC_PAGESIZE")
    for what in ("arch", "kernel", "page_size", "paging_levels", "profile", "mem_total_bytes"):
        assert what in doc["sources"], what
    assert all({"what", "source", "error"} <= set(u) for u in doc["unknown"])
    if os.geteuid() == 0:  # root reads where hot-plugged memory is, and its hugepages (kernel review N10)
        assert isinstance(doc["hotplugged_ram_bytes"], int) and isinstance(doc["hotplugged_hugepages"], dict)
    out = tmp_path / "cap.json"
    r = run("host", "--output", str(out))
    assert r.exit_code == 0 and r.stdout == "" and "wrote" in r.stderr
    capture = load_capture(out)
    assert load_profile(str(out)) == capture.profile  # a capture is also a valid profile
    assert [p for p in tmp_path.iterdir()] == [out]  # written atomically: no temporary left


def test_struct_page_from_btf():
    from hugecalc.machine.snapshot import BTF, struct_page_from_btf

    if not BTF.exists():
        pytest.skip("no kernel BTF")
    assert struct_page_from_btf(BTF.read_bytes()) in (56, 64, 72, 80, 88)


def test_runs_round_trip():
    import numpy as np

    s = np.array([0x1000, 0x5000, 0x9000], dtype=np.int64) + (1 << 30)
    e = np.array([0x3000, 0x6000, 0x20000], dtype=np.int64) + (1 << 30)
    text = encode_runs(s, e, 1 << 30, 4096)
    back = decode_runs(text, 1 << 30, 4096)
    assert (back[0] == s).all() and (back[1] == e).all()


def test_every_calculator_takes_a_capture(run):
    for args in (["vmemmap"], ["vmemmap", "--pages", "1T"], ["pgtable", "--vma-size", "1G"], ["mthp", "--size", "64k"],
                 ["hgm", "--path", "4K,1G"], ["profiles"]):
        for capture in (X86, ARM):
            r = run(*args, "--host", str(capture), "--json")
            assert r.exit_code == 0, (args, capture, r.stderr)
            assert r.json["kernel"] == load_capture(capture).kernel or args == ["profiles"]


def test_vmemmap_now_and_with_hvo_on(run):
    doc = run("vmemmap", "--host", str(ARM), "--json").json
    rows = {row["hugepage_size_bytes"]: row for row in doc["rows"]}
    # arm64 6.8 has no HVO: nothing now, nothing with it on either.
    assert all(not row["optimizable"] for row in rows.values())
    doc = run("vmemmap", "--host", str(ARM), "--kernel", "6.1.15", "--json").json
    row = {r["hugepage_size_bytes"]: r for r in doc["rows"]}[2 << 20]
    assert row["hugepages"] == 512 and row["saved_now_bytes"] == 0 and row["gain_bytes"] > 0


def test_mthp_now_beside_the_what_if(run):
    doc = run("mthp", "--host", str(X86), "--size", "64k", "--json").json
    assert doc["now"]["faults"] == 262_144 and doc["what_if"]["faults"] == 16_384
    assert doc["inputs"]["what_if"]["enabled"] == [[65536, "always"]]
    doc = run("mthp", "--host", str(X86), "--json").json
    assert doc["what_if"] is None  # nothing changed: one column


@pytest.mark.parametrize("args,message", [
    (["host", "--pids", "4194303"], "--pids 4194303: no such process"),
    (["host", "--pids", "abc"], "use PID,PID,... or all"),
    (["vmemmap", "--host", "/nonexistent.json"], "cannot read it"),
    (["mthp", "--pid", "4194303"], "no such process"),
    (["mthp", "--host", str(X86), "--pid", "4194303"], "the capture has no such process"),
    (["mthp", "--profile", "arm64-4k", "--pid", str(os.getpid())], "is arm64, but process"),
    (["verify", "mthp", "--host", str(X86)], "a capture cannot be verified"),
])
def test_bad_input(run, args, message):
    r = run(*args)
    assert r.exit_code == 2 and r.stdout == "", r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) <= 3


@pytest.mark.parametrize("edit,message", [
    (lambda t: t[: len(t) // 2], "not valid JSON"),
    (lambda t: t.replace('"schema_version": 1', '"schema_version": 99'), "newer than this hugecalc reads"),
    (lambda t: t.replace('"page_size": 4096', '"page_size": "big"'), "damaged capture: page_size"),
    (lambda t: t.replace('"kind": "hugecalc-capture"', '"kind": "other"'), "not a hugecalc capture"),
])
def test_damaged_captures_are_refused(run, tmp_path, edit, message):
    bad = tmp_path / "bad.json"
    bad.write_text(edit(X86.read_text()))
    r = run("vmemmap", "--host", str(bad))
    assert r.exit_code == 2 and r.stdout == "" and message in r.stderr


def test_captured_process_replays(run):
    """The committed capture holds a real process: the settings now give back its VmPTE."""
    capture = load_capture(X86)
    pid = capture.processes[0].pid
    doc = run("mthp", "--host", str(X86), "--pid", str(pid), "--size", "64k", "--json").json
    now, later = doc["runs"]
    assert (now["label"], later["label"]) == ("now", "what-if")
    assert now["page_table_bytes"] == doc["vm_pte_bytes"]
    assert later["faults"] < now["faults"] and later["populated_bytes"] >= now["populated_bytes"]


# --- the proof on real processes (root: kpageflags, and the THP switches) -------------------------

CHILD = r"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
for addr, size, stride, advice in %s:
    a = libc.mmap(addr, size, 3, 0x22 | 0x100000, -1, 0)
    assert a == addr, (hex(addr), a, ctypes.get_errno())
    if advice:
        libc.madvise(a, size, advice)
    for off in range(0, size, stride):  # in address order, each page once
        ctypes.c_char.from_address(a + off).value = b"x"
print("ready", flush=True)
sys.stdin.readline()
"""
REGIONS = [(0x200000000000, 8 << 20, 4096, 14), (0x200001003000, 5 << 20, 4096, 0),
           (0x200004000000, 16 << 20, 1 << 20, 14), (0x200008010000, 3 << 20, 12288, 0)]


@pytest.mark.root
@needs_root_and(THP / "hugepages-64kB" / "enabled", THP / "hugepages-16kB" / "enabled", "/proc/kpageflags")
def test_replay_gives_back_a_real_process(run, tmp_path):
    switches = {THP / "hugepages-64kB" / "enabled": "always", THP / "hugepages-16kB" / "enabled": "always",
                THP / "enabled": "madvise"}
    saved = {p: p.read_text() for p in switches}
    child = None
    try:
        for path, value in switches.items():
            path.write_text(value)
        child = subprocess.Popen([sys.executable, "-c", CHILD % REGIONS], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        out = tmp_path / "cap.json"
        r = run("host", "--pids", str(child.pid), "--output", str(out))
        assert r.exit_code == 0, r.stderr
    finally:
        for path, text in saved.items():
            path.write_text(text[text.index("[") + 1:text.index("]")])
        if child:
            child.kill()
            child.communicate()
    capture = load_capture(out)
    proc = capture.processes[0]
    doc = run("mthp", "--host", str(out), "--pid", str(child.pid), "--json").json
    assert len(doc["runs"]) == 1  # what-if = the settings now
    now = doc["runs"][0]
    assert now["page_table_bytes"] == proc.vm_pte_bytes == doc["vm_pte_bytes"]  # VmPTE exactly
    replayed = {v["start"]: {str(f["size_bytes"]): f["count"] for f in v["folios"]} for v in now["vmas"]}
    mixed = set()
    for addr, *_ in REGIONS:
        vma = next(v for v in proc.vmas if v.start == addr)
        # Folio sizes as the process has them. Mapped pages /proc/kpageflags reads as 0 (kpagecount 0
        # too: seen on this VM once its high PFNs are in use) hide their folios; as verify mthp does,
        # those pages must be exactly the pages of the folios not seen.
        want, got = replayed[addr], vma.folios
        assert all(got.get(size, 0) <= n for size, n in want.items()) and set(got) <= set(want), hex(addr)
        unseen = sum((n - got.get(size, 0)) * int(size) for size, n in want.items()) // capture.page_size
        assert unseen == vma.unclassified_pages, hex(addr)
        if not vma.unclassified_pages:
            assert want == got, hex(addr)
        mixed |= set(vma.folios)
    assert {str(16 << 10), str(64 << 10), str(2 << 20)} <= mixed  # mixed mTHP sizes and a PMD THP


def test_pgtable_replays_a_captured_process(run):
    capture = load_capture(X86)
    proc = capture.processes[0]
    doc = run("pgtable", "--host", str(X86), "--pid", str(proc.pid), "--after", "dontneed", "--json").json
    assert doc["page_table_bytes"] == proc.vm_pte_bytes  # a settled process: its VmPTE exactly
    assert doc["page_table_bytes_after"] <= doc["page_table_bytes"]
    # The two PMD-mapped THPs of its 4M MADV_HUGEPAGE mapping carry deposited PTE tables; as hugetlb
    # 2M pages they would need none.
    thps = sum(int(v.folios.get(str(2 << 20), 0)) for v in proc.vmas if v.folios)
    doc = run("pgtable", "--host", str(X86), "--pid", str(proc.pid), "--backing", "hugetlb-2M", "--json").json
    assert doc["page_table_bytes_backing"] == proc.vm_pte_bytes - thps * 4096
    r = run("pgtable", "--host", str(X86), "--pid", str(proc.pid), "--vma-size", "1G")
    assert r.exit_code == 2 and "do not apply" in r.stderr


def test_host_explain_says_where_each_value_was_read(run):
    r = run("host", "--explain")
    assert r.exit_code == 0, r.stderr
    text = r.stdout[r.stdout.index("Where each value was read"):]
    assert "kernel: " + __import__("platform").release() in text and "read from: uname -r" in text
    assert "thp.enabled: " in text and "read from: /sys/kernel/mm/transparent_hugepage/enabled" in text


def test_a_process_that_disabled_thp_replays_as_base_pages(run):
    """prctl(PR_SET_THP_DISABLE): /proc/PID/status THP_enabled 0, vma_thp_disabled() for every VMA,
    so every fault gets a base page whatever the settings (kernel review N9)."""
    import subprocess
    import sys

    code = ("import ctypes, mmap, sys; ctypes.CDLL(None).prctl(41, 1, 0, 0, 0); m = mmap.mmap(-1, 8 << 20); "
            "m.write(b'x' * (8 << 20)); print('ready', flush=True); sys.stdin.read()")
    with subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        try:
            assert proc.stdout.readline().strip() == b"ready"
            doc = run("mthp", "--pid", str(proc.pid), "--top-level", "always", "--size", "64k", "--json").json
        finally:
            proc.kill()
    assert {f["size_bytes"] for r in doc["runs"] for f in r["folios"]} == {4096}
    assert any("PR_SET_THP_DISABLE" in n for n in doc["notes"])


def test_a_userfaultfd_registered_mapping_gets_no_mthp():
    """alloc_anon_folio(): 'if (userfaultfd_armed(vma)) goto fallback' (kernel review N9)."""
    import numpy as np

    from hugecalc.calc.orders import ThpSettings
    from hugecalc.calc.replay import replay
    from hugecalc.machine.capture import PresentVma
    from hugecalc.profiles import load_profile
    from hugecalc.releases import parse_release

    def vma(flags):
        return PresentVma(start=1 << 30, end=(1 << 30) + (1 << 20), kind="anon", flags=flags, kernel_page_bytes=4096,
                          starts=np.array([1 << 30]), ends=np.array([(1 << 30) + (1 << 20)]))

    settings = ThpSettings(enabled={64 << 10: "always"})
    x86, release = load_profile("x86-64"), parse_release("6.18")
    assert replay(x86, release, [vma(())], settings, "x").folios[0].size_bytes == 64 << 10
    armed = replay(x86, release, [vma(("um",))], settings, "x")
    assert [(f.size_bytes, f.count) for f in armed.folios] == [(4096, 256)]


ZERO_PAGE_CHILD = """
import ctypes, mmap, sys
ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: every folio a base page, now and in the replay
m = mmap.mmap(-1, 1 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for i in range(200):
    m[i * 4096] = 1
read = sum(m[i * 4096] for i in range(200, 256))  # 56 pages read, never written: the zero page
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.mark.root
@needs_root_and("/proc/kpageflags")
def test_the_replay_names_every_present_page_without_a_counted_folio(run, tmp_path):
    """Newcomer review #25: 'present now 6,821, now 6,822' with nothing to say which page the replay
    adds.  Pages read and never written map the zero page (KPF_ZERO_PAGE), and pages kpageflags cannot
    classify hide their folios: the note counts them, and they are exactly the difference."""
    from hugecalc.machine.capture import REPLAYED_KINDS

    out = tmp_path / "cap.json"
    with subprocess.Popen([sys.executable, "-c", ZERO_PAGE_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as child:
        try:
            assert child.stdout.readline().strip() == "ready"
            assert run("host", "--pids", str(child.pid), "--output", str(out)).exit_code == 0
        finally:
            child.kill()
    vmas = [v for v in load_capture(out).processes[0].vmas if v.kind in REPLAYED_KINDS]
    assert sum(v.zero_pages for v in vmas) >= 56
    missing = sum(v.zero_pages + v.swapped_pages + v.unclassified_pages for v in vmas)
    doc = run("mthp", "--host", str(out), "--pid", str(child.pid), "--json").json
    replayed_4k = {f["size_bytes"]: f["count"] for f in doc["runs"][0]["folios"]}
    assert set(replayed_4k) == {4096} and [f["size_bytes"] for f in doc["present_folios"]] == [4096]
    assert replayed_4k[4096] - doc["present_folios"][0]["count"] == missing
    assert any(n.startswith(f"{missing:,} present pages of the replayed mappings are in no folio counted now")
               and "zero page" in n for n in doc["notes"])


def test_pids_all_captures_the_readable_and_lists_the_rest(run):
    doc = run("host", "--pids", "all", "--json").json
    assert doc["processes"]  # this test's own process at least
    assert all(u["error"] for u in doc["unknown"] if u["what"].startswith("process "))


def test_a_process_that_exits_while_it_is_read_is_gone_not_an_error():
    """A process that exits while it is read (its pagemap gone: ENOENT, or ESRCH for a zombie) is
    'went away', which --pids all lists and goes on; it was a HostError that ended the capture."""
    import time

    from hugecalc.errors import InputError
    from hugecalc.machine.processes import capture_process

    code = "import mmap; m = mmap.mmap(-1, 1 << 25, flags=mmap.MAP_PRIVATE); m.write(bytes(1 << 25))"
    outcomes = set()
    for i in range(24):
        child = subprocess.Popen([sys.executable, "-c", code])
        time.sleep(0.02 + 0.005 * (i % 8))  # python's start, then its 32 MiB: caught at different moments
        try:
            capture_process(child.pid, os.sysconf("SC_PAGESIZE"), 1 << 47)
            outcomes.add("read")
        except InputError as e:
            assert "went away" in str(e) or "no such process" in str(e), e
            outcomes.add("gone")
        finally:
            child.wait()
    assert "gone" in outcomes


def test_a_capture_in_a_shmem_testing_mode_replays_in_it():
    """N11: force and deny are modelled as the kernel has them, not read as always/never."""
    from hugecalc.calc.replay import settings_from_capture

    capture = load_capture(X86)
    for mode in ("force", "deny"):
        capture.thp.shmem_enabled = mode
        settings, notes = settings_from_capture(capture)
        assert settings.huge == mode and notes == []


def test_thp_boot_parameters_are_captured_and_said(run, tmp_path, monkeypatch):
    """thp_anon= (6.13), thp_shmem= and the others set the switches' boot values: a capture reads
    them from /proc/cmdline, host shows them, and a what-if on the capture says it starts from the
    switches as they read now (kernel review §5)."""
    import json

    from hugecalc.machine import kernelfs, snapshot

    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cmdline").write_text("quiet thp_anon=64K:always;2M:inherit transparent_hugepage=madvise root=/dev/x\n")
    monkeypatch.setattr(kernelfs, "PROC", proc)
    thp = snapshot.thp_settings(snapshot._Reader())
    assert thp.boot_params == {"thp_anon": "64K:always;2M:inherit", "transparent_hugepage": "madvise"}
    monkeypatch.undo()
    doc = json.loads(X86.read_text())
    doc["thp"]["boot_params"] = {"thp_anon": "64K:always"}
    cap = tmp_path / "cap.json"
    cap.write_text(json.dumps(doc))
    r = run("mthp", "--host", str(cap), "--size", "16k", "--vma-size", "4M")
    assert r.exit_code == 0 and "booted with thp_anon=64K:always" in r.stdout


def test_host_explain_shows_each_value_and_where_it_was_read(run):
    """Newcomer review #17: the pools' values (not 'see the capture'), nr_memmap_boot_pages listed,
    each heading once, the source labelled as such."""
    out = run("host", "--explain").stdout
    block = out[out.index("Where each value was read"):]
    assert "see the capture" not in block and "rule:" not in block and "read from:" in block
    headings = [line for line in block.splitlines() if line and not line.startswith(" ")][1:]
    assert len(headings) == len(set(headings)), headings
    if "nr_memmap_boot_pages" in Path("/proc/vmstat").read_text():
        assert "nr_memmap_boot_pages:" in block
