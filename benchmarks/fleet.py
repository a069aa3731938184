"""`make bench` part: 100,000 synthetic hosts, vmemmap and mthp what-ifs, in-process and on a
LocalCluster of 1 and 2 worker processes; hosts per second and peak memory of each.

HUGECALC_FLEET_HOSTS overrides the number of hosts (default 100000).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HUGECALC = str(Path(sys.executable).parent / "hugecalc")
HOSTS = int(os.environ.get("HUGECALC_FLEET_HOSTS", 100_000))
WHAT_IFS = {"vmemmap": ["vmemmap", "--kernel", "7.1"], "mthp": ["mthp", "--size", "64k"]}


def timed(cmd: list[str]) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"{cmd} failed")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def worker_peak_mb(client) -> float:
    return max(client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024).values())


def main() -> int:
    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "fleet.jsonl")
        t, _ = timed([HUGECALC, "fleet", "synth", "--hosts", str(HOSTS), "--seed", "1", "--output", source])
        print(f"fleet: {HOSTS:,} synthetic hosts, {os.path.getsize(source) / 2**20:,.0f} MiB of JSON Lines "
              f"(written in {t:.1f} s)")
        missed = 0
        for args in WHAT_IFS.values():
            t0, rss = timed([HUGECALC, "fleet", args[0], source, *args[1:], "--json"])
            print(f"  fleet {' '.join(args)}\n    in-process           {HOSTS / t0:>8,.0f} hosts/s  {t0:6.1f} s  "
                  f"peak RSS {rss:,.0f} MB")
            for workers in (1, 2):
                with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, Client(cluster) as client:
                    t, rss = timed([HUGECALC, "fleet", args[0], source, *args[1:], "--json",
                                    "--scheduler", cluster.scheduler_address])
                    peak = worker_peak_mb(client)
                print(f"    LocalCluster {workers} worker{'s' if workers > 1 else ' '} {HOSTS / t:>8,.0f} hosts/s  "
                      f"{t:6.1f} s  peak RSS client {rss:,.0f} MB, worker {peak:,.0f} MB")
            ok = t < t0
            missed += not ok
            print(f"    2 workers vs in-process: {t0 / t:.2f}x (target > 1: {'ok' if ok else 'MISSED'})")
    return missed


if __name__ == "__main__":
    sys.exit(main())
