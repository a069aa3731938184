"""Errors hugecalc reports to users.  No click or rich here: the CLI maps them to exit codes."""

from __future__ import annotations


class HugecalcError(Exception):
    """Base of every error hugecalc reports as a plain message."""

    exit_code = 1


class InputError(HugecalcError, ValueError):
    """A bad value from the user: names the value and the rule it broke (exit 2).

    ``field`` names the input the value came in (``vma_size``): the calculations speak of values,
    and the command line turns the field into the option as the user typed it (``--vma-size``).
    """

    exit_code = 2

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message, self.field = message, field

    def __str__(self) -> str:
        return f"{self.field} {self.message}" if self.field else self.message

    def naming(self, flag: str) -> InputError:
        """The same error, its value named as the option ``flag`` the user typed."""
        return InputError(f"{flag} {self.message}")


class ProfileError(InputError):
    """A profile that cannot be found or does not validate (exit 2)."""


class HostError(HugecalcError):
    """The running kernel cannot do what was asked, or a host file cannot be read (exit 1)."""


class VerifyMismatch(HugecalcError):
    """A `verify` run measured something other than what was predicted (exit 1)."""
