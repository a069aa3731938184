"""``hugecalc fleet``: one question asked of many hosts' captures, on Dask.

Sources (capture files, directories, globs, JSON Lines or Parquet tables of captures) are cut into
partitions of a few hundred hosts; each partition is one Dask task that reads its captures, computes
per host the same result ``--host FILE`` gives, and returns small rows.  Only a partition's captures
are in memory at a time.  In-process by default (Dask's synchronous scheduler), or on an existing
``dask.distributed`` cluster (``--scheduler ADDRESS``).  Rows come back in source order, so the
totals are the same wherever they were computed.
"""

from __future__ import annotations

import gc
import json
from array import array
from operator import methodcaller
from typing import Any, Callable

import numpy as np
from pydantic import ValidationError

from hugecalc.errors import HugecalcError, InputError
from hugecalc.machine.capture import CAPTURE_SCHEMA_VERSION, Capture, captured_release, printable
from hugecalc.fleet.sources import captures, locators, partitions
from hugecalc.result import Derivation, Model, Result
from hugecalc.versions import parse_release

#: One host's figures: (capture, profile, release, the what-if) -> {figure: value}, as the command computes
#: them for ``--host FILE`` (each command declares its own: ``Spec.fleet``); or why the what-if does not apply
#: to the host, as a str or raised as an InputError (a str costs no raise: a fleet's old kernels can be half of it).
HostRow = Callable[[Any, Any, Any, dict], "dict | str"]


class Stats(Model):
    """One metric over a group of hosts."""

    sum: int
    mean: float
    p50: float
    p95: float
    p99: float


STATS = tuple(Stats.model_fields)  # sum, mean, p50, p95, p99: the columns of every metric


class FleetGroup(Model):
    group: dict[str, str]  # --by key -> value; {} for the whole fleet without --by, {"all": "all"} with it
    hosts: int
    metrics: dict[str, Stats]


class HostFailed(Model):
    source: str
    error: str


class HostSkipped(Model):
    source: str
    reason: str


class SkippedReason(Model):
    reason: str
    hosts: int


class FleetResult(Result):
    """``hugecalc fleet COMMAND``: per group, each metric's sum, mean and percentiles over hosts."""

    hosts: int
    hosts_failed: int
    failed: list[HostFailed]
    hosts_skipped: int
    #: the hosts the what-if does not apply to, by name: at most SKIPPED_LISTED for each reason
    skipped: list[HostSkipped]
    skipped_reasons: list[SkippedReason]  # every reason, with its hosts, most first
    groups: list[FleetGroup]


# --- one host ---------------------------------------------------------------------------------------


def _field(data: dict, key: str) -> str:
    """A capture field by dotted path (arch, kernel, thp.enabled, config.CONFIG_PT_RECLAIM, ...),
    from the capture as read (``profile`` is its name)."""
    value: Any = data
    for part in {"profile": "profile.name"}.get(key, key).split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "(not captured)" if value is None else printable(str(value))  # a group of its own, named so


def host_row(row: HostRow, capture: Any, options: dict) -> dict | str:
    """One host's figures under the what-if, on its captured release or the one --kernel names."""
    release = parse_release(options["kernel"]) if options.get("kernel") else captured_release(capture)
    return row(capture, capture.profile, release, options["what_if"])


def derivations(figures: dict[str, str], rule: str, groups: list[dict]) -> list[Derivation]:
    """How each fleet figure was derived (``figures``: figure -> how one host's value is got; ``rule``:
    the per-host calculation): per host, then over the hosts (with the whole fleet's first figure)."""
    out = [Derivation(scope="per host", figure="each host's figures",
                      formula="; ".join(f"{m} = {how}" for m, how in figures.items()), rule=rule)]
    total = groups[-1] if groups else None
    if total and total["metrics"]:
        m, s = next(iter(total["metrics"].items()))
        n = total["hosts"]

        def num(x: float) -> str:
            return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.2f}"

        out.append(Derivation(
            scope="over hosts", figure=f"sum, mean, p50, p95, p99 (e.g. {m}, all hosts)",
            formula=f"sum of {n:,} hosts = {num(s['sum'])}; mean = {num(s['sum'])} / {n:,} = {num(s['mean'])}; "
                    f"p50 / p95 / p99 = {num(s['p50'])} / {num(s['p95'])} / {num(s['p99'])}",
            rule="numpy.percentile (linear interpolation between the two nearest hosts); hosts that failed or "
                 "that the what-if does not apply to are left out of every figure"))
    return out


