"""The mthp calculation called with keywords, as the tests write a pass: the shape's fields, the
THP switches (per-size modes as (size, mode) pairs) and khugepaged's scan, each into its type."""

from hugecalc.calc import mthp
from hugecalc.calc.orders import PassShape, ThpSettings


def compute_mthp(profile, release, *, enabled=(), shmem_enabled=(), top_level=None, huge=None, khugepaged=False,
                 max_ptes_none=511, occupancy=None, **shape):
    settings = ThpSettings(top_level=top_level, huge=huge, enabled=dict(enabled), shmem_enabled=dict(shmem_enabled))
    scan = mthp.KhugepagedScan(max_ptes_none=max_ptes_none, occupancy=occupancy) if khugepaged else None
    return mthp.compute_mthp(profile, release, PassShape(**shape), settings, scan)
