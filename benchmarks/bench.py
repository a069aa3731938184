"""`make bench`: each benchmark beside its reference, both measured in this run, as whole processes.

Prints the median wall time of several interleaved runs, the ratio and the issue's target.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
HUGECALC = str(BIN / "hugecalc")
RUNS = 7

# name, command, reference name, reference command, target ratio (command / reference)
BENCHMARKS = [
    (
        "hugecalc vmemmap --pages 1024G --json",
        [HUGECALC, "vmemmap", "--pages", "1024G", "--json"],
        'python -c "import numba, rich, pydantic, click"',
        [sys.executable, "-c", "import numba, rich, pydantic, click"],
        1.5,
    ),
]


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    failed = 0
    print(f"{'benchmark':<58} {'median':>9}   {'reference':<52} {'median':>9} {'ratio':>6} {'target':>7}")
    for name, cmd, ref_name, ref_cmd, target in BENCHMARKS:
        wall(cmd), wall(ref_cmd)  # warm the page cache and the numba cache
        ours, refs = [], []
        for _ in range(RUNS):
            ours.append(wall(cmd))
            refs.append(wall(ref_cmd))
        a, b = statistics.median(ours), statistics.median(refs)
        ok = a / b <= target
        failed += not ok
        print(f"{name:<58} {a * 1000:>7.0f}ms   {ref_name:<52} {b * 1000:>7.0f}ms "
              f"{a / b:>6.2f} {'<=' if ok else '>'}{target:>5}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