def run_partition(host_figures: HostRow, items: list[tuple[str, str, int, int]], options: dict, by: list[str],
                  figures: list[str] = (), keep_rows: bool = False) -> Hosts:
    """One Dask task: every host of the partition (errors too), kept compact where it is computed (a
    worker sends columns, not rows: a cluster's client has almost nothing to do per host)."""
    from hugecalc.calc import EXPLAINING

    token = EXPLAINING.set(False)  # a host's derivations are never printed: not built
    # A partition's objects (parsed captures, models, rows) hold no reference cycles: reference counting
    # frees them, and the cyclic collector's passes over the rows kept would cost a third of a host's time.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return Hosts(list(figures), keep_rows).add(_run_partition(host_figures, items, options, by))
    finally:
        EXPLAINING.reset(token)
        if collecting:
            gc.enable()


def _run_partition(host_figures: HostRow, items: list[tuple[str, str, int, int]], options: dict,
                   by: list[str]) -> list[dict]:
    if options.get("walks"):
        from hugecalc.calc import faults

        faults.kernels()  # hundreds of walks: compile (or load) them once for the whole task
    rows = []
    profiles = SEEN_PROFILES  # equal profiles read as one object, in every task of this process
    for item in items:
        for source, text, error in captures(item):
            row, capture = read_host(source, text, error, by, profiles)
            if capture is not None:
                figure_host(row, capture, host_figures, options)
            rows.append(row)
    return rows


def read_host(source: str, text: str | None, error: str | None, by: list[str],
              profiles: list[tuple[dict, Any]]) -> tuple[dict, Any]:
    """One host's row as read (its error, if its capture is unreadable or damaged), and its capture."""
    row: dict = {"source": source, "host": None, "arch": None, "kernel": None, "profile": None,
                 "error": error, "skipped": None, "group": None}
    if text is None:
        return row, None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("kind") != "hugecalc-capture":
            raise InputError("not a hugecalc capture")
        if not isinstance(data.get("schema_version"), int) or data["schema_version"] > CAPTURE_SCHEMA_VERSION:
            raise InputError(f"capture schema_version {data.get('schema_version')!r} is newer than "
                             f"{CAPTURE_SCHEMA_VERSION}")
        capture = _validated(data, text, profiles)
        row.update(host=capture.hostname, arch=capture.arch, kernel=capture.kernel,
                   profile=capture.profile.name, group=[_field(data, k) for k in by])
        return row, capture
    except ValueError as e:
        if isinstance(e, ValidationError):
            row["error"] = f"damaged capture: {e.errors()[0]['msg']}"
        elif isinstance(e, json.JSONDecodeError):  # as --host FILE says it
            row["error"] = f"not a capture: not valid JSON ({e}; truncated?)"
        else:
            row["error"] = str(e)
    except HugecalcError as e:
        row["error"] = str(e)
    return row, None


def figure_host(row: dict, capture: Any, host_figures: HostRow, options: dict) -> None:
    """A host's figures into its row: hugecalc's own work per host once the capture is read."""
    try:
        figures = host_row(host_figures, capture, options)
    except InputError as e:  # the what-if does not apply to this host (64K mTHP on 64K pages)
        figures = str(e)
    except HugecalcError as e:
        figures = {"error": str(e)}
    row.update({"skipped": figures} if type(figures) is str else figures)


#: The profiles this process has read (as written, as validated; at most 64): a host's profile is the
#: object an earlier host with an equal one got, so what is computed per profile object (``calc.per_profile``:
#: walks, HVO rules) is computed once for the fleet, not once per task.
SEEN_PROFILES: list[tuple[dict, Any]] = []


