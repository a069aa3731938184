"""``fleet mthp``: ``compute_now_and_what_if``'s figures for many hosts, a few microseconds each.

thp_vma_allowable_orders() (include/linux/huge_mm.h) decides each order on its own: its mask is
``always | madvise (if VM_HUGEPAGE) | inherit (if the top level is on)``, one bit a size, and
shmem_allowable_huge_orders() (mm/shmem.c) alike.  So a host's orders are the union of what each of
its per-size entries allows: each entry is decided once for the hosts alike in profile, release and
top-level switches, through one host's path (``allowed_orders()``), and the figures once for the
orders allowed now and under the what-if (``tests/test_fleet.py`` holds every host to that path).
"""

from __future__ import annotations

from functools import reduce
from itertools import repeat
from operator import or_

from hugecalc.calc.orders import PassShape, ThpSettings, allowed_orders, check_release_has_switches, pass_settings
from hugecalc.calc.replay import settings_from_capture, switches_of
from hugecalc.errors import InputError
from hugecalc.profiles import Profile
from hugecalc.releases import Release

FIGURES = ("faults_now", "faults_what_if", "populated_now_bytes", "populated_what_if_bytes",
           "page_table_now_bytes", "page_table_what_if_bytes", "tlb_now", "tlb_what_if")


def now_and_what_if_figures(capture, profile: Profile, release: Release, shape: PassShape,
                            what_if: ThpSettings) -> dict[str, int] | str:
    """``compute_now_and_what_if``'s faults, populated memory, page tables and TLB entries, now and
    under the what-if (the dict is shared by hosts alike: do not change it); or, as a str, why the
    what-if does not apply to the host (the InputError the whole path raises).  A host whose switches
    the whole path refuses takes it, for its own error."""
    th = capture.thp
    # Keyed by identity (the objects held by the value): hashing a release or a model is most of a lookup.
    key = id(profile), id(release), _token(shape, what_if), th.enabled, th.shmem_enabled
    alike = _ALIKE.get(key)
    if alike is None:
        if len(_ALIKE) >= 4096 or len(_ENTRIES) >= 1 << 16:
            _ALIKE.clear()
            _ENTRIES.clear()
        alike = _ALIKE[key] = _AlikeHosts(profile, release, shape, what_if, th.enabled, th.shmem_enabled)
    return alike.figures(capture)


_ALIKE: dict = {}  # hosts alike in profile, release and top-level switches, under one what-if
#: Each per-size entry a fleet has, as one object (a few hundred): the kinds of hosts key their
#: decisions with these, so the keys compared in a lookup stay in the CPU's cache.
_ENTRIES: dict[tuple, tuple] = {}
_TOKENS: dict = {}  # a what-if's shape and switches -> a number
_LAST: list = []  # (shape, switches, number): a run's what-if is one object, its number looked up once


def _token(shape: PassShape, s: ThpSettings) -> int:
    for seen_shape, seen, token in _LAST:
        if seen is s and seen_shape is shape:
            return token
    key = (shape, s.top_level, s.huge, tuple(s.enabled.items()), tuple(s.shmem_enabled.items()))
    token = _TOKENS.setdefault(key, len(_TOKENS))
    _LAST[:] = [(shape, s, token)] + _LAST[:7]
    return token


_ENABLED, _SHMEM_ENABLED = repeat("enabled"), repeat("shmem_enabled")
_ORDERS = (1 << 64) - 1  # a part of an entry's number: one bit an order (fewer than 64)
_REFUSED = 1 << 192  # the host's switches are refused: it takes the whole path, for its error
_THEN_REFUSED = 1 << 193  # the what-if is refused with them (its huge=force, a non-PMD inherit)
_PARTS = _REFUSED - 1  # the three parts below the flags: disjoint in a host's entries, unless two are of one size


