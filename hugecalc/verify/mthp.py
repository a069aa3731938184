"""``verify mthp``: run the pass on the running kernel and compare faults, page tables and folios.

The sysfs sequence, one function per step (as damo writes one sysfs directory per function):
every THP switch off while the probe prepopulates (:func:`thp_off`), the tmpfs mount a tmpfs pass
needs (:func:`scratch_tmpfs`), the switches of the pass (:func:`set_pass_switches`), then the
probe's pass and the checks (:func:`folio_checks`).  Every write goes through the ``Restorer``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from typing import Iterator

from hugecalc.machine import kernelfs
from hugecalc.calc.orders import Pass, PassShape, ThpSettings, pass_settings
from hugecalc.errors import HostError
from hugecalc.profiles import Profile
from hugecalc.releases import Release
from hugecalc.machine.restore import Restorer
from hugecalc.machine.folios import mapped_folios
from hugecalc.units import fmt_size
from hugecalc.verify.common import (MAX_VERIFY_TOUCHES, Check, VerifyResult, exact_check, placement, placement_note,
                                    require_free, require_root)

ANON_FAULT_STAT, SHMEM_STAT = "anon_fault_alloc", "shmem_alloc"


def per_size_dirs() -> dict[int, object]:
    """transparent_hugepage/hugepages-<size>kB, by folio size in bytes."""
    return {kernelfs.thp_size_bytes(d.name): d for d in kernelfs.glob(kernelfs.SYS_THP, "hugepages-*kB")}


def thp_stats(stat: str) -> dict[int, int]:
    """Per-size counter from transparent_hugepage/hugepages-<size>kB/stats/<stat>."""
    out = {}
    for size, d in per_size_dirs().items():
        path = d / "stats" / stat
        if kernelfs.exists(path):
            out[size] = int(kernelfs.read_text(path))
    return out


def thp_off(restorer: Restorer) -> None:
    """Every THP switch never, the zero page on: what the probe prepopulates is base pages."""
    restorer.set(kernelfs.SYS_THP / "enabled", "never")
    restorer.set(kernelfs.SYS_THP / "shmem_enabled", "never")
    for d in per_size_dirs().values():
        for knob in ("enabled", "shmem_enabled"):
            if kernelfs.exists(d / knob):
                restorer.set(d / knob, "never")
    restorer.set(kernelfs.SYS_THP / "use_zero_page", "1")


def set_pass_switches(restorer: Restorer, profile: Profile, p: Pass) -> None:
    """The switches of the pass: the top level, then every per-size mode (by order)."""
    restorer.set(kernelfs.SYS_THP / "enabled", p.top_level)
    dirs = per_size_dirs()
    for knob, modes in (("enabled", p.anon_modes), ("shmem_enabled", p.shm_modes)):
        for order, mode in modes.items():
            d = dirs.get(profile.page_size << order)
            if d is None or not kernelfs.exists(d / knob):
                if mode != "never":
                    raise HostError(f"the running kernel has no {fmt_size(profile.page_size << order)} {knob} switch")
                continue
            restorer.set(d / knob, mode)
    if p.memory in ("shmem", "sysv") or p.huge in ("deny", "force"):
        # after the per-size modes: force needs the PMD size alone at inherit (shmem_valid_huge());
        # sysv: the internal shm mount's huge= follows it; deny/force override every mount
        restorer.set(kernelfs.SYS_THP / "shmem_enabled", p.huge)


@contextmanager
def scratch_tmpfs(restorer: Restorer, tmp: str, p: Pass) -> Iterator[str]:
    """A tmpfs mounted with the pass's huge= (the Restorer unmounts it after a crash too)."""
    mount = os.path.join(tmp, "mnt")
    os.mkdir(mount)
    restorer.scratch("mount", mount)
    huge = "never" if p.huge in ("deny", "force") else p.huge  # a mount takes neither: shmem_enabled says it
    opts = f"huge={huge},size={p.file_offset + p.vma_size + (64 << 20)}"
    if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "hugecalc", mount]).returncode:
        raise HostError(f"cannot mount a tmpfs with {opts}")
    try:
        yield os.path.join(mount, "file")
    finally:
        subprocess.run(["umount", mount])


def probe_spec(profile: Profile, p: Pass) -> dict:
    """What the probe process maps and touches: the pass, from its checked settings."""
    return {"mode": "mthp", "memory": p.memory, **placement(profile, p.start), "size": p.vma_size,
            "file_offset": p.file_offset, "stride": p.touch_stride, "prepopulated_stride": p.prepopulated_stride or None,
            "access": p.access, "advice": (["hugepage"] if p.madvise else []) + (["nohugepage"] if p.nohugepage else [])}


