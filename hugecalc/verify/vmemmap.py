"""``verify vmemmap``: allocate hugepages with HVO on and measure the vmemmap they free."""

from __future__ import annotations

from hugecalc.machine import kernelfs
from hugecalc.calc.vmemmap import compute_vmemmap
from hugecalc.errors import HostError
from hugecalc.profiles import Profile
from hugecalc.releases import HVO_SHARED_TAIL, Release
from hugecalc.machine.restore import Restorer
from hugecalc.units import fmt_size
from hugecalc.verify.common import Check, VerifyResult, require_free, require_root


def verify_vmemmap(profile: Profile, release: Release, size: int, count: int, notes: list[str]) -> VerifyResult:
    """Allocate ``count`` hugepages of ``size`` with HVO on and measure the vmemmap they free.

    Kernel reference
    ----------------
    ``free_vmemmap_page()`` in ``mm/hugetlb_vmemmap.c`` lowers ``nr_memmap_pages`` (or
    ``nr_memmap_boot_pages``) by one per freed page (``memmap_pages_add(-1)``), and
    ``hugetlb_vmemmap_restore_folio()`` raises it again when the hugepage is released.
    """
    require_root("vmemmap")
    if not kernelfs.exists(kernelfs.HVO_SYSCTL):
        raise HostError(
            f"{kernelfs.HVO_SYSCTL} is missing: this kernel has no HVO (CONFIG_HUGETLB_PAGE_OPTIMIZE_VMEMMAP "
            "is off, struct page is not a power of two, or memmap_on_memory is on)"
        )
    start = kernelfs.memmap_pages()  # fails clearly when the counter is missing
    nr_path = kernelfs.hugepage_dir(size) / "nr_hugepages"
    require_free(count * size, f"{count} x {fmt_size(size)} hugepages")
    freed_per = compute_vmemmap(profile, release, hugepage_count=1, hugepage_sizes=[size]).rows[0]
    with Restorer() as restorer:
        restorer.set(kernelfs.HVO_SYSCTL, "1")
        before_nr = int(kernelfs.read_text(nr_path))
        baseline = kernelfs.memmap_pages()
        restorer.set(nr_path, str(before_nr + count))
        allocated = int(kernelfs.read_text(nr_path)) - before_nr
        after_alloc = kernelfs.memmap_pages()
        kernelfs.write_text(nr_path, str(before_nr))
        after_release = kernelfs.memmap_pages()
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
    if release.has(HVO_SHARED_TAIL) and before_nr == 0:
        # The first hugepage of this size in its zone allocates the shared read-only tail page.
        predicted -= 1
        notes.append(f"{HVO_SHARED_TAIL.name}: the first {fmt_size(size)} hugepage allocates it, one page less "
                     "(one zone assumed)")
    checks = [
        Check(figure=f"vmemmap pages freed by {allocated} x {fmt_size(size)}",
              predicted=predicted, measured=baseline - after_alloc, match=baseline - after_alloc == predicted),
        Check(figure="vmemmap pages restored on release",
              predicted=predicted, measured=after_release - after_alloc,
              match=after_release - after_alloc == predicted),
    ]
    return VerifyResult(
        command="verify vmemmap", profile=profile.name, kernel=str(release),
        inputs={"hugepage_size_bytes": size, "count": count, "running_kernel": kernelfs.running_release()},
        checks=checks, notes=notes,
    )
