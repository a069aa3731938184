"""The folios a process maps, by size, from its pagemap entries and /proc/kpageflags.

Kernel reference
----------------
``pagemap_pmd_range()`` (fs/proc/task_mmu.c: PFN, present bit 63); ``stable_page_flags()``
(fs/proc/page.c: KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL, KPF_ZERO_PAGE; 0 for a PFN it cannot read).
"""

from __future__ import annotations

import os

import numpy as np

from hugecalc.errors import HostError
from hugecalc.machine import kernelfs


def kpageflags(pfns: np.ndarray) -> np.ndarray | None:
    """/proc/kpageflags for these PFNs, read in spans (a folio's pages are consecutive); None
    where it cannot be read (not root)."""
    out = np.zeros(pfns.shape[0], dtype=np.uint64)
    if pfns.size == 0:
        return out
    try:
        fd = kernelfs.open_fd(kernelfs.PROC / "kpageflags")
    except OSError:
        return None
    try:
        order = np.argsort(pfns, kind="stable")
        sorted_pfns = pfns[order]
        breaks = np.flatnonzero(np.diff(sorted_pfns) > 4096) + 1
        got = np.empty(pfns.shape[0], dtype=np.uint64)
        for chunk in np.split(np.arange(sorted_pfns.shape[0]), breaks):
            lo, hi = int(sorted_pfns[chunk[0]]), int(sorted_pfns[chunk[-1]])
            raw = os.pread(fd, (hi - lo + 1) * 8, lo * 8)
            table = np.frombuffer(raw.ljust((hi - lo + 1) * 8, b"\0"), dtype=np.uint64)
            got[chunk] = table[sorted_pfns[chunk] - lo]
        out[order] = got
    finally:
        os.close(fd)
    return out


def folio_counts(entries: np.ndarray, page: int) -> tuple[dict[str, int] | None, int, int]:
    """Folios mapped in one VMA by size, from its pagemap entries (in address order): a compound
    head and the tails that follow at consecutive PFNs, or a lone page; the zero page is none.
    Vectorized; None where kpageflags is unreadable.  Also the pages that cannot be classified:
    those kpageflags reads as 0, and the pages of a folio such a page cuts (seen only in part);
    and the present pages that map the shared (huge) zero page (KPF_ZERO_PAGE: read, never written)."""
    present = (entries & np.uint64(kernelfs.PAGEMAP_PRESENT)) != 0
    pfns = (entries & np.uint64(kernelfs.PAGEMAP_PFN_MASK)).astype(np.int64)
    flags = np.zeros(entries.shape[0], dtype=np.uint64)
    idx = np.flatnonzero(present)
    read = kpageflags(pfns[idx])
    if read is None:
        return None, 0, 0
    flags[idx] = read
    unknown = present & (flags == 0)
    zero = (flags & np.uint64(kernelfs.KPF_ZERO_PAGE)) != 0
    real = present & ~unknown & ~zero
    tail = real & ((flags & np.uint64(kernelfs.KPF_COMPOUND_TAIL)) != 0)
    head = real & ((flags & np.uint64(kernelfs.KPF_COMPOUND_HEAD)) != 0)
    cont = np.zeros_like(tail)
    cont[1:] = tail[1:] & real[:-1] & (pfns[1:] == pfns[:-1] + 1)
    starts = real & ~cont
    group = np.cumsum(starts) - 1
    lengths = np.bincount(group[real], minlength=int(starts.sum())) if real.any() else np.zeros(0, dtype=np.int64)
    # A folio is seen whole when its group starts at its head (or is a lone non-compound page), is a
    # power of two long, and the page at the next PFN is not one more of its tails (unmapped here,
    # or unclassified): folios are physically contiguous, so a tail there is the same folio's.
    first = np.flatnonzero(starts)
    last = first + lengths - 1
    compound = head[first]
    beyond = kpageflags(pfns[last[compound]] + 1)
    more = np.zeros(first.shape[0], dtype=bool)
    if beyond is not None:
        more[compound] = (beyond & np.uint64(kernelfs.KPF_COMPOUND_TAIL)) != 0
    whole = np.where(compound, ((lengths & (lengths - 1)) == 0) & (lengths > 1), (lengths == 1) & ~tail[first]) & ~more
    sizes, counts = np.unique(lengths[whole], return_counts=True)
    unseen = int(unknown.sum()) + int(lengths[~whole].sum())
    return {str(int(n) * page): int(c) for n, c in zip(sizes, counts) if n}, unseen, int(zero.sum())


def mapped_folios(pid: int, start: int, end: int, page: int) -> tuple[dict[int, int], int]:
    """Folios mapped in ``[start, end)`` of ``pid`` by size in bytes, and the mapped pages whose
    kpageflags read as 0 (``verify mthp``); a HostError where kpageflags cannot be read (root)."""
    folios, unknown, _ = folio_counts(kernelfs.pagemap(pid, start, end, page), page)
    if folios is None:
        raise HostError(f"cannot read {kernelfs.PROC / 'kpageflags'} (root only)")
    return {int(size): n for size, n in folios.items()}, unknown
