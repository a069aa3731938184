"""``hugecalc fleet synth``: realistic synthetic captures for tests and benchmarks.

Each host draws, from one seeded generator, an architecture and page size, a kernel release as a
distribution would report it, its memory, hugetlb pools, the HVO sysctl, THP settings and a few
processes whose mappings have present pages.  Same seed, same captures.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from hugecalc.machine.capture import CAPTURE_KIND, CAPTURE_SCHEMA_VERSION
from hugecalc.errors import InputError
from hugecalc.profiles import load_profile
from hugecalc.units import fmt_size

PROFILES = [("x86_64", "x86-64", 0.55), ("x86_64", "x86-64-la57", 0.05), ("aarch64", "arm64-4k", 0.25),
            ("aarch64", "arm64-16k", 0.03), ("aarch64", "arm64-64k", 0.12)]
KERNELS = ["5.10.0-28-amd64", "5.14.0-427.el9.x86_64", "5.15.0-91-generic", "6.1.0-18-amd64", "6.1.100",
           "6.6.30", "6.8.0-45-generic", "6.12.58", "6.18.44", "7.0.3", "7.1.2"]
MODES = ["never", "never", "never", "always", "madvise", "inherit"]


def synth_capture(rng: random.Random, index: int, profiles: dict) -> dict:
    arch, name, _ = rng.choices(PROFILES, weights=[w for *_, w in PROFILES])[0]
    profile = profiles[name]
    page = profile.page_size
    mem = rng.choice([64, 128, 256, 512, 768, 1024, 2048]) << 30
    pools = []
    for h in profile.hugetlb:
        share = rng.choice([0, 0, 0, 0.05, 0.25, 0.5, 0.75]) if h.size <= 1 << 30 else 0
        nr = int(mem * share) // h.size
        pools.append({"size_bytes": h.size, "nr": nr, "free": nr // 3, "resv": 0, "surplus": 0,
                      "nodes": {"0": {"nr": nr - nr // 2, "free": nr // 6, "surplus": 0},
                                "1": {"nr": nr // 2, "free": nr // 3 - nr // 6, "surplus": 0}}})
    pmd_order = (profile.pmd_size // page).bit_length() - 1
    sizes = {}
    for order in range(1, pmd_order + 1):
        label = fmt_size(page << order)
        entry = {}
        if order <= min(11, pmd_order):  # shmem_enabled only up to MAX_PAGECACHE_ORDER
            entry["shmem_enabled"] = "inherit" if order == pmd_order else rng.choice(["never"] * 5 + ["always"])
        if order >= 2:
            entry["enabled"] = "inherit" if order == pmd_order else rng.choice(MODES)
        sizes[label] = entry
    processes = []
    for p in range(rng.randint(1, 3)):
        vmas, start = [], 0x7F0000000000 if profile.user_va_bytes > 0x7F0000000000 else 1 << 30
        for _ in range(rng.randint(2, 5)):
            size = rng.choice([1, 2, 8, 64, 256]) << 20
            vmas.append({"start": start, "end": start + size, "kind": rng.choice(["anon", "anon", "heap", "file"]),
                         "name": "", "flags": rng.choice([[], ["hg"]]), "kernel_page_bytes": page,
                         "present_pages": 0, "present_runs": ""})
            start += size + (2 << 20)
        processes.append({"pid": 1000 + p, "comm": rng.choice(["postgres", "java", "redis-server", "nginx"]),
                          "vm_pte_bytes": 4096 * rng.randint(4, 400), "vmas": vmas})
    doc = {
        "kind": CAPTURE_KIND, "schema_version": CAPTURE_SCHEMA_VERSION, "captured_at": "2026-11-23T00:00:00Z",
        "hostname": f"synth-{index:06d}", "arch": arch, "page_size": page,
        "kernel": rng.choice(KERNELS).replace("amd64", "arm64" if arch == "aarch64" else "amd64").replace(
            ".x86_64", "." + arch),
        "paging_levels": len(profile.levels), "user_va_bytes": profile.user_va_bytes,
        "struct_page_bytes": rng.choices([64, 64, 64, 64, 64, 64, 64, 72, 80])[0], "config": {},
        "mem_total_bytes": mem, "mem_available_bytes": mem // 3,
        "hugetlb_optimize_vmemmap": rng.choice([0, 0, 1]), "nr_memmap_pages": mem // page * 64 // page,
        "nr_memmap_boot_pages": 0, "pools": pools,
        "thp": {"enabled": rng.choice(["always", "madvise", "madvise", "never"]), "defrag": "madvise",
                "shmem_enabled": rng.choice(["never", "never", "advise", "within_size"]), "use_zero_page": "1",
                "sizes": sizes, "khugepaged": {"max_ptes_none": (profile.pmd_size // page) - 1}},
        "processes": processes, "sources": {"all": "synthetic (hugecalc fleet synth)"}, "unknown": [],
        "profile": {**profiles[name + ":json"], "name": f"synth:{name}"},
    }
    doc["config"] = _config(profile, doc["kernel"])
    return doc


def _config(profile, kernel: str) -> dict[str, str]:
    """The kernel config a capture reads, as this release and architecture would have it (what
    ``--by config.CONFIG_PT_RECLAIM`` groups by); drawn from nothing random."""
    from hugecalc.releases import HVO_ARCH, PT_RECLAIM, parse_release

    release, arch = parse_release(kernel), profile.arch.value
    yes = {True: "y", False: "n"}
    return {"CONFIG_PGTABLE_LEVELS": str(len(profile.levels)), "CONFIG_TRANSPARENT_HUGEPAGE": "y",
            "CONFIG_PT_RECLAIM": yes[release.has(PT_RECLAIM, arch)],
            "CONFIG_HUGETLB_PAGE_OPTIMIZE_VMEMMAP": yes[release.has(HVO_ARCH, arch)]}


def write_synthetic(hosts: int, seed: int, output: str) -> int:
    """``hosts`` captures into the directory ``output`` (one file each) or a ``.jsonl`` file."""
    if hosts < 1:
        raise InputError("--hosts must be at least 1")
    rng = random.Random(seed)
    profiles = {}
    for _, name, _ in PROFILES:
        profiles[name] = load_profile(name)
        profiles[name + ":json"] = profiles[name].model_dump(mode="json")
    if output.endswith((".jsonl", ".ndjson")):
        from hugecalc.files import write_whole

        def lines(tmp: str) -> None:
            with open(tmp, "w") as f:
                for i in range(hosts):
                    f.write(json.dumps(synth_capture(rng, i, profiles), separators=(",", ":")) + "\n")

        write_whole(output, lines, "--output")
        return hosts
    # The folder is written under a temporary name beside it and renamed when whole: an interrupted
    # run never leaves a folder that reads as a complete fleet.
    import shutil
    import tempfile

    final = Path(output)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    except OSError as e:
        raise InputError(f"--output {output}: cannot create the directory: {e.strerror}") from None
    try:
        for i in range(hosts):
            # a folder of our own, renamed whole when done: each file needs no rename of its own
            (folder / f"host-{i:06d}.json").write_text(json.dumps(synth_capture(rng, i, profiles)))
        os.chmod(folder, 0o777 & ~_umask())
        if final.is_dir():
            final.rmdir()  # empty (the command refused a folder with anything in it)
        os.rename(folder, final)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return hosts


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
