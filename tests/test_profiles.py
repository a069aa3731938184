from pathlib import Path

import pytest

from hugecalc.errors import ProfileError
from hugecalc.profiles import bundled_profiles, load_profile

BAD = Path(__file__).parent / "data" / "bad_profiles"
K, M, G, T = 1 << 10, 1 << 20, 1 << 30, 1 << 40


def test_bundled_set():
    assert {"x86-64", "x86-64-la57", "arm64-4k", "arm64-16k", "arm64-64k", "riscv64-sv48", "i386"} <= set(
        bundled_profiles())


@pytest.mark.parametrize("name", sorted(bundled_profiles()))
def test_every_bundled_profile_loads_and_is_named_by_its_file(name):
    assert load_profile(name).name == name


def test_x86_64_geometry():
    """pgtable_64_types.h: PTRS_PER_* 512, PMD_SHIFT 21, PUD_SHIFT 30; TASK_SIZE_MAX 2^47 - 4096."""
    p = load_profile("x86-64")
    assert [lvl.entries for lvl in p.levels] == [512] * 4
    assert (p.span_bytes("pmd"), p.span_bytes("pud"), p.span_bytes("pgd")) == (2 * M, 1 * G, 512 * G)
    assert p.user_va_bytes == 0x7FFFFFFFF000
    assert p.table_span_bytes("pgd") == 256 * T
    assert load_profile("x86-64-la57").span_bytes("p4d") == 512 * G


@pytest.mark.parametrize(
    "name,levels,pgd_table_bytes,cont_pte_bytes,cont_pmd_bytes",
    [("arm64-4k", 4, 4096, 64 * K, 32 * M), ("arm64-16k", 4, 16, 2 * M, 1 * G),
     ("arm64-64k", 3, 512, 2 * M, 16 * G)],
)
def test_arm64_geometry(name, levels, pgd_table_bytes, cont_pte_bytes, cont_pmd_bytes):
    """arch/arm64/Kconfig PGTABLE_LEVELS and ARM64_CONT_{PTE,PMD}_SHIFT."""
    p = load_profile(name)
    assert len(p.levels) == levels
    assert p.level("pgd").bytes_per_table == pgd_table_bytes
    assert p.cont_pte_entries * p.page_size == cont_pte_bytes
    assert p.cont_pmd_entries * p.pmd_size == cont_pmd_bytes
    assert p.table_span_bytes("pgd") == 1 << 48


def test_i386_two_level():
    p = load_profile("i386")
    assert [lvl.name for lvl in p.levels] == ["pgd", "pte"]
    assert p.table_span_bytes("pte") == 4 * M and p.user_va_bytes == 3 * G


@pytest.mark.parametrize(
    "file,message",
    [
        ("unknown_key.yaml", r"unknown_key.yaml: invalid profile:\n  page_shfit: Extra inputs are not permitted"),
        ("hugetlb_mismatch.yaml", r"hugetlb size 4M: 1 pmd entries map 2M, not 4M"),
        ("bad_page_size.yaml", r"page_size: page_size 12288 must be a power of two of at least 4096"),
        ("not_yaml.yaml", r"not_yaml.yaml: invalid profile: not valid YAML"),
    ],
)
def test_bad_profiles_name_file_field_and_rule(file, message):
    with pytest.raises(ProfileError, match=message):
        load_profile(str(BAD / file))


def test_missing_profile_file():
    with pytest.raises(ProfileError, match="/nonexistent.yaml: cannot read profile"):
        load_profile("/nonexistent.yaml")


def test_unknown_profile_name():
    with pytest.raises(ProfileError, match="neither a bundled profile"):
        load_profile("sparc")


@pytest.mark.parametrize("alias,name", [("x86_64", "x86-64"), ("amd64", "x86-64"), ("arm64", "arm64-4k"),
                                        ("aarch64", "arm64-4k"), ("ARM64-4K", "arm64-4k"), ("X86-64-LA57", "x86-64-la57"),
                                        ("riscv64", "riscv64-sv48"), ("i686", "i386")])
def test_uname_spellings_and_case_name_bundled_profiles(alias, name):
    assert load_profile(alias).name == name


def test_profiles_refuses_options_that_do_not_apply(run):
    for args in (["--kernel", "5.4"], ["--explain"]):
        r = run("profiles", *args)
        assert r.exit_code == 2 and r.stdout == "" and "do not apply" in r.stderr
    assert run("profiles", "aarch64", "--json").json["definition"]["name"] == "arm64-4k"
