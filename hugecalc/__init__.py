"""hugecalc: a what-if calculator for Linux kernel memory."""

__version__ = "0.1.0"
