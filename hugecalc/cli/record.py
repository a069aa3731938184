"""``hugecalc record``: run a command and record its true fault sequence, for replay under any
what-if (``mthp --trace FILE``, ``pgtable --trace FILE``)."""

from __future__ import annotations

from typing import Any

import click

from hugecalc.cli.command import Command
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
@click.argument("argv", nargs=-1, type=click.UNPROCESSED, metavar="-- CMD [ARGS]...")
def record(output: str, force: bool, fault_source: str, argv: tuple[str, ...]) -> Any:
    """Run CMD and record its true fault sequence, to replay under any what-if (root).

    Every user page fault (address, read or write, present or not, thread, time) and every change
    of its address space (mmap, munmap, brk, mremap, mprotect, madvise, exec, exit), for the whole
    process tree, with the kernel's tracepoints.

    CMD runs with THP disabled for it (PR_SET_THP_DISABLE, inherited across fork and exec), so
    every first touch of every page is a base-page fault in the record; its stdin, stdout and
    stderr are this command's. The exit status is CMD's.

    \b
    Examples:
      sudo hugecalc record -o app.record -- python3 app.py
      hugecalc mthp --trace app.record --size 64k      # the same faults under 64K mTHP
      hugecalc pgtable --trace app.record              # its page tables over time
    """
    from hugecalc.machine.record import record as run_record

    if not argv:
        raise InputError("give the command to record after --, e.g. hugecalc record -- python3 app.py")
    from hugecalc.files import check_output

    check_output(output, "--output", force)

    def started(pid: int) -> None:
        click.echo(f"hugecalc: recording pid {pid} ({' '.join(argv)}), THP disabled for it", err=True)

    code, held = run_record(list(argv), output, started, force, fault_source)
    status = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
    click.echo(f"hugecalc: wrote {output}: {held['events']:,} events, {held['faults']:,} page faults in "
               f"{held['seconds']:.2f} s; {argv[0]}: {status}", err=True)
    if code:  # the command's own status, as a shell gives it (128 + the signal)
        raise click.exceptions.Exit(code if code > 0 else 128 - code)
    return None


SPEC = Spec(name="record", rank=6, documents={})
