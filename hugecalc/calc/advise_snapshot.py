"""``hugecalc advise --pid PID`` (live, or ``--host FILE --pid PID``): the search of
``hugecalc.calc.advise`` over a snapshot of a process instead of a record.

Each setting replays the process's present pages (``hugecalc.calc.replay``: each anonymous or shmem
mapping's present pages faulted in again, in address order).  A snapshot knows neither the order
of the faults nor how the mappings stood at each, so every figure carries the bound the snapshot
replay states (:func:`hugecalc.calc.replay.snapshot_bound`); a record is the exact answer.

Kernel reference
----------------
As ``mthp --pid``: ``thp_vma_allowable_orders()``, ``alloc_anon_folio()``,
``shmem_allowable_huge_orders()``; ``mm_pgtables_bytes()`` (VmPTE).
"""

from __future__ import annotations

import numpy as np

from hugecalc.calc.advise import AdviseResult, figures_of, judged_result, search, with_shmem
from hugecalc.calc.switches import settings_to_try
from hugecalc.calc.orders import PassShape, ThpSettings, allowed_orders, anon_orders, pass_settings
from hugecalc.calc.replay import UFFD_FLAGS, replay, snapshot_bound
from hugecalc.errors import InputError
from hugecalc.machine.capture import REPLAYED_KINDS
from hugecalc.profiles import Profile
from hugecalc.releases import SHMEM_MTHP, Release


def compute_advise_snapshot(profile: Profile, release: Release, pid: int, comm: str, present: list,
                            disabled: bool, now: ThpSettings, max_bloat: float | None = None,
                            max_memory: int | None = None) -> AdviseResult:
    """Every setting worth trying, replayed over the process's present pages (``present``: its
    PresentVmas; ``disabled``: it set PR_SET_THP_DISABLE), judged.

    Kernel reference
    ----------------
    As ``mthp --pid``: ``thp_vma_allowable_orders()``, ``alloc_anon_folio()`` (mm/memory.c),
    ``shmem_allowable_huge_orders()`` (mm/shmem.c); ``mm_pgtables_bytes()`` (VmPTE).
    """
    if not anon_orders(profile):
        raise InputError(f"profile {profile.name} offers no THP size: nothing to advise", field="profile_name")
    vmas = [v for v in present if REPLAYED_KINDS.get(v.kind) and v.kernel_page_bytes == profile.page_size]
    if not any(int((v.ends - v.starts).sum()) for v in vmas):
        raise InputError(f"process {pid} has no anonymous or shmem page present: nothing to advise", field="pid")
    def replayed_all(tried: list) -> tuple[list[dict], np.ndarray, int]:
        allowed = np.array([[_mask(profile, release, s, v, disabled) for v in vmas] for _, s in tried],
                           dtype=np.int64).reshape(len(tried), len(vmas))

        def run(batch: list[int]) -> list[dict]:
            out = []
            for i in batch:
                r = replay(profile, release, present, tried[i][1], tried[i][0], disabled)
                folios = {f.size_bytes: f.count for f in r.folios}
                largest = max(folios, default=profile.page_size)
                used = sum(1 << (s // profile.page_size).bit_length() - 1 for s in folios if s > profile.page_size)
                out.append(figures_of(profile, r.populated_bytes, r.faults, r.tlb_entries, r.page_table_bytes,
                                      largest, folios, used))
            return out

        figures, replayed = search(allowed, run, 1)
        return figures, allowed, replayed

    tried = settings_to_try(profile, release, now) + [("now", now)]
    figures, allowed, replayed = replayed_all(tried)
    parts, shmem_note = 0, None
    if release.has(SHMEM_MTHP) and any(REPLAYED_KINDS[v.kind] == "shmem" for v in vmas):
        tried, figures, allowed, replayed, parts, shmem_note = with_shmem(profile, tried, figures, allowed, replayed,
                                                                          replayed_all, "the process")
    result = judged_result(profile, release, tried, figures, allowed, replayed,
                           lambda s: [_mask(profile, release, s, v, disabled) for v in vmas], max_bloat, max_memory,
                           source="the snapshot",
                           inputs={"pid": pid, "max_bloat": max_bloat, "max_memory": max_memory},
                           pid=pid, recorded_faults=0, also_tried=parts)
    result.notes[:0] = [f"process {pid} ({comm}) replayed from a snapshot of its present pages",
                        snapshot_bound(present, profile.page_size)]
    if shmem_note:
        result.notes.append(shmem_note)
    return result


def _mask(profile: Profile, release: Release, settings: ThpSettings, v, disabled: bool) -> int:
    """The orders a fault in the captured VMA ``v`` may get under ``settings`` (as the replay's)."""
    if disabled or UFFD_FLAGS & set(v.flags):
        return 0
    shape = PassShape(memory=REPLAYED_KINDS[v.kind], madvise="hg" in v.flags and "nh" not in v.flags,
                      nohugepage="nh" in v.flags, vma_size=v.end - v.start, vma_start=v.start)
    p = pass_settings(profile, release, shape, settings, [])
    return sum(1 << o for o in allowed_orders(profile, release, p, [], reason=False)[0])
