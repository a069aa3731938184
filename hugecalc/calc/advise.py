"""``hugecalc advise``: which THP settings serve a recorded workload best.

Every meaningful setting is replayed against the record: each subset of the anonymous THP sizes
the profile offers, all ``always`` or all ``madvise`` (on kernels before 6.8, which have no
per-size switch: the top-level switch).  Settings that give every VMA of the record the same
allowed orders replay the same and are tried once; settings whose figures come out the same (a
size in them was never used) are listed with the simplest of them.  For each: the memory
populated at the end (bloat against base pages), page faults, last-level TLB entries
(contiguous-PTE aware), page tables, and the largest fault's folio and its zeroing time.  The
Pareto front is the settings no other beats on every figure; within a budget (``--max-bloat``,
``--max-memory``), the advised one has the fewest TLB entries.

Kernel reference
----------------
The replay's: ``thp_vma_allowable_orders()``, ``alloc_anon_folio()``, ``do_anonymous_page()``
(mm/memory.c, mm/huge_memory.c); the sysfs switches of Documentation/admin-guide/mm/transhuge.rst.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

from functools import partial

from hugecalc.calc import blocksim, oplog
from hugecalc.calc.mthp import FolioCount, tlb_block_pages
from hugecalc.calc.orders import ThpSettings, anon_orders, file_orders, pmd_order
from hugecalc.calc.switches import fewest_switches, settings_to_try, shmem_settings_to_try, sysfs_writes
from hugecalc.calc.tables import level_row, vmpte_bytes
from hugecalc.calc.trace import allowed_mask
from hugecalc.calc.pages import FAULTS, MAX_ORDER, USED
from hugecalc.calc.tracereplay import Events, Replay, checked_pid, tables_by_level, tables_of, upper_spans, walk
from hugecalc.errors import InputError
from hugecalc.profiles import Profile
from hugecalc.releases import HUGE_ZERO_WP_THP, MTHP_ANON, SHMEM_MTHP, Release
from hugecalc.result import Derivation, Figure, Model, Result, field
from hugecalc.units import fmt_bytes, fmt_size

#: the figures a setting is judged on, all the lower the better
JUDGED = ("populated_bytes", "faults", "tlb_entries", "page_table_bytes", "largest_fault_bytes")


class Candidate(Model):
    label: str = field("Setting")
    settings: dict = field("THP settings")
    same_as: list[str] = field("Settings with the same figures")
    populated_bytes: int = field("Memory populated at the end", "bytes")
    bloat: float = field("Bloat against base pages", "share")
    faults: int = field("Page faults", "count")
    tlb_entries: int = field("Last-level TLB entries", "count")
    page_table_bytes: int = field("Page tables", "bytes")
    largest_fault_bytes: int = field("Largest fault", "bytes")
    largest_fault_clear_seconds: float = field("Its zeroing time", "seconds")
    folios: list[FolioCount]
    pareto: bool = field("On the Pareto front")
    within_budget: bool = field("Within the budget")


class AdviseResult(Result):
    command: str = "advise"
    pid: int = field("Process")
    recorded_faults: int = field("Faults recorded (base pages)", "count")
    tried: int = field("Settings tried", "count")
    now: str | None = field("The setting at the time of the record")
    advised: str | None = field("Advised setting")
    apply: list[str] = field("To apply it")
    undo: list[str] = field("To undo it")
    candidates: list[Candidate]

    def outcome(self, label: str | None) -> Candidate | None:
        """The candidate whose figures the setting ``label`` has."""
        return next((c for c in self.candidates if label == c.label or label in c.same_as), None)

    def figures(self) -> dict[str, Figure]:
        best = self.outcome(self.advised)
        return {"tlb_entries": Figure(best.tlb_entries if best else None),
                "populated": Figure(best.populated_bytes if best else None, "bytes")}



def compute_advise(profile: Profile, release: Release, record, now: ThpSettings, pid: int | None = None,
                   max_bloat: float | None = None, max_memory: int | None = None) -> AdviseResult:
    """The record replayed under every setting worth trying, judged, and the best within budget.

    Kernel reference
    ----------------
    As ``mthp --trace``: ``thp_vma_allowable_orders()``, ``alloc_anon_folio()``,
    ``do_anonymous_page()``; ``mm_pgtables_bytes()`` (VmPTE).
    """
    pid = checked_pid(profile, record, pid)
    if not anon_orders(profile):
        raise InputError(f"profile {profile.name} offers no THP size: nothing to advise", field="profile_name")
    events = Events(record.columns, pid, profile.page_size)
    if events.touched_pages == 0:
        raise InputError(f"the record holds no page fault of process {pid}: nothing to advise", field="trace")
    journal = oplog.Journal()
    replay = Replay(profile, release, now, journal.new)
    target, upto = walk(replay, events, lambda proc: (proc.space.pages.id, len(journal.ops)))
    ops = journal.ops[:upto]
    vmas = [vma for _, (_, vma) in sorted(replay.keys.items(), key=lambda kv: kv[1][0])]
    coupled = oplog.coupled(ops, target)
    table = None if coupled else oplog.block_items(ops, target, events.addrs, events.errors,
                                                     profile.page_size.bit_length() - 1, pmd_order(profile))

    def masks(s: ThpSettings) -> list[int]:
        return [allowed_mask(profile, release, s, v) for v in vmas]

    def replayed_all(tried: list) -> tuple[list[dict], np.ndarray, int]:
        allowed = np.array([masks(s) for _, s in tried], dtype=np.int64).reshape(len(tried), len(vmas))
        if table is not None:  # all at once: settings share each block's replay until they part
            distinct, inverse = np.unique(allowed, axis=0, return_inverse=True)  # same orders: one setting
            simulated = _simulated(profile, release, table, distinct)
            figures, count = [simulated[i] for i in inverse.reshape(-1).tolist()], len(distinct)
        else:
            figures, count = search(allowed, lambda batch: _replayed(profile, release, ops, target, events,
                                                                     allowed[batch]), os.cpu_count() or 1)
        return figures, allowed, count

    tried = settings_to_try(profile, release, now) + [("now", now)]
    figures, allowed, replayed = replayed_all(tried)
    shmem_note, parts = None, 0
    if release.has(SHMEM_MTHP) and any(not key[0] for key in replay.keys):
        tried, figures, allowed, replayed, parts, shmem_note = with_shmem(profile, tried, figures, allowed, replayed,
                                                                           replayed_all)
    result = judged_result(profile, release, tried, figures, allowed, replayed, masks, max_bloat, max_memory,
                           inputs={"trace": record.meta.get("path"), "pid": pid, "max_bloat": max_bloat,
                                   "max_memory": max_memory}, pid=pid, recorded_faults=record.faults,
                           also_tried=parts)
    if shmem_note:
        result.notes.append(shmem_note)
    if coupled:
        result.notes.append(f"each setting replayed the record's page operations in order ({coupled}: its PMD "
                            "blocks are not independent)")
    return result



def judged_result(profile: Profile, release: Release, tried: list, figures: list[dict], allowed: np.ndarray,
                  replayed: int, mask_of: Callable[[ThpSettings], list[int]], max_bloat: float | None,
                  max_memory: int | None, inputs: dict, pid: int, recorded_faults: int,
                  source: str = "the record", also_tried: int = 0) -> AdviseResult:
    """Every tried setting's figures judged: the distinct outcomes, the front, the advice within the
    budget, and the writes that apply it (``mask_of``: a setting's allowed orders per key;
    ``also_tried``: settings replayed to find the ones tried, not judged themselves)."""
    candidates, now_label = _judge(profile, tried, dict(enumerate(figures)), max_bloat, max_memory)
    best = _advised(candidates)
    apply, undo = [], []
    if best is not None:
        i = [label for label, _ in tried].index(best.label)
        now = tried[-1][1]
        kept = fewest_switches(mask_of, allowed[i], figures[i]["used"], tried[i][1], now)
        apply = sysfs_writes(profile, release, kept.shown(), now.shown())
        undo = sysfs_writes(profile, release, now.shown(), kept.shown())
    budget = ([f"bloat at most {max_bloat:.1%}"] if max_bloat is not None else []) + \
        ([f"memory at most {fmt_size(max_memory)}"] if max_memory is not None else [])
    space = ("every subset of " + ", ".join(fmt_size(profile.page_size << o) for o in anon_orders(profile))
             + ", all always or all madvise" if release.has(MTHP_ANON)
             else f"the top-level switch: kernel {release} has no per-size switch")
    notes = [f"{len(tried) - 1 + also_tried:,} settings tried ({space}"
             + (", with the shmem switches as below" if also_tried else "") + f"), and the settings at the time; "
             f"{replayed:,} replayed (each "
             f"other one allows the same orders where {source}'s faults used them, and no more: it replays the "
             f"same), {len(candidates)} distinct outcomes", "bloat is against base pages (the setting 'none'); TLB entries, page tables and memory are "
             "the process's at the end"]
    if best is None:
        notes.append("no setting meets the budget (" + ", ".join(budget) + "): the least memory is "
                     + min(candidates, key=lambda c: c.populated_bytes).label)
    return AdviseResult(profile=profile.name, kernel=str(release), pid=pid, recorded_faults=recorded_faults,
                        tried=len(tried) - 1 + also_tried, now=now_label, advised=best.label if best else None, apply=apply,
                        undo=undo, candidates=candidates, notes=notes,
                        explain=[_why(c, candidates, best) for c in candidates], inputs=inputs)


def with_shmem(profile: Profile, tried: list, figures: list, allowed: np.ndarray, replayed: int,
               replayed_all: Callable, holder: str = "the record") -> tuple:
    """The anonymous and the per-size shmem switches searched together: (tried, figures, allowed,
    replayed, the settings replayed for the parts' fronts, a note).

    The process's anonymous and shmem mappings add up: a fault's folio depends on its own VMA's
    switches only (alloc_anon_folio() and shmem_alloc_and_add_folio() take orders that fit the VMA, so
    a PMD block two VMAs share keeps its PTE table either way), and the upper tables follow the pages
    touched, whatever their folios.  So memory, faults, TLB entries and page tables of a pairing are the
    sums of its two parts', and its largest fault the larger part's: a pairing with a part off its own
    front is beaten by the same pairing with the part that beats it.  Each part's front is found with
    the other part at base pages; every pairing of the two fronts is then replayed as it is."""
    none = tried[0][1]  # "none": every anonymous size never (the first setting tried)
    shmem_none = {s: "never" for s in (profile.page_size << o for o in file_orders(profile))}
    anon = [(label, s.model_copy(update={"shmem_enabled": shmem_none})) for label, s in tried[:-1]]
    shmem = [("none", none.model_copy(update={"shmem_enabled": shmem_none}))] + \
        shmem_settings_to_try(profile, "none", none)
    figures_a, _, replayed_a = replayed_all(anon)
    figures_s, _, replayed_s = replayed_all(shmem)
    pairs = [(f"{a_label}, shmem {s_label.removeprefix('none, shmem ')}",
              a.model_copy(update={"shmem_enabled": s.shmem_enabled}))
             for a_label, a in (anon[i] for i in _front(figures_a)) for s_label, s in (shmem[j] for j in _front(figures_s))]
    figures_p, allowed_p, replayed_p = replayed_all(pairs)
    note = (f"{holder} maps anonymous shmem: the anonymous and the shmem switches were searched together: each "
            f"part's settings with the other at base pages ({len(anon):,} and {len(shmem):,}), then every pairing of "
            f"the two parts' fronts ({len(pairs):,}): the parts add up, so a pairing with a part off its front is "
            "beaten by one on it")
    return (tried[:-1] + pairs + tried[-1:], figures[:-1] + figures_p + figures[-1:],
            np.concatenate([allowed[:-1], allowed_p, allowed[-1:]]), replayed + replayed_a + replayed_s + replayed_p,
            len(anon) + len(shmem), note)


def _front(figures: list[dict]) -> list[int]:
    """The settings no other beats on every judged figure (one per distinct outcome, the first)."""
    seen: dict[tuple, int] = {}
    for i, f in enumerate(figures):
        seen.setdefault(tuple(f[k] for k in JUDGED), i)
    rows = list(seen.items())
    return [i for key, i in rows if not any(all(o <= k for o, k in zip(other, key)) and other != key
                                            for other, _ in rows)]


def search(allowed: np.ndarray, run: Callable[[list[int]], list[dict]], batch: int) -> tuple[list[dict], int]:
    """Every setting's figures, replaying as few as the rule below allows: the settings that allow
    the most first, ``batch`` at a time; and how many were replayed.

    A setting S' replays exactly as a setting S when, for every VMA key, it allows no order S does
    not, and still allows every order S's replay used there: each fault then picks the same order
    (the highest allowed one that fits), so the states stay the same fault after fault.  ``used``
    is the orders S's replay chose that changed the state, over all keys (a superset of each key's).
    """
    count = allowed.shape[0]
    share = np.full(count, -1)  # the replayed setting whose figures each one has
    figures: dict[int, dict] = {}
    widest = sorted(range(count), key=lambda t: (-sum(bin(x).count("1") for x in allowed[t].tolist()), t))
    while True:
        todo = [t for t in widest if share[t] < 0][:batch]
        if not todo:
            break
        for t, figs in zip(todo, run(todo)):
            figures[t] = figs
            a, used = allowed[t], figs["used"]
            same = ((allowed & ~a) == 0).all(axis=1) & (((used & a) & ~allowed) == 0).all(axis=1)
            share[same & (share < 0)] = t
            share[t] = t
    return [figures[int(share[t])] for t in range(count)], len(figures)


def _simulated(profile: Profile, release: Release, table: np.ndarray, allowed: np.ndarray) -> list[dict]:
    """Settings' figures block by block (:mod:`hugecalc.calc.blocksim`), the settings over the cores."""
    k = blocksim.kernels() if blocksim.compiled() or table.shape[0] > 20_000 else blocksim
    pers = np.array(upper_spans(profile), dtype=np.int64)
    shift = pmd_order(profile)
    chunks, folios, upper = k.simulate(table, allowed, pers, 1 << shift, shift, tlb_block_pages(profile, release),
                                       release.has(HUGE_ZERO_WP_THP), _chunks(table, os.cpu_count() or 1))
    cnt, folios = chunks.sum(axis=0), folios.sum(axis=0)
    cnt[:, blocksim.MAX_ORDER] = chunks[:, :, blocksim.MAX_ORDER].max(axis=0)
    cnt[:, blocksim.USED] = np.bitwise_or.reduce(chunks[:, :, blocksim.USED], axis=0)
    upper = _tables_over_chunks(upper)
    out = []
    for s in range(allowed.shape[0]):
        tables = tables_by_level(profile, upper[s].tolist(), int(cnt[s, blocksim.PTE_TABLES]))
        out.append(_figures(profile, release, int(cnt[s, blocksim.POPULATED]) * profile.page_size,
                            int(cnt[s, blocksim.FAULTS]), int(cnt[s, blocksim.TLB]), tables,
                            int(cnt[s, blocksim.MAX_ORDER]),
                            {profile.page_size << o: int(n) for o, n in enumerate(folios[s].tolist()) if n},
                            int(cnt[s, blocksim.USED])))
    return out