class _AlikeHosts:
    """Hosts alike in profile, release and top-level switches under one what-if: each per-size entry
    they have, decided as one number (its order's bit; << 64 the bit if allowed now; << 128 under the
    what-if; flags), so a host's are summed in C; and the figures of each pair of allowed orders."""

    def __init__(self, profile: Profile, release: Release, shape: PassShape, what_if: ThpSettings,
                 enabled: str | None, shmem_enabled: str | None) -> None:
        self.profile, self.release, self.shape, self.what_if = profile, release, shape, what_if
        self.top = enabled, shmem_enabled
        self.decided: dict[tuple, int] = {}  # each entry ("64K", enabled, shmem_enabled): its decision
        self.why: dict[tuple, str] = {}  # an entry's _THEN_REFUSED: the error
        self.rows: dict[int, dict] = {}
        self.refused = None  # the what-if does not apply to this release: every host says why
        try:  # the first check of the whole path (a kernel with no per-size switch for the what-if's)
            check_release_has_switches(release, what_if, {"enabled": "enabled", "shmem_enabled": "shmem_enabled"})
        except InputError as e:
            self.refused = str(e)
        # Every order as the kernel boots it, then the what-if's sizes (refused: the what-if's own, 64K on 64K pages).
        self.booted_now, self.booted_then = self._allowed({})

    def _allowed(self, sizes: dict) -> tuple[int | None, int | str]:
        """The orders allowed (bits) now and under the what-if with these per-size entries, the others
        as booted; None now: the switches are refused."""
        try:
            now = switches_of(self.profile, *self.top, sizes)
            bits = self._bits(now)
        except InputError:
            return None, 0
        try:
            return bits, self._bits(now.with_overrides(self.what_if))
        except InputError as e:  # the what-if's own sizes, or its huge=force with a non-PMD inherit
            return bits, str(e)

    def _bits(self, settings: ThpSettings) -> int:
        p = pass_settings(self.profile, self.release, self.shape, settings, [])
        return sum(1 << o for o in allowed_orders(self.profile, self.release, p, [], reason=False)[0])

    def _entry(self, key: tuple) -> int:
        from hugecalc.units import parse_size

        key = _ENTRIES.setdefault(key, key)  # one object for each entry, whatever host had it first
        label, enabled, shmem_enabled = key
        try:
            size = parse_size(label)
        except InputError:
            self.decided[key] = _REFUSED
            return _REFUSED
        order = size.bit_length() - self.profile.page_size.bit_length()
        bit = 1 << order if order > 0 and self.profile.page_size << order == size else 0
        modes = {k: v for k, v in (("enabled", enabled), ("shmem_enabled", shmem_enabled)) if v is not None}
        now, then = self._allowed({label: modes})
        if now is None:
            entry = _REFUSED
        elif isinstance(then, str):
            self.why[key] = then
            entry = bit | (now & bit) << 64 | _THEN_REFUSED
        else:
            entry = bit | (now & bit) << 64 | (then & bit) << 128
        self.decided[key] = entry
        return entry

    def figures(self, capture) -> dict[str, int] | str:
        if self.refused:
            return self.refused
        sizes = capture.thp.sizes
        # An entry as the path reads it (switches_of(): its enabled and shmem_enabled), built in C.
        modes = sizes.values()
        keys = list(zip(sizes, map(dict.get, modes, _ENABLED), map(dict.get, modes, _SHMEM_ENABLED)))
        decided = list(map(self.decided.get, keys))
        if None in decided:
            decided = [self._entry(k) if e is None else e for k, e in zip(keys, decided)]
        bits = reduce(or_, decided, 0)
        if bits & _REFUSED or (sum(decided) ^ bits) & _PARTS or self.booted_now is None:
            # switches the path refuses (for their error), or two entries of one size
            return _host_figures(capture, self.profile, self.release, self.shape, self.what_if)
        if isinstance(self.booted_then, str):  # the what-if's own sizes are checked first
            return self.booted_then
        if bits & _THEN_REFUSED:
            return next(self.why[k] for k, e in zip(keys, decided) if e & _THEN_REFUSED)
        covered = bits & _ORDERS
        now = (bits >> 64 & _ORDERS) | (self.booted_now & ~covered)
        then = (bits >> 128 & _ORDERS) | (self.booted_then & ~covered)
        row = self.rows.get(now | then << 64)
        if row is None:
            row = self.rows[now | then << 64] = _host_figures(capture, self.profile, self.release, self.shape,
                                                              self.what_if)
        return row


def _host_figures(capture, profile: Profile, release: Release, shape: PassShape, what_if: ThpSettings) -> dict:
    """One host's figures through the whole path: its settings, then ``pass_figures`` now and under the what-if."""
    from hugecalc.calc.mthp import pass_figures

    now_settings, _ = settings_from_capture(capture)
    what_if_settings = now_settings.with_overrides(what_if)
    now = pass_figures(profile, release, shape, now_settings)
    then = now if what_if_settings == now_settings else pass_figures(profile, release, shape, what_if_settings)
    return dict(zip(FIGURES, (now["faults"], then["faults"], now["populated_bytes"], then["populated_bytes"],
                              now["page_table_bytes"], then["page_table_bytes"], now["tlb_entries"],
                              then["tlb_entries"])))
