"""Kernel releases, and the spans and rules ``hugecalc.releases`` states its release-dependent
behaviours with: parsing ``--kernel``, whether a rule holds in a release, and the notes a figure
carries when its release is unconfirmed or a stable sublevel is missing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from hugecalc.errors import InputError

Version = tuple[int, int]
Full = tuple[int, int, int]  # major, minor, stable sublevel

OLDEST: Version = (4, 0)
NEWEST: Version = (7, 3)  # the newest release modelled; the default for --kernel
#: The last X.Y of each major line: releases outside these never existed (5.25, 4.99).
LAST_MINOR = {4: 20, 5: 19, 6: 19, 7: 3}


def _full(v: tuple[int, ...]) -> Full:
    return (v[0], v[1], v[2] if len(v) > 2 else 0)


def _fmt(v: tuple[int, ...]) -> str:
    return ".".join(str(x) for x in (v if len(v) > 2 and v[2] else v[:2]))


@dataclass(frozen=True)
class Release:
    """A kernel release: ``X.Y``, or a stable one ``X.Y.Z``; ``text`` is how the user gave it.

    ``sublevel`` is None when it is not known: ``6.1`` (the mainline release, computed as
    6.1.0), or a distribution's ABI string such as ``6.1.0-18-amd64`` whose ``.0`` is not the
    upstream stable sublevel.
    """

    major: int
    minor: int
    sublevel: int | None = None
    text: str | None = None

    @property
    def version(self) -> Version:
        return (self.major, self.minor)

    @property
    def full(self) -> Full:
        return (self.major, self.minor, self.sublevel or 0)

    def __str__(self) -> str:
        return self.text or _fmt(self.full if self.sublevel else self.version)

    def has(self, rule: Rule, arch: str | None = None) -> bool:
        """Whether ``rule`` holds in this release (on ``arch``, for per-arch rules)."""
        return _holds(self, rule, arch)

    def sublevel_matters(self, rule: Rule, arch: str | None = None) -> Full | None:
        """Where the sublevel is unknown and ``rule`` changed inside this stable branch: the first
        stable release that differs (the answer given is the X.Y.0 one)."""
        if self.sublevel is not None:
            return None
        points = [b for span in rule.spans_for(arch) for b in (span.since, span.until)
                  if b is not None and len(b) > 2 and b[:2] == self.version and b[2] > 0]
        return min(points, default=None)


class Commit(NamedTuple):
    """A mainline commit: its id (12 hex digits) and its title."""

    sha: str
    title: str


@dataclass(frozen=True)
class Span:
    """Present from ``since`` (inclusive) until ``until`` (exclusive; None = still present).
    Bounds are ``(X, Y)`` or, where a stable backport changed a rule, ``(X, Y, Z)``; ``by`` is the
    commit that makes the rule hold from ``since`` (for a stable bound, the mainline commit it
    backports), ``until_by`` the one that ends it.  A bound at OLDEST needs none (as far back as
    modelled); an unconfirmed span may lack one (the figures resting on it say so)."""

    since: tuple[int, ...]
    until: tuple[int, ...] | None = None
    confirmed: bool = True  # False: the release it starts in is not confirmed (the cite says why)
    by: Commit | None = None
    until_by: Commit | None = None

    def contains(self, v: tuple[int, ...]) -> bool:
        return _full(self.since) <= _full(v) and (self.until is None or _full(v) < _full(self.until))

    def __str__(self) -> str:
        since = _fmt(self.since)
        if self.until is None:
            return f"{since} and later"
        if len(self.until) > 2 and self.until[2]:
            return f"{since} to before {_fmt(self.until)}"
        if len(self.since) > 2 and self.since[2] and _full(self.until) == (self.since[0], self.since[1] + 1, 0):
            return f"{since} and later {self.since[0]}.{self.since[1]}.y"
        return f"{since} to {self.until[0]}.{self.until[1] - 1}" if self.until[1] else f"{since} until {self.until[0]}.0"


class _Spans(tuple):
    def contains(self, v: tuple[int, ...]) -> bool:
        return any(s.contains(v) for s in self)

    def __str__(self) -> str:
        return ", ".join(str(s) for s in self) or "no release"


@dataclass(frozen=True, eq=False)  # one object per rule: hashed by identity, so answers about it are cached
class Rule:
    """A release-dependent kernel behaviour and where it is stated."""

    name: str
    cite: str
    spans: tuple[Span, ...] = ()
    per_arch: dict[str, tuple[Span, ...]] | None = None

    def spans_for(self, arch: str | None) -> _Spans:
        if self.per_arch is None:
            return _Spans(self.spans)
        return _Spans(self.per_arch.get(arch or "", ()))


@lru_cache(maxsize=65536)  # each answer once: the calculations ask the same few again and again
def _holds(release: Release, rule: Rule, arch: str | None) -> bool:
    return rule.spans_for(arch).contains(release.full)


def unconfirmed_notes(release: Release, rules: list[tuple[Rule, str | None]]) -> list[str]:
    """A note for each rule that holds in this release only by a span whose first release is
    unconfirmed: the figures that rest on it say so under the table, not only in --explain."""
    notes = []
    for rule, arch in rules:
        span = next((s for s in rule.spans_for(arch) if s.contains(release.full)), None)
        if span is not None and not span.confirmed:
            where = f" on {arch}" if arch and rule.per_arch is not None else ""
            notes.append(f"release unconfirmed: {_fmt(span.since)} is taken as the first release with this rule"
                         f"{where}, and the figures that rest on it hold only if it is: {rule.name}")
    return notes


def sublevel_notes(release: Release, rules: list[tuple[Rule, str | None]]) -> list[str]:
    """A note for each rule whose answer depends on a stable sublevel this release does not give."""
    notes = []
    for rule, arch in rules:
        point = release.sublevel_matters(rule, arch)
        if point is not None:
            where = f" on {arch}" if arch and rule.per_arch is not None else ""
            notes.append(f"{rule.name}{where}: changed inside {release.major}.{release.minor}.y, in {_fmt(point)}; "
                         f"shown for {release.major}.{release.minor}.0 as '{release}' gives no stable sublevel "
                         f"(use --kernel {_fmt(point)} or later for the other answer)")
    return notes


_RELEASE_RE = re.compile(r"^[ \t]*v?([0-9]+)\.([0-9]+)(?:\.([0-9]+))?(?P<rest>[-+~_].*)?[ \t]*$")


MAX_SUBLEVEL = 500  # no stable branch reached it: 4.9.y ended at .337, 4.14.y at .336, 4.19.y at .325


@lru_cache(maxsize=1024)  # a fleet's hosts run a few kernels: each string parsed once (a Release is frozen)
def parse_release(text: str | None) -> Release:
    """``6.18``, ``v6.8``, ``6.1.100``, ``6.18.44-foo``, ``6.1.0-18-amd64`` -> Release; the newest
    modelled when None.  Releases that never existed (``5.25``, ``4.99``) are refused."""
    if text is None:
        return Release(*NEWEST)
    match = _RELEASE_RE.match(text)
    if not match:
        raise InputError(f"--kernel {text!r} is not a kernel release: use X.Y or X.Y.Z, e.g. 6.18 or 6.1.100")
    major, minor = int(match[1]), int(match[2])
    if major in LAST_MINOR and minor > LAST_MINOR[major]:
        ended = f"{major}.x ended with" if major < NEWEST[0] else "the newest release is"
        raise InputError(f"--kernel {text}: there is no Linux {major}.{minor} ({ended} {major}.{LAST_MINOR[major]})")
    if not OLDEST <= (major, minor) <= NEWEST:
        raise InputError(
            f"--kernel {text}: hugecalc models releases {OLDEST[0]}.{OLDEST[1]} to "
            f"{NEWEST[0]}.{NEWEST[1]}; use a release in that range"
        )
    sublevel = int(match[3]) if match[3] is not None else None
    if sublevel is not None and sublevel >= MAX_SUBLEVEL:
        raise InputError(f"--kernel {text}: there is no Linux {major}.{minor}.{sublevel} (no stable branch has had "
                         f"{MAX_SUBLEVEL} releases; the longest, 4.9.y, ended at 4.9.337)")
    if sublevel == 0 and match["rest"]:
        sublevel = None  # a distribution ABI string (6.1.0-18-amd64): its .0 is not the stable sublevel
    return Release(major, minor, sublevel, text.strip())