def run_probe(restorer: Restorer, profile: Profile, p: Pass, spec: dict, tmp: str, stat: str) -> dict:
    """Start the probe, let it prepopulate, set the pass's switches, run the pass; its faults and
    VmPTE, the folios mapped in its VMA, and the stats/ counters around the pass."""
    spec_path = os.path.join(tmp, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    probe = [sys.executable, "-m", "hugecalc.machine._probe", spec_path, str(os.getpid())]
    with subprocess.Popen(probe, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as child:
        try:
            ready = json.loads(child.stdout.readline() or "{}")
            if "ready" not in ready:
                raise HostError(f"the probe process: {ready.get('error') or 'exited before the pass'}")
            set_pass_switches(restorer, profile, p)
            before = thp_stats(stat)
            child.stdin.write("go\n")
            child.stdin.flush()
            out = json.loads(child.stdout.readline() or "{}")
            if "faults" not in out:
                raise HostError(f"the probe process: {out.get('error') or 'no result'}")
            out["stats"] = {s: n - before.get(s, 0) for s, n in thp_stats(stat).items()}
            out["start"] = ready["start"]
            out["mapped"], out["unclassified"] = mapped_folios(child.pid, ready["start"], ready["start"] + p.vma_size,
                                                               profile.page_size)
            return out
        finally:
            child.kill()


def folio_checks(profile: Profile, predicted_folios: dict[int, int], p: Pass, out: dict,
                 notes: list[str]) -> list[Check]:
    """Folios by size: the probe's own, from its pagemap and /proc/kpageflags (exact whatever else
    runs), the prepopulated base pages among them; pages kpageflags reads as 0 must account
    exactly for the folios not seen."""
    page = profile.page_size
    folios = dict(predicted_folios)
    if p.prepopulated_stride:
        n_pre = len(range(out["start"], out["start"] + p.vma_size, p.prepopulated_stride))
        folios[page] = folios.get(page, 0) + n_pre
    mapped, unclassified = out["mapped"], out["unclassified"]
    checks = []
    for size in sorted(set(mapped) | set(folios)):
        want, got = folios.get(size, 0), mapped.get(size, 0)
        checks.append(Check(figure=f"{fmt_size(size)} folios mapped (pagemap, kpageflags)", predicted=want,
                            measured=got, match=got == want or (unclassified > 0 and got <= want),
                            why=f"+{want - got:,} unseen: see the unclassified pages" if got != want and unclassified
                            else None))
    if unclassified:
        missing = sum((folios.get(s, 0) - mapped.get(s, 0)) * s for s in folios) // page
        checks.append(Check(figure="pages kpageflags could not classify = pages of unseen folios",
                            predicted=missing, measured=unclassified, match=missing == unclassified))
        notes.append(f"{unclassified} mapped pages read as 0 in /proc/kpageflags and could not be classified")
    return checks


def stats_notes(page: int, folios: dict[int, int], stats: dict[int, int], stat: str) -> list[str]:
    """The system-wide stats/ counters beside the probe's folios: they catch other processes too."""
    notes = []
    for size, got in sorted(stats.items()):
        want = folios.get(size, 0)
        if size != page and got != want:
            notes.append(f"stats/{stat} for {fmt_size(size)} moved by {got}, not {want}: the counters are "
                         "system-wide, and allocations outside this VMA (the probe's own interpreter, other "
                         "processes) count there too")
    return notes


def verify_mthp(profile: Profile, release: Release, shape: PassShape, settings: ThpSettings,
                notes: list[str]) -> VerifyResult:
    """Run the pass on the running kernel and compare faults and folios by size.

    Kernel reference
    ----------------
    ``count_mthp_stat(order, MTHP_STAT_ANON_FAULT_ALLOC)`` in ``alloc_anon_folio()`` and
    ``do_huge_pmd_anonymous_page()``; ``MTHP_STAT_SHMEM_ALLOC`` in ``shmem_alloc_and_add_folio()``.
    """
    from hugecalc.calc.mthp import compute_mthp

    require_root("mthp")
    if not kernelfs.exists(kernelfs.SYS_THP / "enabled"):
        raise HostError(f"{kernelfs.SYS_THP} is missing: this kernel has no THP")
    predicted = compute_mthp(profile, release, shape, settings)
    p = pass_settings(profile, release, shape, settings, [])
    require_free(predicted.populated_bytes, "the pass's pages")
    if p.vma_size // p.touch_stride > MAX_VERIFY_TOUCHES:
        raise HostError("too many touches to run; use a larger --touch-stride or a smaller --vma-size")
    stat = ANON_FAULT_STAT if p.memory == "anon" else SHMEM_STAT
    spec = probe_spec(profile, p)
    with Restorer() as restorer, tempfile.TemporaryDirectory() as tmp:
        restorer.scratch("dir", tmp)
        thp_off(restorer)
        if p.memory == "tmpfs":
            with scratch_tmpfs(restorer, tmp, p) as path:
                out = run_probe(restorer, profile, p, {**spec, "path": path}, tmp, stat)
        else:
            out = run_probe(restorer, profile, p, spec, tmp, stat)
    if out["null_pass_faults"]:
        notes.append(f"the touch loop itself took {out['null_pass_faults']} faults in a null pass; subtracted")
    measured_faults = out["faults"] - out["null_pass_faults"]
    checks = [Check(figure="page faults of the pass", predicted=predicted.faults, measured=measured_faults,
                    match=predicted.faults == measured_faults),
              exact_check("page-table bytes (VmPTE delta)", predicted.page_table_bytes,
                          (out["after_kb"] - out["mapped_kb"]) << 10)]
    note = placement_note(profile, p.start, out["start"])
    if note:
        notes.append(note)
    folios = {f.size_bytes: f.count for f in predicted.folios}
    checks += folio_checks(profile, folios, p, out, notes)
    notes += stats_notes(profile.page_size, folios, out["stats"], stat)
    return VerifyResult(command="verify mthp", profile=profile.name, kernel=str(release),
                        inputs={**predicted.inputs, "running_kernel": kernelfs.running_release()}, checks=checks,
                        notes=notes)