def _tables_over_chunks(upper: np.ndarray) -> np.ndarray:
    """Upper-level tables per setting and level: each chunk's count, less the table it shares with
    the chunk before it (its first table index is that chunk's last)."""
    tables = upper[0, :, :, 0].copy()
    last = upper[0, :, :, 2].copy()
    for c in range(1, upper.shape[0]):
        count, first = upper[c, :, :, 0], upper[c, :, :, 1]
        tables += count - ((first >= 0) & (first == last))
        last = np.where(first >= 0, upper[c, :, :, 2], last)
    return tables


def _chunks(table: np.ndarray, cores: int) -> np.ndarray:
    """Cuts of the items into about equal chunks of whole blocks, one per core (one when small)."""
    count = min(cores, max(1, table.shape[0] // 50_000))
    blocks = table[:, 0]
    cuts = [0]
    for c in range(1, count):
        cut = int(np.searchsorted(blocks, blocks[c * len(blocks) // count], side="left"))
        if cut > cuts[-1]:
            cuts.append(cut)
    return np.array([*cuts, len(blocks)], dtype=np.int64)


def _replayed(profile: Profile, release: Release, ops: list, target: int, events: Events,
              allowed: np.ndarray) -> list[dict]:
    """Settings' figures from the journal's calls made on real pages (:mod:`hugecalc.calc.oplog`),
    on threads side by side (the compiled kernels release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    from hugecalc.calc import addrspace

    compiled = addrspace.use_compiled(len(events.addrs))
    new_pages = partial(addrspace.Pages, profile.page_size, profile.pmd_size, compiled)
    wp_thp, cont = release.has(HUGE_ZERO_WP_THP), tlb_block_pages(profile, release)

    def one(row: np.ndarray) -> dict:
        pages, counts = oplog.replayed(ops, target, events.addrs, events.errors, row, new_pages, wp_thp)
        return _figures(profile, release, pages.populated_pages * profile.page_size, int(counts[FAULTS]),
                        pages.tlb_entries(cont), tables_of(profile, pages), int(counts[MAX_ORDER]),
                        {profile.page_size << o: int(n) for o, n in enumerate(pages.folio_orders().tolist()) if n},
                        int(counts[USED]))

    if len(allowed) == 1:
        return [one(allowed[0])]
    with ThreadPoolExecutor(len(allowed)) as pool:
        return list(pool.map(one, allowed))


def _figures(profile: Profile, release: Release, populated: int, faults: int, tlb: int, tables: dict,
             max_order: int, folios: dict[int, int], used: int) -> dict:
    rows = [level_row(profile, release, name, n) for name, n in tables.items()]
    return figures_of(profile, populated, faults, tlb, vmpte_bytes(profile, rows), profile.page_size << max_order,
                      folios, used)


def figures_of(profile: Profile, populated: int, faults: int, tlb: int, page_table_bytes: int, largest: int,
               folios: dict[int, int], used: int) -> dict:
    """One setting's figures, as the search and the judging read them."""
    return {"populated_bytes": populated, "faults": faults, "tlb_entries": tlb, "page_table_bytes": page_table_bytes,
            "largest_fault_bytes": largest,
            "largest_fault_clear_seconds": largest / (profile.costs.clear_gib_per_s * (1 << 30)),
            "folios": tuple(sorted(folios.items())), "used": used}


def _judge(profile: Profile, tried: list, by_setting: dict[int, dict], max_bloat: float | None,
           max_memory: int | None) -> tuple[list[Candidate], str | None]:
    """One candidate per distinct outcome (named by its simplest setting), judged; and the name of
    the one the settings now give."""
    groups: dict[tuple, list[int]] = {}
    for i, figs in by_setting.items():
        groups.setdefault(tuple(figs[k] for k in (*JUDGED, "folios")), []).append(i)
    base = by_setting[0]["populated_bytes"]  # "none" (or the top level never): base pages only
    rows = []
    for members in groups.values():
        figs, first = by_setting[members[0]], tried[members[0]][0]
        populated = figs["populated_bytes"]
        rows.append(dict(label=first, settings=tried[members[0]][1].shown(),
                         same_as=[tried[i][0] for i in members[1:]], populated_bytes=populated,
                         bloat=populated / base - 1 if base else 0.0,
                         **{k: figs[k] for k in JUDGED[1:]}, largest_fault_clear_seconds=figs["largest_fault_clear_seconds"],
                         folios=[FolioCount(size_bytes=s, count=n) for s, n in figs["folios"]]))
    out = []
    for r in rows:
        dominated = any(all(o[k] <= r[k] for k in JUDGED) and any(o[k] < r[k] for k in JUDGED) for o in rows)
        within = (max_bloat is None or r["bloat"] <= max_bloat + 1e-12) and \
            (max_memory is None or r["populated_bytes"] <= max_memory)
        out.append(Candidate(**r, pareto=not dominated, within_budget=within))
    now = next((c.label for c in out if c.label == "now" or "now" in c.same_as), None)
    return out, now


def _advised(candidates: list[Candidate]) -> Candidate | None:
    """Within the budget, the fewest TLB entries (then faults, then memory, then the simplest)."""
    fits = [c for c in candidates if c.within_budget]
    return min(fits, key=lambda c: (c.tlb_entries, c.faults, c.populated_bytes)) if fits else None




def _why(c: Candidate, candidates: list[Candidate], best: Candidate | None) -> Derivation:
    rule = "Pareto dominance over memory, faults, TLB entries, page tables and the largest fault"
    if best is not None and c.label == best.label:
        return Derivation(scope=c.label, figure="advised", formula=f"within the budget, the fewest TLB entries "
                          f"({c.tlb_entries:,}), then faults ({c.faults:,}); the switches that change nothing for this "
                          "record are left as they are", rule=rule)
    if c.pareto:
        return Derivation(scope=c.label, figure="on the front", formula="no other setting is as good on every figure "
                          "and better on one", rule=rule)
    by = next(o for o in candidates if all(getattr(o, k) <= getattr(c, k) for k in JUDGED)
              and any(getattr(o, k) < getattr(c, k) for k in JUDGED))
    better = ", ".join(f"{k.replace('_bytes', '').replace('_', ' ')} {_shown(k, getattr(by, k))} < "
                       f"{_shown(k, getattr(c, k))}" for k in JUDGED if getattr(by, k) < getattr(c, k))
    return Derivation(scope=c.label, figure="dominated", formula=f"{by.label} is no worse on any figure and better "
                      f"on: {better}", rule=rule)


def _shown(figure: str, value: int) -> str:
    return fmt_bytes(value) if figure.endswith("_bytes") else f"{value:,}"
