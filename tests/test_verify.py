"""`hugecalc verify vmemmap` on the running kernel, and its refusals."""

from pathlib import Path

import pytest

from hugecalc.machine import kernelfs
from hugecalc.errors import HostError
from hugecalc.machine.restore import Restorer
from tests.conftest import needs_root_and

HVO = Path("/proc/sys/vm/hugetlb_optimize_vmemmap")
HP2M = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")


def _has_memmap_counter():
    vmstat = Path("/proc/vmstat")
    return vmstat.exists() and "nr_memmap_pages" in vmstat.read_text()


@pytest.mark.root
@needs_root_and(HVO, HP2M)
@pytest.mark.skipif(not _has_memmap_counter(), reason="kernel lacks nr_memmap_pages")
def test_verify_vmemmap_on_running_kernel(run):
    before = (HVO.read_text(), HP2M.read_text())
    r = run("verify", "vmemmap", "--hugepage-size", "2M", "--count", "4", "--json")
    assert (HVO.read_text(), HP2M.read_text()) == before, "settings were not restored"
    assert r.exit_code == 0, r.stderr
    checks = r.json["checks"]
    assert checks[0]["predicted"] == 4 * 7 and checks[0]["measured"] == 4 * 7
    assert all(c["match"] for c in checks)


def test_verify_refuses_without_root(run, monkeypatch):
    monkeypatch.setattr(kernelfs, "is_root", lambda: False)
    r = run("verify", "vmemmap")
    assert r.exit_code == 1 and r.stdout == ""
    assert "run it as root" in r.stderr


def test_verify_refuses_missing_sysctl(run, monkeypatch, tmp_path):
    monkeypatch.setattr(kernelfs, "is_root", lambda: True)
    monkeypatch.setattr(kernelfs, "HVO_SYSCTL", tmp_path / "absent")
    r = run("verify", "vmemmap")
    assert r.exit_code == 1 and "this kernel has no HVO" in r.stderr


def test_verify_refuses_missing_counter(run, monkeypatch, tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "vmstat").write_text("nr_free_pages 100\n")
    (tmp_path / "sysctl").write_text("0\n")
    monkeypatch.setattr(kernelfs, "is_root", lambda: True)
    monkeypatch.setattr(kernelfs, "PROC", proc)
    monkeypatch.setattr(kernelfs, "HVO_SYSCTL", tmp_path / "sysctl")
    r = run("verify", "vmemmap")
    assert r.exit_code == 1 and "no nr_memmap_pages counter" in r.stderr


def test_restorer_restores_on_error(tmp_path, private_state):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("0\n")
    b.write_text("5\n")
    with pytest.raises(KeyboardInterrupt):
        with Restorer() as r:
            r.set(a, "1")
            r.set(b, "9")
            r.set(b, "10")
            assert (a.read_text(), b.read_text()) == ("1", "10")
            raise KeyboardInterrupt
    assert (a.read_text(), b.read_text()) == ("0", "5")


def test_restorer_reports_what_it_could_not_restore(tmp_path, private_state):
    a = tmp_path / "a"
    a.write_text("0")
    with pytest.raises(HostError, match="could not restore"):
        with Restorer() as r:
            r.set(a, "1")
            a.unlink()
            a.mkdir()


def test_restorer_writes_back_the_selected_token(tmp_path, private_state):
    """sysfs selector files read 'always [madvise] never' but accept only 'madvise'."""
    knob = tmp_path / "enabled"
    knob.write_text("always [madvise] never\n")
    with Restorer() as r:
        r.set(knob, "never")
        assert knob.read_text() == "never"
    assert knob.read_text() == "madvise"


@pytest.mark.root
@needs_root_and(HVO, HP2M)
@pytest.mark.skipif(not _has_memmap_counter(), reason="kernel lacks nr_memmap_pages")
def test_verify_vmemmap_fails_when_the_rules_are_wrong(run):
    """5.15 kept 2 vmemmap pages; a 6.18 kernel keeps 1: the check must say so and exit 1."""
    before = (HVO.read_text(), HP2M.read_text())
    r = run("verify", "vmemmap", "--count", "2", "--kernel", "5.15", "--json")
    assert (HVO.read_text(), HP2M.read_text()) == before
    if r.exit_code == 0:
        pytest.skip("the running kernel keeps 2 vmemmap pages (5.14-5.17)")
    assert r.exit_code == 1 and "differs from the prediction" in r.stderr
    assert r.json["checks"][0] == {"figure": "vmemmap pages freed by 2 x 2M", "predicted": 12, "measured": 14,
                                   "match": False, "why": None}


def test_restorer_serializes_verify_runs(tmp_path, monkeypatch):
    """A second Restorer waits for the first: its lock is held for the whole block."""
    import fcntl

    monkeypatch.setenv("HUGECALC_STATE_DIR", str(tmp_path / "state"))
    with Restorer():
        with open(tmp_path / "state" / "verify.lock", "a") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(tmp_path / "state" / "verify.lock", "a") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again


