"""What every verify run shares: the result model, the checks, and the refusals."""

from __future__ import annotations

from hugecalc.machine import kernelfs
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
    why: str | None = field("How it matches", default=None)  # where measured != predicted yet matches


class VerifyResult(Result):
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.match for c in self.checks)


def exact_check(figure: str, predicted: int, measured: int) -> Check:
    return Check(figure=figure, predicted=predicted, measured=measured, match=predicted == measured)


def placement(profile: Profile, start: int) -> dict:
    """What the probe needs to place the mapping in a top-level entry of its own (``_probe.place``):
    the same offset within the entry, so the same tables, and all of them new."""
    return {"start": start, "region": profile.span_bytes(profile.levels[0].name), "user_va": profile.user_va_bytes}


def placement_note(profile: Profile, asked: int, placed: int) -> str | None:
    if asked == placed:
        return None
    region = profile.span_bytes(profile.levels[0].name)
    return (f"placed at {placed:#x}, not {asked:#x}: the same offset in a {fmt_bytes(region)} top-level region the "
            "probe has no other mapping in, so it needs the same tables and every one of them is new")


def require_free(need_bytes: int, what: str) -> None:
    """Refuse a run that would leave less than MIN_SPARE_BYTES of MemAvailable."""
    available = kernelfs.read_keyed(kernelfs.PROC / "meminfo")["MemAvailable"] << 10
    need = need_bytes + MIN_SPARE_BYTES
    if available < need:
        raise HostError(
            f"not enough free memory: {what} need {fmt_bytes(need)} available (with {fmt_bytes(MIN_SPARE_BYTES)} "
            f"to spare), MemAvailable is {fmt_bytes(available)}"
        )


def require_root(what: str) -> None:
    if not kernelfs.is_root():
        raise HostError(f"verify {what} changes kernel settings and runs an experiment on them: run it as root")
