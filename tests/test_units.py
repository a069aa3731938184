import pytest
from hypothesis import given, strategies as st

from hugecalc.errors import InputError
from hugecalc.units import fmt_bytes, fmt_size, parse_size


@pytest.mark.parametrize(
    "text,expected",
    [("4096", 4096), ("0x1000", 4096), ("4K", 4096), ("4k", 4096), ("2M", 2 << 20), ("1G", 1 << 30),
     ("1T", 1 << 40), ("64kB", 64 << 10), ("2MiB", 2 << 20), ("1GB", 1 << 30), (" 8 M ", 8 << 20),
     ("1E", 1 << 60), ("1.5T", 1536 << 30), ("1.5TiB", 1536 << 30), (".5G", 512 << 20), ("2.25K", 2304)],
)
def test_parse_size_like_memparse(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["12Q", "-5G", "", "G", "1.5", "0x", "2MM", "1 0K", "0x1.5K", "1.5.5G"])
def test_parse_size_rejects_and_names_the_value(text):
    with pytest.raises(InputError, match="is not a size.*K, M, G, T, P, E") as e:
        parse_size(text)
    assert repr(text) in str(e.value)


def test_a_decimal_size_must_be_whole_bytes():
    with pytest.raises(InputError, match=r"'1.3K' is not a whole number of bytes \(1331.20\)"):
        parse_size("1.3K")


@given(st.integers(min_value=0, max_value=1 << 40), st.sampled_from(["", "K", "M", "G"]))
def test_parse_size_is_binary(n, suffix):
    shift = {"": 0, "K": 10, "M": 20, "G": 30}[suffix]
    assert parse_size(f"{n}{suffix}") == n << shift
    assert parse_size(f"{hex(n)}{suffix}") == n << shift


def test_formatting():
    assert fmt_bytes(3_137_536 * 4096) == "11.97 GiB"
    assert fmt_bytes(16 << 30) == "16 GiB"
    # not whole: never shown as if it were ("16.00 GiB" for 15.996 GiB misled a user)
    assert fmt_bytes((16 << 30) - (4 << 20)) == "15.996 GiB" and fmt_bytes((16 << 30) - 4096) == "15.999996 GiB"
    assert fmt_bytes(1536) == "1.50 KiB" and fmt_bytes(2053) == "2.005 KiB"
    assert fmt_size(2 << 20) == "2M" and fmt_size(1 << 30) == "1G" and fmt_size(3000) == "3000"


def test_the_docstring_examples_hold():
    import doctest

    import hugecalc.units

    result = doctest.testmod(hugecalc.units)
    assert result.attempted > 0 and result.failed == 0