def test_verify_refuses_when_memory_is_short(run, monkeypatch, tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "vmstat").write_text("nr_memmap_pages 100\nnr_memmap_boot_pages 5\n")
    (proc / "meminfo").write_text("MemTotal: 1048576 kB\nMemAvailable: 102400 kB\n")
    pages = tmp_path / "hugepages" / "hugepages-1048576kB"
    pages.mkdir(parents=True)
    (pages / "nr_hugepages").write_text("0\n")
    (tmp_path / "sysctl").write_text("0\n")
    monkeypatch.setattr(kernelfs, "is_root", lambda: True)
    monkeypatch.setattr(kernelfs, "PROC", proc)
    monkeypatch.setattr(kernelfs, "SYS_HUGEPAGES", tmp_path / "hugepages")
    monkeypatch.setattr(kernelfs, "HVO_SYSCTL", tmp_path / "sysctl")
    r = run("verify", "vmemmap", "--hugepage-size", "1G", "--count", "4")
    assert r.exit_code == 1 and r.stdout == ""
    assert "not enough free memory: 4 x 1G hugepages need 4.25 GiB" in r.stderr and "MemAvailable is 100 MiB" in r.stderr
    assert (tmp_path / "sysctl").read_text() == "0\n" and (pages / "nr_hugepages").read_text() == "0\n"


def test_verify_draws_a_fraction_per_table_on_demand():
    import numpy as np

    from hugecalc.calc.touches import Touches
    from hugecalc.verify.pgtable import touch_intervals

    start, end = (1 << 30) + 4096 * 7, (1 << 30) + (64 << 20) - 4096 * 3  # partial tables at both edges
    s, e = touch_intervals(Touches(fraction=0.01, seed=5), start, end, 4096)
    pages = (end - start) // 4096
    assert (e - s == 1).all() and (np.diff(s) > 0).all() and s[0] >= start and s[-1] < end
    assert (s % 4096 == 0).all()
    assert abs(s.size - pages * 0.01) < 5 * (pages * 0.01) ** 0.5
    again = touch_intervals(Touches(fraction=0.01, seed=5), start, end, 4096)
    assert (again[0] == s).all()  # reproducible with the seed


def _thp_tree(profile):
    """A fake transparent_hugepage tree as a 6.18 kernel has it, every switch as booted."""
    from hugecalc.calc.orders import anon_orders

    thp = kernelfs.SYS_THP
    files = {str(thp / "enabled"): "always [madvise] never\n",
             str(thp / "shmem_enabled"): "always within_size advise [never] deny force\n",
             str(thp / "use_zero_page"): "1\n"}
    for order in anon_orders(profile):
        d = kernelfs.thp_dir(profile.page_size << order)
        files[str(d / "enabled")] = ("always [inherit] madvise never\n" if order == anon_orders(profile)[-1]
                                     else "always inherit madvise [never]\n")
        files[str(d / "shmem_enabled")] = "always inherit within_size advise [never]\n"
    return files


def test_the_sysfs_sequence_of_verify_mthp_is_written_and_put_back(private_state):
    """Without root, against a recording of the sysfs tree: every THP switch off while the probe
    prepopulates, then the pass's switches, then every one put back, last changed first."""
    from hugecalc.calc.orders import PassShape, ThpSettings, pass_settings
    from hugecalc.profiles import load_profile
    from hugecalc.releases import parse_release
    from hugecalc.verify.mthp import set_pass_switches, thp_off

    x86 = load_profile("x86-64")
    thp = str(kernelfs.SYS_THP)
    p = pass_settings(x86, parse_release("6.18"), PassShape(), ThpSettings(enabled={64 << 10: "always"}), [])
    with kernelfs.Recording(_thp_tree(x86)) as kernel:
        before = dict(kernel.files)
        with Restorer() as restorer:
            thp_off(restorer)
            off = len(kernel.writes)
            set_pass_switches(restorer, x86, p)
            during = dict(kernel.files)
    prepopulate, the_pass, put_back = kernel.writes[:off], kernel.writes[off:-off], kernel.writes[-off:]
    assert prepopulate[:2] == [(f"{thp}/enabled", "never"), (f"{thp}/shmem_enabled", "never")]
    assert all(value == "never" for path, value in prepopulate if path.endswith("enabled"))
    assert (f"{thp}/use_zero_page", "1") in prepopulate
    assert the_pass[0] == (f"{thp}/enabled", "madvise")
    assert during[f"{thp}/hugepages-64kB/enabled"] == "always inherit madvise never\n".replace("always", "[always]")
    assert "[inherit]" in during[f"{thp}/hugepages-2048kB/enabled"]
    assert "[never]" in during[f"{thp}/hugepages-16kB/enabled"]
    # Each setting goes back to its value before the run, once, in the reverse order of first change.
    assert [path for path, _ in put_back] == [path for path, _ in reversed(prepopulate)]
    assert kernel.files == before
    assert not (private_state / "journal.json").exists()


def test_a_switch_the_kernel_lacks_is_refused_before_the_pass(private_state):
    from hugecalc.calc.orders import PassShape, ThpSettings, pass_settings
    from hugecalc.errors import HostError
    from hugecalc.profiles import load_profile
    from hugecalc.releases import parse_release
    from hugecalc.verify.mthp import set_pass_switches

    x86 = load_profile("x86-64")
    files = {k: v for k, v in _thp_tree(x86).items() if "hugepages-64kB" not in k}
    p = pass_settings(x86, parse_release("6.18"), PassShape(), ThpSettings(enabled={64 << 10: "always"}), [])
    with kernelfs.Recording(files) as kernel, pytest.raises(HostError, match="no 64K enabled switch"):
        with Restorer() as restorer:
            set_pass_switches(restorer, x86, p)
    assert kernel.files == files  # what it had changed is back