def _validated(data: dict, text: str, profiles: list[tuple[dict, Any]]) -> Any:
    """The capture, its profile the object an earlier capture of the task with an equal one got."""
    raw = data.get("profile")
    for seen, profile in profiles:
        if raw == seen:
            return Capture.model_validate({**data, "profile": profile}, context={"text": text})
    capture = Capture.model_validate(data, context={"text": text})
    if len(profiles) < 64:
        profiles.append((raw, capture.profile))
    return capture


# --- many hosts ----------------------------------------------------------------------------------------


def run(host_figures: HostRow, sources: list[str], options: dict, by: list[str], scheduler: str | None,
        progress: Callable[[int, int], None] | None = None, timeout: float | None = None,
        figures: list[str] = (), keep_rows: bool = False) -> Hosts:
    """Every host, in source order (``figures`` kept as columns; ``keep_rows``: the whole rows too):
    in-process, or on the cluster at ``scheduler`` (hosts whose task is lost or late, past ``timeout``
    seconds, fail: :func:`on_cluster`).  Each partition's hosts are kept compact where they are computed."""
    import dask

    parts = partitions(sources)
    tasks = [dask.delayed(run_partition, pure=True)(host_figures, p, options, by, list(figures), keep_rows)
             for p in parts]
    if scheduler is None:
        done = []
        for i, task in enumerate(tasks):
            done.append(task.compute(scheduler="synchronous"))
            if progress:
                progress(i + 1, len(tasks))
    else:
        done = on_cluster(scheduler, tasks, timeout,
                          lambda i, why: Hosts(list(figures), keep_rows).add(failed_rows(parts[i], why)), progress)
    hosts = Hosts(list(figures), keep_rows)
    for part in done:
        hosts.extend(part)
    return hosts


#: How long a cluster run waits for its tasks, unless told (--timeout).
CLUSTER_TIMEOUT = 600.0


def on_cluster(scheduler: str, tasks: list, timeout: float | None, failed: Callable[[int, str], Any],
               progress: Callable[[int, int], None] | None = None) -> list:
    """The tasks' results from the dask.distributed cluster at ``scheduler``, in order. A task the
    cluster loses (its worker died, again and again: KilledWorker), or one without a result within
    ``timeout`` seconds of the start (a hung worker), becomes ``failed(index, why)``; the others are
    kept and the run goes on."""
    import asyncio

    from distributed import Client, as_completed

    try:
        client = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as e:
        raise InputError(f"--scheduler {scheduler}: cannot reach a dask scheduler there ({e})") from None
    timeout = CLUSTER_TIMEOUT if timeout is None else timeout
    with client:
        futures = client.compute(tasks)
        index = {f.key: i for i, f in enumerate(futures)}
        results: list = [None] * len(futures)
        done = 0
        try:
            # with_results: each result fetched as its task ends, not one round trip at a time here
            for future, result in as_completed(futures, timeout=timeout, with_results=True, raise_errors=False):
                i = index[future.key]
                if future.status == "finished":
                    results[i] = result
                else:  # whatever the cluster raised (an (type, exception, traceback) triple) costs only this task
                    e = result[1] if isinstance(result, tuple) else result
                    results[i] = failed(i, f"the cluster lost this task ({type(e).__name__}: {e})")
                done += 1
                if progress:
                    progress(done, len(futures))
        except (TimeoutError, asyncio.TimeoutError):
            late = [f for f in futures if results[index[f.key]] is None]
            client.cancel(late)
            for f in late:
                results[index[f.key]] = failed(index[f.key], f"no result within {timeout:g} s (--timeout): a "
                                                             "worker hung or was lost")
    return results


def failed_rows(part: list[tuple[str, str, int, int]], why: str) -> list[dict]:
    """The rows of a partition the cluster did not compute: each of its hosts failed with ``why``."""
    sources = [source for item in part for source in locators(item)]
    return [{"source": src, "error": why, "skipped": None, "group": None} for src in sources]


#: A figure a host has no value for (pgtable's "after madvise" without --after): left out of its totals.
NO_VALUE = -(1 << 63)


#: Hosts a what-if does not apply to, named for each reason (a fleet's old kernels can be half of it: its JSON
#: would be mostly their names, its memory grow with them); all are counted; --output has each one's row.
SKIPPED_LISTED = 100


