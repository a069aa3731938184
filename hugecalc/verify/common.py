"""What every verify run shares: the result model, the checks, and the refusals."""

from __future__ import annotations

from hugecalc import host
from hugecalc.errors import HostError
from hugecalc.profiles import Profile
from hugecalc.result import Model, Result, field
from hugecalc.units import fmt_bytes

MIN_SPARE_BYTES = 256 << 20  # leave this much MemAvailable after the allocation
MAX_VERIFY_TOUCHES = 4 << 20  # touches one run may make


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


def tables_maybe_present(maps: str, profile: Profile, levels: list, starts, ends, start: int, end: int) -> int:
    """VmPTE bytes of the tables the mapping needs that the probe may already have had: those whose
    range it shares with the mappings listed in ``maps`` (its /proc/self/maps before the mmap).
    The kernel's delta can be smaller by exactly these whole tables."""
    from hugecalc.calc.touches import distinct_blocks

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
                total += int(distinct_blocks(starts, ends, span, lo, hi)) * lvl.entries * lvl.entry_bytes
    return total


def table_check(figure: str, predicted: int, measured: int, maybe_present: int) -> Check:
    """Exact, or smaller by at most the tables that may already have existed."""
    ok = measured == predicted or (maybe_present > 0 and predicted - maybe_present <= measured <= predicted)
    return Check(figure=figure, predicted=predicted, measured=measured, match=ok)


def require_free(need_bytes: int, what: str) -> None:
    """Refuse a run that would leave less than MIN_SPARE_BYTES of MemAvailable."""
    available = host.read_keyed(host.PROC / "meminfo")["MemAvailable"] << 10
    need = need_bytes + MIN_SPARE_BYTES
    if available < need:
        raise HostError(
            f"not enough free memory: {what} need {fmt_bytes(need)} available (with {fmt_bytes(MIN_SPARE_BYTES)} "
            f"to spare), MemAvailable is {fmt_bytes(available)}"
        )


def require_root(what: str) -> None:
    if not host.is_root():
        raise HostError(f"verify {what} changes kernel settings and runs an experiment on them: run it as root")
