"""Sizes: the kernel's ``memparse`` spelling in, binary human sizes out.  Pure."""

from __future__ import annotations

import re
from functools import lru_cache

from hugecalc.errors import InputError

_SUFFIX_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}
# memparse() (lib/cmdline.c) takes K/M/G/T/P/E after a C integer literal; sysfs and IEC
# spellings ("64kB", "2MiB") are accepted too, and a decimal with a suffix ("1.5T") when it is a
# whole number of bytes.  Always binary: 1K = 1024.
_SIZE_RE = re.compile(
    r"^[ \t]*(?P<num>0[xX][0-9a-fA-F]+|[0-9]+|[0-9]*\.[0-9]+(?=[ \t]*[kKmMgGtTpPeE]))[ \t]*(?P<suffix>[kKmMgGtTpPeE]?)(?:i?[bB])?[ \t]*$"
)


def ceil_div(a: int, b: int) -> int:
    """``DIV_ROUND_UP(a, b)`` for positive ``b``, in exact integers.

    >>> ceil_div(7, 2), ceil_div(8, 2), ceil_div(0, 4096)
    (4, 4, 0)
    """
    return -(-a // b)


@lru_cache(maxsize=4096)  # pure: the same few sizes are parsed again and again (switch names, profiles)
def parse_size(text: str, what: str = "size") -> int:
    """Parse a size the way the kernel's ``memparse()`` does, in bytes.

    >>> parse_size("2M"), parse_size("0x1000"), parse_size("64kB"), parse_size("1GiB"), parse_size("1.5T")
    (2097152, 4096, 65536, 1073741824, 1649267441664)
    """
    match = _SIZE_RE.match(str(text))
    if not match:
        raise InputError(
            f"{what} {text!r} is not a size: use a whole number (4096, 0x1000), or a number with a binary "
            "suffix K, M, G, T, P, E (64K, 2M, 1.5T, 2MiB)"
        )
    shift = _SUFFIX_SHIFT[match["suffix"].lower()]
    if "." in match["num"]:
        from fractions import Fraction

        exact = Fraction(match["num"]) * (1 << shift)
        if exact.denominator != 1:
            raise InputError(f"{what} {text!r} is not a whole number of bytes ({float(exact):.2f})")
        return int(exact)
    return int(match["num"], 0) << shift


def parse_address(text: str, what: str = "address") -> int:
    """An address: decimal or hex (``0x7f0000000000``), or a size spelling (``1G``)."""
    return parse_size(text, what)


_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]


def fmt_bytes(n: float) -> str:
    """A binary human size: exact when it is a whole number of the unit, else 2 decimals, or more
    where 2 would make it look whole (15.996 GiB is not "16.00 GiB" beside a real 16 GiB).

    >>> fmt_bytes(4096), fmt_bytes(3137536 * 4096), fmt_bytes(1536), fmt_bytes(-8192), fmt_bytes((16 << 30) - (4 << 20))
    ('4 KiB', '11.97 GiB', '1.50 KiB', '-8 KiB', '15.996 GiB')
    """
    sign = "-" if n < 0 else ""
    n = abs(n)
    unit = 0
    while n >= 1024 and unit < len(_UNITS) - 1:
        n /= 1024
        unit += 1
    text = f"{n:.0f}" if float(n).is_integer() else f"{n:.2f}"
    for decimals in range(3, 7):  # the fewest decimals that show it is not whole, up to 6
        if not text.endswith(".00"):
            break
        finer = f"{n:.{decimals}f}".rstrip("0")
        if not finer.endswith("."):
            text = finer
    return f"{sign}{text} {_UNITS[unit]}"


@lru_cache(maxsize=4096)
def fmt_size(n: int) -> str:
    """A size the way the kernel and users spell it: ``2M``, ``1G``, ``64K``, or bytes.

    >>> fmt_size(2 << 20), fmt_size(1 << 30), fmt_size(65536), fmt_size(1536)
    ('2M', '1G', '64K', '1536')
    """
    for shift, suffix in ((50, "P"), (40, "T"), (30, "G"), (20, "M"), (10, "K")):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{suffix}"
    return str(n)


def is_power_of_2(n: int) -> bool:
    """The kernel's ``is_power_of_2()`` (include/linux/log2.h): nonzero with one bit set."""
    return n > 0 and n & (n - 1) == 0