class Hosts:
    """What a run keeps of its hosts, in source order: per figure an int64 column over the hosts it
    was computed for, their --by groups, the failed and the skipped hosts with the reason, and the
    whole rows only for --output.  About 8 bytes a host and figure: memory stays flat in the hosts."""

    def __init__(self, figures: list[str], keep_rows: bool = False) -> None:
        self.columns = {m: array("q") for m in figures}
        self.groups: list[tuple] = []
        self.failed: list[dict] = []
        self.skipped: dict[str, list] = {}  # reason -> [hosts, the sources of the first SKIPPED_LISTED]
        self.skipped_count = 0
        self.rows: list[dict] | None = [] if keep_rows else None
        self.count = 0
        self._texts: dict[str, str] = {}  # a reason many hosts share, kept once

    def _once(self, text: str) -> str:
        return self._texts.setdefault(text, text)

    def _skip(self, reason: str, n: int, sources: list[str]) -> None:
        entry = self.skipped.setdefault(reason, [0, []])
        entry[0] += n
        entry[1] += sources[:SKIPPED_LISTED - len(entry[1])]
        self.skipped_count += n

    def add(self, rows: list[dict]) -> Hosts:
        self.count += len(rows)
        if self.rows is not None:
            self.rows += rows
        ok = [r for r in rows if r["error"] is None and r["skipped"] is None]
        for r in rows if len(ok) < len(rows) else ():
            if r["error"] is not None:
                self.failed.append({"source": r["source"], "error": self._once(r["error"])})
            elif r["skipped"] is not None:
                self._skip(r["skipped"], 1, [r["source"]])
        for m, column in self.columns.items():  # a column at a time, in C
            values = list(map(methodcaller("get", m), ok))
            column.extend([NO_VALUE if v is None else v for v in values] if None in values else values)
        self.groups += [tuple(r["group"]) for r in ok if r["group"]]
        return self

    def extend(self, other: Hosts) -> None:
        self.count += other.count
        for m, column in self.columns.items():
            column.extend(other.columns[m])
        self.groups += other.groups
        self.failed += other.failed
        for reason, (n, sources) in other.skipped.items():
            self._skip(reason, n, sources)
        if self.rows is not None and other.rows is not None:
            self.rows += other.rows


def aggregate(figures: list[str], hosts: Hosts, by: list[str]) -> list[dict]:
    """Per group (and in total): hosts, and sum, mean, p50, p95, p99 of each figure."""
    columns = {m: np.frombuffer(hosts.columns[m], dtype=np.int64) for m in figures if m in hosts.columns}
    n = len(next(iter(hosts.columns.values()), ()))
    keyed: list[tuple[tuple, np.ndarray]] = []
    if by:
        codes: dict[tuple, int] = {}
        of_host = np.fromiter((codes.setdefault(g, len(codes)) for g in hosts.groups), dtype=np.int64, count=n)
        keyed = [(key, of_host == code) for key, code in sorted(codes.items())]
    out = []
    for key, members in keyed + [((), np.ones(n, dtype=bool))]:
        metrics = {}
        for m, column in columns.items():
            values = column[members]
            values = values[values != NO_VALUE]
            if values.size == 0:
                continue
            total = sum(values.tolist())  # exact: a fleet's bytes overflow a float64's integers (2^53)
            p50, p95, p99 = np.percentile(values.astype(np.float64), [50, 95, 99])
            metrics[m] = {"sum": total, "mean": total / values.size, "p50": float(p50), "p95": float(p95),
                          "p99": float(p99)}
        out.append({"group": dict(zip(by, key)) if key else ({"all": "all"} if by else {}),
                    "hosts": int(members.sum()), "metrics": metrics})
    return out


def write_parquet(path: str, rows: list[dict], force: bool = False) -> None:
    """One row per host, through pyarrow, whole or not at all (hugecalc.files)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hugecalc.files import write_whole

    flat = [{**{k: v for k, v in r.items() if k != "group"}, "group": "/".join(r["group"] or [])} for r in rows]
    write_whole(path, lambda tmp: pq.write_table(pa.Table.from_pylist(flat), tmp), "--output", force)
