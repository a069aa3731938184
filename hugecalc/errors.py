"""Errors hugecalc reports to users.  No click or rich here: the CLI maps them to exit codes."""


class HugecalcError(Exception):
    """Base of every error hugecalc reports as a plain message."""

    exit_code = 1


class InputError(HugecalcError, ValueError):
    """A bad value from the user: names the value and the rule it broke (exit 2)."""

    exit_code = 2


class ProfileError(InputError):
    """A profile that cannot be found or does not validate (exit 2)."""


class HostError(HugecalcError):
    """The running kernel cannot do what was asked, or a host file cannot be read (exit 1)."""


class VerifyMismatch(HugecalcError):
    """A `verify` run measured something other than what was predicted (exit 1)."""
