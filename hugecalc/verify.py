"""``hugecalc verify``: run a real experiment on the running kernel, predicted beside measured.

The prediction comes from the same ``compute_*`` the calculator uses; the measurement from the
kernel's own counters.  All settings go through :class:`hugecalc.host.Restorer`.
"""

from __future__ import annotations

from hugecalc import host
from hugecalc.calc.vmemmap import compute_vmemmap
from hugecalc.errors import HostError
from hugecalc.profiles import Profile
from hugecalc.releases import Release
from hugecalc.result import Model, Result, field
from hugecalc.units import fmt_bytes, fmt_size

MIN_SPARE_BYTES = 256 << 20  # leave this much MemAvailable after the allocation


class Check(Model):
    """One figure, predicted and measured."""

    figure: str = field("Figure")
    predicted: int = field("Predicted", "count")
    measured: int = field("Measured", "count")
    match: bool = field("Match")


class VerifyResult(Result):
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.match for c in self.checks)


def _tables_maybe_present(maps: str, profile: Profile, levels: list, starts, ends, start: int, end: int) -> int:
    """VmPTE bytes of the tables the mapping needs that the probe may already have had: those whose
    range it shares with the mappings listed in ``maps`` (its /proc/self/maps before the mmap).
    The kernel's delta can be smaller by exactly these whole tables."""
    from hugecalc.calc._jit import call
    from hugecalc.calc.pgtable import _distinct_blocks

    others = []
    for line in maps.splitlines():
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        if lo < profile.user_va_bytes:  # not [vsyscall], which is kernel address space
            others.append((lo, hi))
    total = 0
    for row in levels:
        if not row.in_vmpte:
            continue
        lvl = profile.level(row.level)
        span = profile.table_span_bytes(row.level)
        merged: list[list[int]] = []
        for a, b in sorted((lo // span, (hi - 1) // span) for lo, hi in others):
            if merged and a <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        for a, b in merged:
            lo, hi = max(a * span, start), min((b + 1) * span, end)
            if lo < hi:
                total += int(call(_distinct_blocks, starts, ends, span, lo, hi)) * lvl.entries * lvl.entry_bytes
    return total


def _table_check(figure: str, predicted: int, measured: int, maybe_present: int) -> Check:
    """Exact, or smaller by at most the tables that may already have existed."""
    ok = measured == predicted or (maybe_present > 0 and predicted - maybe_present <= measured <= predicted)
    return Check(figure=figure, predicted=predicted, measured=measured, match=ok)


def _require_free(need_bytes: int, what: str) -> None:
    """Refuse a run that would leave less than MIN_SPARE_BYTES of MemAvailable."""
    available = host.read_keyed(host.PROC / "meminfo")["MemAvailable"] << 10
    need = need_bytes + MIN_SPARE_BYTES
    if available < need:
        raise HostError(
            f"not enough free memory: {what} need {fmt_bytes(need)} available (with {fmt_bytes(MIN_SPARE_BYTES)} "
            f"to spare), MemAvailable is {fmt_bytes(available)}"
        )


def _require_root(what: str) -> None:
    if not host.is_root():
        raise HostError(f"verify {what} changes kernel settings and runs an experiment on them: run it as root")


def verify_vmemmap(profile: Profile, release: Release, size: int, count: int, notes: list[str]) -> VerifyResult:
    """Allocate ``count`` hugepages of ``size`` with HVO on and measure the vmemmap they free.

    Kernel reference
    ----------------
    ``free_vmemmap_page()`` in ``mm/hugetlb_vmemmap.c`` lowers ``nr_memmap_pages`` (or
    ``nr_memmap_boot_pages``) by one per freed page (``memmap_pages_add(-1)``), and
    ``hugetlb_vmemmap_restore_folio()`` raises it again when the hugepage is released.
    """
    _require_root("vmemmap")
    if not host.HVO_SYSCTL.exists():
        raise HostError(
            f"{host.HVO_SYSCTL} is missing: this kernel has no HVO (CONFIG_HUGETLB_PAGE_OPTIMIZE_VMEMMAP "
            "is off, struct page is not a power of two, or memmap_on_memory is on)"
        )
    start = host.memmap_pages()  # fails clearly when the counter is missing
    nr_path = host.hugepage_dir(size) / "nr_hugepages"
    _require_free(count * size, f"{count} x {fmt_size(size)} hugepages")
    freed_per = compute_vmemmap(profile, release, hugepage_count=1, hugepage_sizes=[size]).rows[0]
    with host.Restorer() as restorer:
        restorer.set(host.HVO_SYSCTL, "1")
        before_nr = int(host.read_text(nr_path))
        baseline = host.memmap_pages()
        restorer.set(nr_path, str(before_nr + count))
        allocated = int(host.read_text(nr_path)) - before_nr
        after_alloc = host.memmap_pages()
        host.write_text(nr_path, str(before_nr))
        after_release = host.memmap_pages()
    if allocated < count:
        notes.append(
            f"the kernel allocated {allocated} of the {count} hugepages asked for "
            "(fragmented memory); the prediction is for the pages it allocated"
        )
    if allocated == 0:
        raise HostError(f"the kernel could not allocate any {fmt_size(size)} hugepage")
    if start != baseline:
        notes.append(f"nr_memmap_pages moved by {baseline - start} between two reads before the test")
    predicted = allocated * freed_per.freed_pages_per_hugepage
    checks = [
        Check(figure=f"vmemmap pages freed by {allocated} x {fmt_size(size)}",
              predicted=predicted, measured=baseline - after_alloc, match=baseline - after_alloc == predicted),
        Check(figure="vmemmap pages restored on release",
              predicted=predicted, measured=after_release - after_alloc,
              match=after_release - after_alloc == predicted),
    ]
    return VerifyResult(
        command="verify vmemmap", profile=profile.name, kernel=str(release),
        inputs={"hugepage_size_bytes": size, "count": count, "running_kernel": host.running_release()},
        checks=checks, notes=notes,
    )


# --- pgtable ---------------------------------------------------------------------------------

MAX_VERIFY_TOUCHES = 4 << 20


def touch_intervals(touches, start: int, end: int, page: int):
    """The exact byte intervals a verify run touches (random fractions drawn here, per page)."""
    import numpy as np

    if touches.intervals is not None:
        return touches.intervals
    if touches.fraction is not None:
        rng = np.random.default_rng(touches.seed)
        pages = (end - start) // page
        if pages > (64 << 20):
            raise HostError(f"verify draws every page of the mapping: {pages:,} pages is too many; use a smaller --vsize")
        chosen = np.flatnonzero(rng.random(pages) < touches.fraction).astype(np.int64)
        return start + chosen * page, start + chosen * page + 1
    stride = touches.stride or page
    if stride <= page:
        return np.array([start], dtype=np.int64), np.array([end], dtype=np.int64)
    points = np.arange(start, end, stride, dtype=np.int64)
    return points, points + 1


def verify_pgtable(profile: Profile, release: Release, *, vsize: int, vma_start: int | None, touches,
                   backing: str, after: str | None, notes: list[str]) -> VerifyResult:
    """Map and touch in a child process; compare its VmPTE deltas with the prediction.

    Kernel reference
    ----------------
    ``VmPTE`` (``mm_pgtables_bytes()``) counts PTE, PMD and PUD tables (v4.15+).
    """
    import json
    import os
    import subprocess
    import sys
    import tempfile

    from hugecalc.calc.pgtable import Backing, Touches, _mapping_bounds, compute_pgtable

    _require_root("pgtable")
    page = profile.page_size
    mapping = Backing(profile, backing)
    start = _mapping_bounds(profile, vsize, vma_start, mapping)
    end = start + vsize
    starts, ends = touch_intervals(touches, start, end, page)
    if len(starts) > MAX_VERIFY_TOUCHES:
        raise HostError(f"{len(starts):,} touches are too many to run; use a larger stride or smaller --vsize")
    exact = Touches(intervals=(starts, ends))
    predicted = compute_pgtable(profile, release, vsize=vsize, vma_start=start, touches=exact,
                                backing=backing, after=after, compare=False)
    _require_free(vsize if mapping.hugetlb else predicted.populated_bytes, "the run's pages")
    spec = {"start": start, "size": vsize, "page_size": page, "after": after,
            "intervals": [[int(a), int(b)] for a, b in zip(starts, ends)]}
    with host.Restorer() as restorer:
        if mapping.hugetlb:
            hp_size = mapping.unit
            nr_path = host.hugepage_dir(hp_size) / "nr_hugepages"
            have = int(host.read_text(nr_path))
            free = int(host.read_text(nr_path.parent / "free_hugepages"))
            restorer.set(nr_path, str(have + vsize // hp_size))
            if int(host.read_text(nr_path.parent / "free_hugepages")) < free + vsize // hp_size:
                raise HostError(f"the kernel could not allocate {vsize // hp_size} {fmt_size(hp_size)} hugepages")
            spec["hugepage_size"] = hp_size
        else:
            spec["hugepage_size"] = 0
            thp = host.SYS_THP / "enabled"
            if mapping.thp:
                if host.setting(thp) == "never":
                    restorer.set(thp, "madvise")
                pmd_dir = host.SYS_THP / f"hugepages-{profile.pmd_size >> 10}kB" / "enabled"
                if pmd_dir.exists() and host.setting(pmd_dir) == "never":
                    restorer.set(pmd_dir, "inherit")
                spec["advice_before"] = "hugepage"
            else:
                spec["advice_before"] = "nohugepage"  # base pages only, whatever the host's THP setting
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(spec, f)
        try:
            proc = subprocess.run([sys.executable, "-m", "hugecalc._probe", f.name],
                                  capture_output=True, text=True, timeout=600)
        finally:
            os.unlink(f.name)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise HostError(f"the probe process failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    out = json.loads(proc.stdout)
    if "error" in out:
        raise HostError(f"the probe process: {out['error']}")
    # Tables the child already had whose range our touches also need: they make the kernel's
    # delta smaller by whole tables.  Found from its /proc/self/maps before the mmap.
    maybe_present = _tables_maybe_present(out["maps"], profile, predicted.levels, starts, ends, start, end)
    measured = (out["touched_kb"] - out["before_kb"]) << 10
    if maybe_present:
        notes.append(f"the probe process already had mappings sharing table ranges with this one: up to "
                     f"{fmt_bytes(maybe_present)} of the predicted tables may already have existed, so the "
                     f"kernel's delta may be smaller by whole tables")
    checks = [_table_check("page-table bytes after touching (VmPTE delta)", predicted.page_table_bytes,
                           measured, maybe_present)]
    if after:
        checks.append(_table_check(f"page-table bytes after MADV_{after.upper()}", predicted.page_table_bytes_after,
                                   (out["after_kb"] - out["before_kb"]) << 10, maybe_present))
    return VerifyResult(
        command="verify pgtable", profile=profile.name, kernel=str(release),
        inputs={**predicted.inputs, "running_kernel": host.running_release()},
        checks=checks, notes=notes,
    )


# --- mthp ------------------------------------------------------------------------------------


def _thp_stats(profile: Profile, stat: str) -> dict[int, int]:
    """Per-size counter from transparent_hugepage/hugepages-<size>kB/stats/<stat>."""
    out = {}
    for d in host.SYS_THP.glob("hugepages-*kB"):
        path = d / "stats" / stat
        if path.exists():
            out[int(d.name.removeprefix("hugepages-").removesuffix("kB")) << 10] = int(host.read_text(path))
    return out


def verify_mthp(profile: Profile, release: Release, kw: dict, notes: list[str]) -> VerifyResult:
    """Run the pass on the running kernel and compare faults and folios by size.

    Kernel reference
    ----------------
    ``count_mthp_stat(order, MTHP_STAT_ANON_FAULT_ALLOC)`` in ``alloc_anon_folio()`` and
    ``do_huge_pmd_anonymous_page()``; ``MTHP_STAT_SHMEM_ALLOC`` in ``shmem_alloc_and_add_folio()``.
    """
    import json
    import os
    import subprocess
    import sys
    import tempfile

    from hugecalc.calc.mthp import compute_mthp

    _require_root("mthp")
    if not (host.SYS_THP / "enabled").exists():
        raise HostError(f"{host.SYS_THP} is missing: this kernel has no THP")
    predicted = compute_mthp(profile, release, **kw)
    i = predicted.inputs
    memory = i["memory"]
    page = profile.page_size
    _require_free(predicted.populated_bytes, "the pass's pages")
    if i["vma_size_bytes"] // i["touch_stride_bytes"] > MAX_VERIFY_TOUCHES:
        raise HostError("too many touches to run; use a larger --touch-stride or a smaller --vma-size")
    per_size = {int(d.name.removeprefix("hugepages-").removesuffix("kB")) << 10: d
                for d in host.SYS_THP.glob("hugepages-*kB")}
    stat = "anon_fault_alloc" if memory == "anon" else "shmem_alloc"
    spec = {"mode": "mthp", "memory": memory, "start": i["vma_start"], "size": i["vma_size_bytes"],
            "file_offset": i["file_offset_bytes"], "stride": i["touch_stride_bytes"],
            "prepopulated_stride": i["prepopulated_stride_bytes"], "access": i["access"],
            "advice": (["hugepage"] if i["madvise"] else []) + (["nohugepage"] if i["nohugepage"] else [])}
    with host.Restorer() as restorer, tempfile.TemporaryDirectory() as tmp:
        # Prepopulate with every THP size off, so that those pages are base pages.
        restorer.set(host.SYS_THP / "enabled", "never")
        restorer.set(host.SYS_THP / "shmem_enabled", "never")
        for d in per_size.values():
            for knob in ("enabled", "shmem_enabled"):
                if (d / knob).exists():
                    restorer.set(d / knob, "never")
        restorer.set(host.SYS_THP / "use_zero_page", "1")
        mount = None
        if memory == "tmpfs":
            mount = os.path.join(tmp, "mnt")
            os.mkdir(mount)
            opts = f"huge={i['huge']},size={i['file_offset_bytes'] + i['vma_size_bytes'] + (64 << 20)}"
            if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "hugecalc", mount]).returncode:
                raise HostError(f"cannot mount a tmpfs with {opts}")
            spec["path"] = os.path.join(mount, "file")
        spec_path = os.path.join(tmp, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        try:
            with subprocess.Popen([sys.executable, "-m", "hugecalc._probe", spec_path], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
                try:
                    ready = json.loads(child.stdout.readline() or "{}")
                    if "ready" not in ready:
                        raise HostError(f"the probe process: {ready.get('error') or 'exited before the pass'}")
                    # The configuration of the pass.
                    restorer.set(host.SYS_THP / "enabled", i["top_level"])
                    if memory == "shmem":
                        restorer.set(host.SYS_THP / "shmem_enabled", i["huge"])
                    for knob, modes in (("enabled", i["enabled"]), ("shmem_enabled", i["shmem_enabled"])):
                        for label, mode in modes.items():
                            _set_size(restorer, per_size, label, knob, mode)
                    before = _thp_stats(profile, stat)
                    child.stdin.write("go\n")
                    child.stdin.flush()
                    out = json.loads(child.stdout.readline() or "{}")
                    after = _thp_stats(profile, stat)
                    if "faults" in out:
                        mapped, unclassified = host.folio_sizes(
                            child.pid, i["vma_start"], i["vma_start"] + i["vma_size_bytes"], page)
                finally:
                    child.kill()
        finally:
            if mount:
                subprocess.run(["umount", mount])
    if "faults" not in out:
        raise HostError(f"the probe process: {out.get('error') or 'no result'}")
    if out["null_pass_faults"]:
        notes.append(f"the touch loop itself took {out['null_pass_faults']} faults in a null pass; subtracted")
    measured_faults = out["faults"] - out["null_pass_faults"]
    checks = [Check(figure="page faults of the pass", predicted=predicted.faults, measured=measured_faults,
                    match=predicted.faults == measured_faults)]
    import numpy as np

    start, end = i["vma_start"], i["vma_start"] + i["vma_size_bytes"]
    whole = (np.array([start], dtype=np.int64), np.array([end], dtype=np.int64))
    maybe_present = _tables_maybe_present(out["maps"], profile, _mthp_levels(profile, release, predicted), *whole,
                                          start, end)
    if maybe_present:
        notes.append(f"the probe process already had mappings sharing table ranges with the VMA: up to "
                     f"{fmt_bytes(maybe_present)} of the tables may already have existed")
    checks.append(_table_check("page-table bytes (VmPTE delta)", predicted.page_table_bytes,
                               (out["after_kb"] - out["mapped_kb"]) << 10, maybe_present))
    # Folios by size: the child's own, from its pagemap and /proc/kpageflags (exact whatever else
    # runs); the prepopulated base pages are there too.  The system-wide stats/ counters are shown
    # beside them for reference, and catch any other process that faulted during the pass.
    folios = {f.size_bytes: f.count for f in predicted.folios}
    n_pre = len(range(start, end, i["prepopulated_stride_bytes"])) if i["prepopulated_stride_bytes"] else 0
    folios[page] = folios.get(page, 0) + n_pre
    for size in sorted(set(mapped) | set(folios)):
        want, got = folios.get(size, 0), mapped.get(size, 0)
        checks.append(Check(figure=f"{fmt_size(size)} folios mapped (pagemap, kpageflags)", predicted=want,
                            measured=got, match=got == want or (unclassified > 0 and got <= want)))
    if unclassified:
        # Pages kpageflags reports no flags for: they must account exactly for the folios not seen.
        missing = sum((folios.get(s, 0) - mapped.get(s, 0)) * s for s in folios) // page
        checks.append(Check(figure="pages kpageflags could not classify = pages of unseen folios",
                            predicted=missing, measured=unclassified, match=missing == unclassified))
        notes.append(f"{unclassified} mapped pages read as 0 in /proc/kpageflags and could not be classified")
    noisy = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    for size, got in sorted(noisy.items()):
        want = folios.get(size, 0) if size != page else 0
        if size != page and got != want:
            notes.append(f"stats/{stat} for {fmt_size(size)} moved by {got}, not {want}: the counters are "
                         "system-wide, and allocations outside this VMA (the probe's own interpreter, other "
                         "processes) count there too")
    return VerifyResult(command="verify mthp", profile=profile.name, kernel=str(release),
                        inputs={**i, "running_kernel": host.running_release()}, checks=checks, notes=notes)


def _mthp_levels(profile: Profile, release: Release, result) -> list:
    from hugecalc.calc.pgtable import _level_row

    return [_level_row(profile, release, name, n) for name, n in result.tables.items()]


def _set_size(restorer: host.Restorer, per_size: dict, label: str, knob: str, mode: str) -> None:
    from hugecalc.units import parse_size

    d = per_size.get(parse_size(label))
    if d is None or not (d / knob).exists():
        if mode != "never":
            raise HostError(f"the running kernel has no {label} {knob} switch")
        return
    restorer.set(d / knob, mode)
