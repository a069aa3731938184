"""HVO on a captured machine: what its hugetlb pools free now, and with HVO switched on.

``vm.hugetlb_optimize_vmemmap`` applies to hugepages allocated after it is set: the pool a machine
has keeps the vmemmap it was allocated with.  So "now" is what the pools free as they stand
(everything, if the sysctl was on when they were allocated, as assumed here; nothing if it is off
or missing), and "what-if" is the same pools allocated with HVO on under the release's rules.
Getting there on the running machine means freeing and reallocating the hugepages: one hugepage
of free memory at a time, or the whole pool at once.

Kernel reference
----------------
``hugetlb_optimize_vmemmap`` sysctl and ``hugetlb_vmemmap_optimize_folio()`` in
``mm/hugetlb_vmemmap.c`` (applied when a hugepage is allocated); the figures of
``hugecalc.calc.vmemmap``.
"""

from __future__ import annotations

from typing import Iterator

from hugecalc.calc import explaining, per_profile
from hugecalc.calc.hvo import SizeRule, size_rule
from hugecalc.calc.vmemmap import compute_vmemmap
from hugecalc.profiles import Profile
from hugecalc.releases import Release
from hugecalc.result import Figure, Derivation, Model, Result, field
from hugecalc.units import fmt_bytes, fmt_size


class PoolRow(Model):
    hugepage_size_bytes: int = field("Hugepage size", "bytes")
    hugepages: int = field("Hugepages in the pool now", "count")
    hvo_now: bool = field("HVO on now")
    vmemmap_bytes: int = field("vmemmap of the pool", "bytes")
    saved_now_bytes: int = field("Net saving now", "bytes")
    saved_what_if_bytes: int = field("Net saving with HVO on", "bytes")
    gain_bytes: int = field("Gain", "bytes")
    realloc_step_bytes: int = field("Free memory needed to reallocate one hugepage", "bytes")
    realloc_pool_bytes: int = field("Free memory needed to reallocate the pool at once", "bytes")
    optimizable: bool = field("HVO optimizable")
    reason: str | None = field("Why not", default=None)
    self_hosted_hugepages: int = field("Hugepages in hot-plugged memory (HVO skips them)", "count", default=0)


class HostVmemmapResult(Result):
    command: str = "vmemmap"
    rows: list[PoolRow]
    mem_available_bytes: int | None = field("MemAvailable now", "bytes", default=None)

    def figures(self) -> dict[str, Figure]:
        out = {}
        for r in self.rows:
            out[f"saved now {fmt_size(r.hugepage_size_bytes)}"] = Figure(r.saved_now_bytes, "bytes")
            out[f"saved with HVO {fmt_size(r.hugepage_size_bytes)}"] = Figure(r.saved_what_if_bytes, "bytes")
        return out


def compute_hvo_now(profile: Profile, release: Release, pools: list[tuple[int, int]], hvo_now: int | None,
                    mem_available: int | None, zones: int = 1, memmap_on_memory: bool | None = None,
                    hotplugged: tuple[int, dict[int, int]] | None = None) -> HostVmemmapResult:
    """``pools``: (hugepage size, hugepages) as captured; ``hvo_now``: the sysctl (None: missing);
    ``hotplugged``: (bytes of hot-plugged RAM, its hugepages by size), None where not read.

    Kernel reference
    ----------------
    ``vm.hugetlb_optimize_vmemmap`` (Documentation/admin-guide/sysctl/vm.rst): "only affects
    hugepages allocated after it is set"; ``hugetlb_vmemmap_optimize_folio()``; with memmap_on_memory
    a hugepage in hot-plugged memory hosts its own vmemmap and is skipped (``PageVmemmapSelfHosted()``, 6.1+).
    """
    rows, notes, explain = [], [], []
    for size, count, self_hosted, rule in _pools(profile, release, pools, zones, memmap_on_memory, hotplugged):
        if rule is None:
            notes.append(f"{fmt_size(size)} pool: not a hugetlb size of profile {profile.name}; left out")
            continue
        saved_if = rule.saved_bytes(count - self_hosted)
        on = hvo_now == 1 and rule.optimizable
        rows.append(PoolRow(
            hugepage_size_bytes=size, hugepages=count, hvo_now=on, vmemmap_bytes=rule.vmemmap_bytes * count,
            saved_now_bytes=saved_if if on else 0, saved_what_if_bytes=saved_if, gain_bytes=0 if on else saved_if,
            realloc_step_bytes=size if count and not on and rule.optimizable else 0,
            realloc_pool_bytes=size * count if not on and rule.optimizable else 0,
            optimizable=rule.optimizable, reason=rule.reason, self_hosted_hugepages=self_hosted))
        if explaining():  # the what-if's own derivations: the pool (at least one hugepage) as if allocated with HVO on
            pool = compute_vmemmap(profile, release, hugepage_count=max(count - self_hosted, 1), hugepage_sizes=[size],
                                   zones=zones)
            explain += _derivations(fmt_size(size), count, hvo_now, on, saved_if, pool.explain)
    notes += _notes(release, rows, hvo_now, mem_available, memmap_on_memory, hotplugged)
    if not any(count for _, count in pools):
        notes.append("no hugetlb pool on this machine: give --pages for a what-if pool")
    return HostVmemmapResult(profile=profile.name, kernel=str(release),
                             inputs={"pools": [{"hugepage_size_bytes": s, "hugepages": n} for s, n in pools],
                                     "hugetlb_optimize_vmemmap": hvo_now, "zones": zones,
                                     "memmap_on_memory": memmap_on_memory},
                             rows=rows, mem_available_bytes=mem_available, notes=notes, explain=explain)


