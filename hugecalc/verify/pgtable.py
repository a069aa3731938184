"""``verify pgtable``: map and touch in a child process, and compare its VmPTE with the prediction."""

from __future__ import annotations

from hugecalc.machine import kernelfs
from hugecalc.errors import HostError
from hugecalc.profiles import Profile
from hugecalc.releases import Release
from hugecalc.machine.restore import Restorer
from hugecalc.units import ceil_div, fmt_size
from hugecalc.verify.common import (MAX_VERIFY_TOUCHES, VerifyResult, exact_check, placement, placement_note,
                                    require_free, require_root)


def touch_intervals(touches, start: int, end: int, page: int, table_pages: int = 512):
    """The exact byte intervals a verify run touches.  A random fraction is drawn per table, on
    demand: how many pages of each ``table_pages`` block are touched (Binomial), then which ones,
    so the work follows the pages touched, not the size of the mapping."""
    import numpy as np

    if touches.intervals is not None:
        return touches.intervals
    if touches.fraction is not None:
        rng = np.random.default_rng(touches.seed)
        first, pages = start // page, (end - start) // page
        bounds = np.unique(np.concatenate(([first, first + pages],
                                           np.arange(ceil_div(first, table_pages) * table_pages, first + pages,
                                                     table_pages))))
        sizes = np.diff(bounds)
        counts = rng.binomial(sizes, touches.fraction)
        if counts.sum() > MAX_VERIFY_TOUCHES:
            raise HostError(f"{int(counts.sum()):,} touches are too many to run; use a smaller --vma-size or fraction")
        chosen = np.concatenate([b + np.sort(rng.choice(n, k, replace=False))
                                 for b, n, k in zip(bounds[:-1], sizes, counts) if k] or [np.zeros(0, np.int64)])
        chosen = chosen.astype(np.int64) * page
        return chosen, chosen + 1
    stride = touches.stride or page
    if stride <= page:
        return np.array([start], dtype=np.int64), np.array([end], dtype=np.int64)
    points = np.arange(start, end, stride, dtype=np.int64)
    return points, points + 1


def allocate_hugepages(restorer: Restorer, size: int, count: int) -> None:
    """``count`` more hugepages of ``size`` in the pool (given back when the Restorer ends)."""
    nr_path = kernelfs.hugepage_dir(size) / "nr_hugepages"
    have = int(kernelfs.read_text(nr_path))
    free = int(kernelfs.read_text(nr_path.parent / "free_hugepages"))
    restorer.set(nr_path, str(have + count))
    if int(kernelfs.read_text(nr_path.parent / "free_hugepages")) < free + count:
        raise HostError(f"the kernel could not allocate {count} {fmt_size(size)} hugepages")


def allow_pmd_thp(restorer: Restorer, profile: Profile) -> None:
    """THP on for an madvise(MADV_HUGEPAGE) mapping: the top level and the PMD size, where off."""
    thp = kernelfs.SYS_THP / "enabled"
    if kernelfs.setting(thp) == "never":
        restorer.set(thp, "madvise")
    pmd_dir = kernelfs.thp_dir(profile.pmd_size) / "enabled"
    if kernelfs.exists(pmd_dir) and kernelfs.setting(pmd_dir) == "never":
        restorer.set(pmd_dir, "inherit")


def run_probe(spec: dict, restorer: Restorer) -> dict:
    """The probe maps and touches as ``spec`` says, then reports its VmPTE at each step."""
    import json
    import os
    import subprocess
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        restorer.scratch("file", f.name)
        json.dump(spec, f)
    try:
        proc = subprocess.run([sys.executable, "-m", "hugecalc.machine._probe", f.name, str(os.getpid())],
                              capture_output=True, text=True, timeout=600)
    finally:
        os.unlink(f.name)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise HostError(f"the probe process failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    out = json.loads(proc.stdout)
    if "error" in out:
        raise HostError(f"the probe process: {out['error']}")
    return out


def verify_pgtable(profile: Profile, release: Release, *, vma_size: int, vma_start: int | None, touches,
                   backing: str, after: str | None, notes: list[str]) -> VerifyResult:
    """Map and touch in a child process; compare its VmPTE deltas with the prediction.

    Kernel reference
    ----------------
    ``VmPTE`` (``mm_pgtables_bytes()``) counts PTE, PMD and PUD tables (v4.15+).
    """
    from hugecalc.calc.pgtable import Backing, compute_pgtable, mapping_bounds
    from hugecalc.calc.touches import Touches

    require_root("pgtable")
    mapping = Backing(profile, backing)
    start = mapping_bounds(profile, vma_size, vma_start, mapping)
    starts, ends = touch_intervals(touches, start, start + vma_size, profile.page_size)
    if len(starts) > MAX_VERIFY_TOUCHES:
        raise HostError(f"{len(starts):,} touches are too many to run; use a larger stride or smaller --vma-size")
    predicted = compute_pgtable(profile, release, vma_size=vma_size, vma_start=start,
                                touches=Touches(intervals=(starts, ends)), backing=backing, after=after, compare=False)
    require_free(vma_size if mapping.hugetlb else predicted.populated_bytes, "the run's pages")
    spec = {**placement(profile, start), "size": vma_size, "page_size": profile.page_size, "after": after,
            "intervals": [[int(a), int(b)] for a, b in zip(starts, ends)],
            "hugepage_size": mapping.unit if mapping.hugetlb else 0}
    with Restorer() as restorer:
        if mapping.hugetlb:
            allocate_hugepages(restorer, mapping.unit, vma_size // mapping.unit)
        elif mapping.thp:
            allow_pmd_thp(restorer, profile)
            spec["advice_before"] = "hugepage"
        else:
            spec["advice_before"] = "nohugepage"  # base pages only, whatever the host's THP setting
        out = run_probe(spec, restorer)
    note = placement_note(profile, start, out["start"])
    if note:
        notes.append(note)
    checks = [exact_check("page-table bytes after touching (VmPTE delta)", predicted.page_table_bytes,
                          (out["touched_kb"] - out["before_kb"]) << 10)]
    if after:
        checks.append(exact_check(f"page-table bytes after MADV_{after.upper()}", predicted.page_table_bytes_after,
                                  (out["after_kb"] - out["before_kb"]) << 10))
    return VerifyResult(command="verify pgtable", profile=profile.name, kernel=str(release),
                        inputs={**predicted.inputs, "running_kernel": kernelfs.running_release()}, checks=checks,
                        notes=notes)
