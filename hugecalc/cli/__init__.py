"""The command line: one module per command, the options they share in ``common``.

The only package that touches stdout, stderr and exit codes.  Each command parses its options,
calls one ``compute_*`` and renders its result.
"""

from __future__ import annotations

import errno
import os
import sys

import click

from hugecalc import __version__
from hugecalc.cli.common import Group, quiet_exit

def specs() -> list:
    """Every command's declaration (``SPEC`` in its module of hugecalc.cli), in help order.
    Imports every command module: for --help, completion, schema, batch and fleet only."""
    import pkgutil

    from hugecalc.cli import command

    found = [command.load(m.name) for m in pkgutil.iter_modules(__path__)]
    return sorted((f[0] for f in found if f is not None), key=lambda spec: spec.rank)


class LazyGroup(Group):
    """A command's module is imported only when that command runs (or for --help): a one-shot
    `hugecalc vmemmap` does not pay for the other commands' imports."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [spec.name for spec in specs()]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        from hugecalc.cli.command import load

        found = load(name)
        return found[1] if found else None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="hugecalc")
def cli() -> None:
    """A what-if calculator for Linux kernel memory: the numbers the kernel would produce.

    \b
    Examples:
      hugecalc vmemmap --pages 1024G               # HVO savings for a 1 TiB pool, 2M vs 1G
      hugecalc vmemmap --pages 512 --hugepage-size 1G --kernel 5.15 --explain
      hugecalc pgtable --vma-size 64G --touch-stride 2M --after dontneed
      hugecalc mthp --size 64k                     # what 64K mTHP does to a 1 GiB memset
      hugecalc hgm --hugepage-size 1G --path 4K,2M,1G
      hugecalc profiles arm64-4k
      sudo hugecalc verify mthp --size 64k         # predicted beside the running kernel
      sudo hugecalc record -o app.record -- ./app  # a program's true fault sequence
      hugecalc advise --trace app.record --max-bloat 5%   # the THP settings that serve it best
    """


def main() -> None:
    from hugecalc import calc

    calc.on_slow_compile = lambda msg: click.echo(f"hugecalc: {msg}", err=True)
    if sys.stdout is None:  # started with stdout closed: nothing can be printed, nothing to do
        sys.exit(0)
    try:
        code = cli.main(prog_name="hugecalc", standalone_mode=False)
        _flush()
        sys.exit(code if isinstance(code, int) else 0)
    except click.UsageError as e:  # two lines, not click's four: the error, then where help is
        click.echo(f"Error: {e.format_message()}", err=True)
        if e.ctx is not None:
            click.echo(f"Try '{e.ctx.command_path} --help' for help.", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(130)
    except BrokenPipeError:  # `hugecalc ... | head`: the reader has what it wanted
        quiet_exit()
    except OSError as e:
        if e.errno in (errno.EPIPE, errno.EBADF):
            quiet_exit()
        _output_failed(e)
    except Exception as e:  # a bug, not bad input: one line, the traceback only on request
        if os.environ.get("HUGECALC_DEBUG"):
            raise
        click.echo(f"hugecalc: internal error: {type(e).__name__}: {e} "
                   "(set HUGECALC_DEBUG=1 for the traceback, and please report it)", err=True)
        sys.exit(1)


def _flush() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_exit()
    except OSError as e:
        _output_failed(e)


def _output_failed(e: OSError) -> None:
    """stdout (or a file) could not be written (a full disk, an I/O error): one line, exit 1; what
    stdout still buffers is dropped, so that the interpreter does not fail again at exit."""
    where = f" {e.filename}" if e.filename else " the output (stdout)"
    click.echo(f"hugecalc: cannot write{where}: {e.strerror or e}", err=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(1)

