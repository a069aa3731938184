"""``hugecalc verify``: run a real experiment on the running kernel, predicted beside measured.

One module per calculator (``vmemmap``, ``pgtable``, ``mthp``), their shared checks in ``common``.
The prediction comes from the same ``compute_*`` the calculator uses; the measurement from the
kernel's own counters.  All settings go through :class:`hugecalc.machine.restore.Restorer` (crash-safe: see ``hugecalc.machine.restore``).
"""
