"""`make bench`, record and replay: how much recording slows a program (target at most 2x), and how
fast a record replays (target: 10 million faults under one what-if in under 5 s), beside reading
the record file alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
HUGECALC = str(BIN / "hugecalc")
SQL = ("CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT); WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c "
       "WHERE x<200000) INSERT INTO t SELECT x, printf('%.*c', 200, 'x') FROM c; CREATE INDEX i ON t(b);\n")
FAULTS = 1 << 20  # the synthetic record: 4 passes over 1 GiB, mmap'd and unmapped in turn


def synthetic(path: str) -> None:
    import numpy as np

    sys.path.insert(0, str(Path(__file__).parent.parent))
    from hugecalc.machine.capture import Capture
    from hugecalc.machine.trace import EXIT_MMAP, FAULT, MMAP, MUNMAP, write_record

    rows = []
    for it in range(FAULTS // 262144):
        base = 0x40000000 + it * (2 << 30)
        rows.append((MMAP, base, 1 << 30, 3, 0x22, -1))
        rows += [(FAULT, base + p * 4096, 6, 0, 0, 0) for p in range(262144)]
        rows.append((MUNMAP, base, 1 << 30, 0, 0, 0))
    rows.append((EXIT_MMAP, 0, 0, 0, 0, 0))
    body = np.array(rows, dtype=np.int64)
    n = body.shape[0]
    columns = {"t_ns": np.arange(n, dtype=np.int64) * 100, "tgid": np.full(n, 1000), "tid": np.full(n, 1000),
               "kind": body[:, 0], **{k: body[:, i + 1] for i, k in enumerate("abcde")}}
    capture = Capture.model_validate_json(Path(__file__).parent.parent.joinpath(
        "tests/data/captures/x86-64-6.18.json").read_text())
    write_record(path, columns, {"command": ["synthetic"], "pid": 1000, "exit_status": 0, "page_size": 4096,
                                 "kernel": capture.kernel, "lost_events": 0,
                                 "capture": capture.model_copy(update={"processes": []}).model_dump(mode="json")})


def replay_speed() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "synthetic.record")
        synthetic(path)
        start = time.perf_counter()
        subprocess.run([HUGECALC, "mthp", "--trace", path, "--top-level", "never", "--json"], check=True,
                       stdout=subprocess.DEVNULL)
        replay = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"from hugecalc.machine.trace import read_record; read_record({path!r})"],
                       check=True)
        read = time.perf_counter() - start
    per_fault = replay / (2 * FAULTS)  # two runs: the settings at the time and the what-if
    ten_million = per_fault * 10_000_000
    ok = ten_million < 5
    print(f"hugecalc mthp --trace FILE (a record of {FAULTS:,} faults, replayed twice: now and the what-if)\n"
          f"  {replay * 1000:>8.0f} ms  ({per_fault * 1e6:.2f} us a fault: 10 million under one what-if "
          f"{ten_million:.0f} s, target < 5 s: {'ok' if ok else 'MISSED'})\n"
          f"  {read * 1000:>8.0f} ms  reference: reading the record file alone\n")
    return not ok


def record_overhead() -> int:
    if os.geteuid() != 0 or not shutil.which("sqlite3"):
        print("hugecalc record: needs root and sqlite3 (skipped)\n")
        return 0
    plain = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run(["sqlite3", ":memory:"], input=SQL, text=True, check=True, stdout=subprocess.DEVNULL)
        plain.append(time.perf_counter() - start)
    recorded = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(5):
            out = subprocess.run([HUGECALC, "record", "-o", os.path.join(tmp, "r"), "--", "sqlite3", ":memory:"],
                                 input=SQL, text=True, capture_output=True, check=True).stderr
            recorded.append(float(out.rsplit(" in ", 1)[1].split(" s;")[0]))
    a, b = sorted(recorded)[2], sorted(plain)[2]
    ok = a / b <= 2
    print(f"hugecalc record -- sqlite3 (200,000 rows and an index; the command's own time)\n"
          f"  {a * 1000:>8.0f} ms  recorded\n  {b * 1000:>8.0f} ms  reference: the same command alone\n"
          f"  slowdown {a / b:.2f}x (target <= 2x: {'ok' if ok else 'MISSED'})\n")
    return not ok


def main() -> int:
    return replay_speed() + record_overhead()


if __name__ == "__main__":
    sys.exit(main())