def _pools(profile: Profile, release: Release, pools: list[tuple[int, int]], zones: int, memmap_on_memory: bool | None,
           hotplugged: tuple[int, dict[int, int]] | None) -> Iterator[tuple[int, int, int, SizeRule | None]]:
    """Each pool: (size, hugepages, those in hot-plugged memory, its size's rule; None: not a size of the profile)."""
    skipped = hotplugged[1] if hotplugged and memmap_on_memory and release.version >= (6, 1) else None
    rules = per_profile(profile, (_pools, release, zones), dict)  # size -> its rule, for this release and zones
    for size, count in pools:
        rule = rules[size] if size in rules else rules.setdefault(size, size_rule(profile, release, size, zones))
        # The hugepages in hot-plugged memory keep their vmemmap: the saving is that of the others.
        yield size, count, min(skipped.get(size, 0), count) if skipped else 0, rule


def hvo_now_figures(profile: Profile, release: Release, pools: list[tuple[int, int]], hvo_now: int | None,
                    zones: int = 1, memmap_on_memory: bool | None = None,
                    hotplugged: tuple[int, dict[int, int]] | None = None) -> dict[str, int]:
    """The sums over pools of ``compute_hvo_now``'s figures, without its rows, notes and derivations
    (``fleet vmemmap``: a host's figures in microseconds)."""
    pool_bytes = hugepages = now = what_if = 0
    for size, count, self_hosted, rule in _pools(profile, release, pools, zones, memmap_on_memory, hotplugged):
        if rule is not None:
            pool_bytes += size * count
            hugepages += count
            saved_if = rule.saved_bytes(count - self_hosted)
            what_if += saved_if
            if hvo_now == 1 and rule.reason is None:
                now += saved_if
    return {"pool_bytes": pool_bytes, "hugepages": hugepages, "saved_now_bytes": now,
            "saved_what_if_bytes": what_if, "gain_bytes": what_if - now}


def _notes(release: Release, rows: list[PoolRow], hvo_now: int | None, mem_available: int | None,
           memmap_on_memory: bool | None, hotplugged: tuple[int, dict[int, int]] | None) -> list[str]:
    notes = []
    if hvo_now is None:
        why = ("config, struct page size, or memmap_on_memory" if release.version < (6, 1) else
               "config or struct page size; from 6.1 memmap_on_memory no longer removes it")
        notes.append(f"vm.hugetlb_optimize_vmemmap does not exist on this machine: its kernel cannot do HVO ({why}); "
                     f"the what-if is for the same pools under {release}'s rules")
    elif hvo_now == 1:
        notes.append("HVO is on: the pools are taken to have been allocated with it on (the sysctl only applies to "
                     "hugepages allocated after it is set)")
    elif any(r.gain_bytes for r in rows):
        gain = sum(r.gain_bytes for r in rows)
        notes.append(f"HVO is off: turning it on (sysctl vm.hugetlb_optimize_vmemmap=1) frees {fmt_bytes(gain)} once "
                     "the pools are reallocated; it only applies to hugepages allocated after it is set")
        if mem_available is not None:
            step = max(r.realloc_step_bytes for r in rows)
            notes.append(f"MemAvailable is {fmt_bytes(mem_available)}: reallocating one hugepage at a time needs "
                         f"{fmt_bytes(step)} free and contiguous"
                         + ("" if mem_available >= step else " — not available now"))
    if memmap_on_memory and release.version >= (6, 1):
        rule = "hosts its own vmemmap and is not optimized (PageVmemmapSelfHosted(), 6.1+)"
        if hotplugged is None:
            notes.append(f"memory_hotplug.memmap_on_memory is on: a hugepage in memory hot-plugged with it {rule}; "
                         "where it sits was not read (root reads /proc/iomem and /proc/kpageflags), so the savings "
                         "shown are at most what the pools give: less by the hugepages in such memory")
        else:
            n = sum(r.self_hosted_hugepages for r in rows)
            notes.append(f"memory_hotplug.memmap_on_memory is on: a hugepage in memory hot-plugged with it {rule}; "
                         f"{n:,} of the pools' hugepages sit in the {fmt_bytes(hotplugged[0])} a driver hot-plugged "
                         "(/proc/iomem 'System RAM (virtio_mem|kmem)') and are left out of the savings; memory ACPI "
                         "hot-plugged reads as boot memory and is not told apart")
    return notes


def _derivations(scope: str, count: int, hvo_now: int | None, on: bool, saved_if: int,
                 what_if: list[Derivation]) -> list[Derivation]:
    """The what-if's own derivations (the pool as if allocated with HVO on), then now and the gain."""
    sysctl = "missing" if hvo_now is None else str(hvo_now)
    return [d.model_copy(update={"scope": f"{scope}, with HVO on"}) for d in what_if] + [
        Derivation(scope=scope, figure="Net saving now",
                   formula=f"vm.hugetlb_optimize_vmemmap {sysctl}: " + (
                       f"the {count:,} hugepages taken as allocated with it on = {fmt_bytes(saved_if)}" if on else
                       f"0 B: the {count:,} hugepages keep all their vmemmap"),
                   rule="the sysctl only affects hugepages allocated after it is set "
                        "(Documentation/admin-guide/sysctl/vm.rst); hugetlb_vmemmap_optimize_folio() in "
                        "mm/hugetlb_vmemmap.c runs when a hugepage is allocated"),
        Derivation(scope=scope, figure="Gain",
                   formula=f"{fmt_bytes(saved_if)} with HVO on - {fmt_bytes(saved_if if on else 0)} now = "
                           f"{fmt_bytes(0 if on else saved_if)}",
                   rule="reached by reallocating the pool with the sysctl on: set_max_huge_pages() in mm/hugetlb.c "
                        "shrinks and grows the pool one hugepage at a time"),
    ]
