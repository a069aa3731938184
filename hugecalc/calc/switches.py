"""The THP switches ``advise`` tries and the writes that set them: every subset of the anonymous
(and anonymous shmem) sizes, all in one mode; the sysfs writes from the switches now to a setting,
leaving as they are those that change nothing for the workload.

Kernel reference
----------------
Documentation/admin-guide/mm/transhuge.rst: ``transparent_hugepage/enabled``,
``hugepages-<size>kB/enabled`` (6.8+), ``hugepages-<size>kB/shmem_enabled`` (6.11+).
"""

from __future__ import annotations

from itertools import combinations
from typing import Callable

import numpy as np

from hugecalc.calc.orders import ThpSettings, anon_orders, file_orders, pmd_order
from hugecalc.profiles import Profile
from hugecalc.releases import MTHP_ANON, Release
from hugecalc.units import fmt_size

SYSFS = "/sys/kernel/mm/transparent_hugepage"


def settings_to_try(profile: Profile, release: Release, now: ThpSettings) -> list[tuple[str, ThpSettings]]:
    """Every subset of the anonymous sizes, all always or all madvise (before 6.8: the top level)."""
    if not release.has(MTHP_ANON):
        return [(f"top level {mode}", ThpSettings(top_level=mode, huge=now.huge)) for mode in
                ("never", "madvise", "always")]
    sizes = [profile.page_size << o for o in anon_orders(profile)]
    out = [("none", ThpSettings(top_level=now.top_level, huge=now.huge, shmem_enabled=now.shmem_enabled,
                                enabled={s: "never" for s in sizes}))]
    for label, enabled in _subsets(sizes, ("always", "madvise")):
        out.append((label, ThpSettings(top_level=now.top_level, huge=now.huge, shmem_enabled=now.shmem_enabled,
                                       enabled=enabled)))
    return out


def _subsets(sizes: list[int], modes: tuple[str, ...]):
    """Every non-empty subset of ``sizes`` in each of ``modes``, the other sizes never: (its label,
    the per-size switches), the fewest sizes first."""
    for mode in modes:
        for r in range(1, len(sizes) + 1):
            for chosen in combinations(sizes, r):
                yield (f"{'+'.join(fmt_size(s) for s in chosen)} {mode}",
                       {s: mode if s in chosen else "never" for s in sizes})


def shmem_settings_to_try(profile: Profile, base_label: str, base: ThpSettings) -> list[tuple[str, ThpSettings]]:
    """The anonymous shmem sizes (per-size shmem_enabled, 6.11+): every subset, all always or all
    advise, each with the anonymous setting ``base``."""
    sizes = [profile.page_size << o for o in file_orders(profile)]
    return [(f"{base_label}, shmem {label}", ThpSettings(top_level=base.top_level, huge=base.huge,
                                                         enabled=base.enabled, shmem_enabled=shmem))
            for label, shmem in _subsets(sizes, ("always", "advise"))]


def sysfs_writes(profile: Profile, release: Release, settings: dict, now: dict) -> list[str]:
    """The writes that turn the switches ``now`` into ``settings`` (both as ThpSettings.shown())."""
    if not release.has(MTHP_ANON):
        return [] if settings["top_level"] == now["top_level"] else \
            [f"echo {settings['top_level']} > {SYSFS}/enabled"]
    return (_size_writes(profile, anon_orders(profile), "enabled", settings, now)
            + _size_writes(profile, file_orders(profile), "shmem_enabled", settings, now))  # the latter 6.11+


def _size_writes(profile: Profile, orders: list[int], switch: str, settings: dict, now: dict) -> list[str]:
    """The hugepages-<size>kB/``switch`` writes for ``orders`` (a size left out is as booted: the
    PMD size inherit, the others never)."""
    P = pmd_order(profile)
    out = []
    for o in orders:
        label, default = fmt_size(profile.page_size << o), "inherit" if o == P else "never"
        want, have = settings[switch].get(label, default), now[switch].get(label, default)
        if want != have:
            out.append(f"echo {want} > {SYSFS}/hugepages-{(profile.page_size << o) // 1024}kB/{switch}")
    return out


def fewest_switches(mask_of: Callable[[ThpSettings], list[int]], allowed: np.ndarray, used: int,
                    chosen: ThpSettings, now: ThpSettings) -> ThpSettings:
    """``chosen`` with every per-size switch put back as it is ``now`` where that changes nothing
    for this record (the search's rule: no order allowed that ``chosen`` did not allow, every
    order its replay used still allowed)."""
    kept = chosen
    for switch in ("enabled", "shmem_enabled"):
        for size, mode in getattr(chosen, switch).items():
            was = getattr(now, switch).get(size)
            if was is None or was == mode:
                continue
            trial = kept.model_copy(update={switch: {**getattr(kept, switch), size: was}})
            row = np.array(mask_of(trial), dtype=np.int64)
            if ((row & ~allowed) == 0).all() and (((used & allowed) & ~row) == 0).all():
                kept = trial
    return kept
