"""``hugecalc record``: run a command, or attach to a running process, and record its true fault
sequence, for replay under any what-if (``mthp --trace FILE``, ``pgtable --trace FILE``)."""

from __future__ import annotations

from typing import Any

import click

from hugecalc.cli.command import Command
from hugecalc.cli.common import PID_MAX_LIMIT, Duration
from hugecalc.cli.spec import Spec
from hugecalc.errors import InputError

@click.command(cls=Command, context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--output", "-o", type=click.Path(dir_okay=False), default="hugecalc.record", show_default=True,
              help="The record file (written complete or not at all).")
@click.option("--force", is_flag=True, help="Write --output over a symbolic link or another user's file.")
@click.option("--fault-source", type=click.Choice(["auto", "tracepoint", "perf"]), default="auto", show_default=True,
              help="Where the faults come from: the exceptions:page_fault_user tracepoint (x86: read or write "
                   "recorded), or perf's page-faults event (every architecture: read or write inferred); auto "
                   "takes the tracepoint where the kernel has it.")
@click.option("--pid", type=click.IntRange(1, PID_MAX_LIMIT), default=None,
              help="Attach to this running process instead of running a command: its state now, then its events.")
@click.option("--duration", type=Duration(), default=None,
              help="With --pid: how long to record (30s, 2m; default 30s); it ends earlier if the process exits, "
                   "or on Ctrl-C.")
@click.argument("argv", nargs=-1, type=click.UNPROCESSED, metavar="-- CMD [ARGS]...")
def record(output: str, force: bool, fault_source: str, pid: int | None, duration: float | None,
           argv: tuple[str, ...]) -> Any:
    """Run CMD (or attach to --pid) and record its true fault sequence, to replay under any what-if (root).

    Every user page fault (address, read or write, present or not, thread, time) and every change
    of its address space (mmap, munmap, brk, mremap, mprotect, madvise, exec, exit), for the whole
    process tree, with the kernel's tracepoints.

    CMD runs with THP disabled for it (PR_SET_THP_DISABLE, inherited across fork and exec), so
    every first touch of every page is a base-page fault in the record; its stdin, stdout and
    stderr are this command's. The exit status is CMD's.

    A process attached to with --pid keeps the machine's THP settings: its state at the start
    (its mappings and present pages, as host --pids reads them) opens the record, then its events
    follow.

    \b
    Examples:
      sudo hugecalc record -o app.record -- python3 app.py
      sudo hugecalc record -o db.record --pid 1234 --duration 30s
      hugecalc mthp --trace app.record --size 64k      # the same faults under 64K mTHP
      hugecalc pgtable --trace app.record              # its page tables over time
    """
    from hugecalc.files import check_output
    from hugecalc.machine.record import record as run_record

    if pid is not None and argv:
        raise InputError("give a command to run or --pid to attach to, not both")
    if duration is not None and pid is None:
        raise InputError("--duration is how long an attached process is recorded: give --pid too")
    if pid is None and not argv:
        raise InputError("give the command to record after --, e.g. hugecalc record -- python3 app.py "
                         "(or --pid PID to attach to a running process)")
    check_output(output, "--output", force)
    attach = (pid, duration or 30.0) if pid is not None else None

    def started(started_pid: int) -> None:
        what = f"({' '.join(argv)}), THP disabled for it" if attach is None else \
            f"(attached for at most {attach[1]:g} s; Ctrl-C ends it), THP as the machine has it"
        click.echo(f"hugecalc: recording pid {started_pid} {what}", err=True)

    code, held = run_record(list(argv), output, started, force, fault_source, attach)
    if attach is not None:
        end = "it exited" if held["exited"] else "still running"
        click.echo(f"hugecalc: wrote {output}: {held['events']:,} events, {held['faults']:,} page faults "
                   f"({held['present_at_start']:,} pages present at the start) in {held['seconds']:.2f} s; "
                   f"pid {pid}: {end}", err=True)
        return None
    status = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
    click.echo(f"hugecalc: wrote {output}: {held['events']:,} events, {held['faults']:,} page faults in "
               f"{held['seconds']:.2f} s; {argv[0]}: {status}", err=True)
    if code:  # the command's own status, as a shell gives it (128 + the signal)
        raise click.exceptions.Exit(code if code > 0 else 128 - code)
    return None


SPEC = Spec(name="record", rank=6, documents={})
