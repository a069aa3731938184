"""``verify mthp``: run the pass on the running kernel and compare faults, page tables and folios."""

from __future__ import annotations

from hugecalc import host
from hugecalc.errors import HostError
from hugecalc.profiles import Profile
from hugecalc.releases import Release
from hugecalc.restore import Restorer
from hugecalc.snapshot import mapped_folios
from hugecalc.units import fmt_size
from hugecalc.verify.common import (MAX_VERIFY_TOUCHES, Check, VerifyResult, exact_check, placement, placement_note,
                                    require_free, require_root)


def _thp_stats(profile: Profile, stat: str) -> dict[int, int]:
    """Per-size counter from transparent_hugepage/hugepages-<size>kB/stats/<stat>."""
    out = {}
    for d in host.SYS_THP.glob("hugepages-*kB"):
        path = d / "stats" / stat
        if path.exists():
            out[int(d.name.removeprefix("hugepages-").removesuffix("kB")) << 10] = int(host.read_text(path))
    return out


def verify_mthp(profile: Profile, release: Release, kw: dict, notes: list[str]) -> VerifyResult:
    """Run the pass on the running kernel and compare faults and folios by size.

    Kernel reference
    ----------------
    ``count_mthp_stat(order, MTHP_STAT_ANON_FAULT_ALLOC)`` in ``alloc_anon_folio()`` and
    ``do_huge_pmd_anonymous_page()``; ``MTHP_STAT_SHMEM_ALLOC`` in ``shmem_alloc_and_add_folio()``.
    """
    import json
    import os
    import subprocess
    import sys
    import tempfile

    from hugecalc.calc.mthp import compute_mthp

    require_root("mthp")
    if not (host.SYS_THP / "enabled").exists():
        raise HostError(f"{host.SYS_THP} is missing: this kernel has no THP")
    predicted = compute_mthp(profile, release, **kw)
    i = predicted.inputs
    memory = i["memory"]
    page = profile.page_size
    require_free(predicted.populated_bytes, "the pass's pages")
    if i["vma_size_bytes"] // i["touch_stride_bytes"] > MAX_VERIFY_TOUCHES:
        raise HostError("too many touches to run; use a larger --touch-stride or a smaller --vma-size")
    per_size = {int(d.name.removeprefix("hugepages-").removesuffix("kB")) << 10: d
                for d in host.SYS_THP.glob("hugepages-*kB")}
    stat = "anon_fault_alloc" if memory == "anon" else "shmem_alloc"
    spec = {"mode": "mthp", "memory": memory, **placement(profile, i["vma_start"]), "size": i["vma_size_bytes"],
            "file_offset": i["file_offset_bytes"], "stride": i["touch_stride_bytes"],
            "prepopulated_stride": i["prepopulated_stride_bytes"], "access": i["access"],
            "advice": (["hugepage"] if i["madvise"] else []) + (["nohugepage"] if i["nohugepage"] else [])}
    with Restorer() as restorer, tempfile.TemporaryDirectory() as tmp:
        restorer.scratch("dir", tmp)
        # Prepopulate with every THP size off, so that those pages are base pages.
        restorer.set(host.SYS_THP / "enabled", "never")
        restorer.set(host.SYS_THP / "shmem_enabled", "never")
        for d in per_size.values():
            for knob in ("enabled", "shmem_enabled"):
                if (d / knob).exists():
                    restorer.set(d / knob, "never")
        restorer.set(host.SYS_THP / "use_zero_page", "1")
        mount = None
        if memory == "tmpfs":
            mount = os.path.join(tmp, "mnt")
            os.mkdir(mount)
            restorer.scratch("mount", mount)
            opts = f"huge={i['huge']},size={i['file_offset_bytes'] + i['vma_size_bytes'] + (64 << 20)}"
            if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "hugecalc", mount]).returncode:
                raise HostError(f"cannot mount a tmpfs with {opts}")
            spec["path"] = os.path.join(mount, "file")
        spec_path = os.path.join(tmp, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        try:
            probe = [sys.executable, "-m", "hugecalc._probe", spec_path, str(os.getpid())]
            with subprocess.Popen(probe, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
                try:
                    ready = json.loads(child.stdout.readline() or "{}")
                    if "ready" not in ready:
                        raise HostError(f"the probe process: {ready.get('error') or 'exited before the pass'}")
                    start = ready["start"]
                    # The configuration of the pass.
                    restorer.set(host.SYS_THP / "enabled", i["top_level"])
                    if memory in ("shmem", "sysv"):  # sysv: the internal shm mount's huge= follows it
                        restorer.set(host.SYS_THP / "shmem_enabled", i["huge"])
                    for knob, modes in (("enabled", i["enabled"]), ("shmem_enabled", i["shmem_enabled"])):
                        for label, mode in modes.items():
                            _set_size(restorer, per_size, label, knob, mode)
                    before = _thp_stats(profile, stat)
                    child.stdin.write("go\n")
                    child.stdin.flush()
                    out = json.loads(child.stdout.readline() or "{}")
                    after = _thp_stats(profile, stat)
                    if "faults" in out:
                        mapped, unclassified = mapped_folios(child.pid, start, start + i["vma_size_bytes"], page)
                finally:
                    child.kill()
        finally:
            if mount:
                subprocess.run(["umount", mount])
    if "faults" not in out:
        raise HostError(f"the probe process: {out.get('error') or 'no result'}")
    if out["null_pass_faults"]:
        notes.append(f"the touch loop itself took {out['null_pass_faults']} faults in a null pass; subtracted")
    measured_faults = out["faults"] - out["null_pass_faults"]
    checks = [Check(figure="page faults of the pass", predicted=predicted.faults, measured=measured_faults,
                    match=predicted.faults == measured_faults)]
    note = placement_note(profile, i["vma_start"], start)
    if note:
        notes.append(note)
    end = start + i["vma_size_bytes"]
    checks.append(exact_check("page-table bytes (VmPTE delta)", predicted.page_table_bytes,
                              (out["after_kb"] - out["mapped_kb"]) << 10))
    # Folios by size: the child's own, from its pagemap and /proc/kpageflags (exact whatever else
    # runs); the prepopulated base pages are there too.  The system-wide stats/ counters are shown
    # beside them for reference, and catch any other process that faulted during the pass.
    folios = {f.size_bytes: f.count for f in predicted.folios}
    n_pre = len(range(start, end, i["prepopulated_stride_bytes"])) if i["prepopulated_stride_bytes"] else 0
    folios[page] = folios.get(page, 0) + n_pre
    for size in sorted(set(mapped) | set(folios)):
        want, got = folios.get(size, 0), mapped.get(size, 0)
        short = want - got
        checks.append(Check(figure=f"{fmt_size(size)} folios mapped (pagemap, kpageflags)", predicted=want,
                            measured=got, match=got == want or (unclassified > 0 and got <= want),
                            why=f"+{short:,} unseen: see the unclassified pages" if got != want and unclassified
                            else None))
    if unclassified:
        # Pages kpageflags reports no flags for: they must account exactly for the folios not seen.
        missing = sum((folios.get(s, 0) - mapped.get(s, 0)) * s for s in folios) // page
        checks.append(Check(figure="pages kpageflags could not classify = pages of unseen folios",
                            predicted=missing, measured=unclassified, match=missing == unclassified))
        notes.append(f"{unclassified} mapped pages read as 0 in /proc/kpageflags and could not be classified")
    noisy = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    for size, got in sorted(noisy.items()):
        want = folios.get(size, 0) if size != page else 0
        if size != page and got != want:
            notes.append(f"stats/{stat} for {fmt_size(size)} moved by {got}, not {want}: the counters are "
                         "system-wide, and allocations outside this VMA (the probe's own interpreter, other "
                         "processes) count there too")
    return VerifyResult(command="verify mthp", profile=profile.name, kernel=str(release),
                        inputs={**i, "running_kernel": host.running_release()}, checks=checks, notes=notes)


def _set_size(restorer: Restorer, per_size: dict, label: str, knob: str, mode: str) -> None:
    from hugecalc.units import parse_size

    d = per_size.get(parse_size(label))
    if d is None or not (d / knob).exists():
        if mode != "never":
            raise HostError(f"the running kernel has no {label} {knob} switch")
        return
    restorer.set(d / knob, mode)
