"""Many hosts: one what-if asked of many captures on Dask (``engine``), and synthetic fleets
(``synth``)."""
