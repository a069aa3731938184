"""The reference for `make bench`: a straightforward chunked NumPy program counting the tables
that touching a random fraction of the pages of a mapping needs (x86-64, 4K pages).

usage: numpy_pgtable.py VSIZE_BYTES FRACTION SEED
"""

import sys

import numpy as np

vsize, fraction, seed = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
start = 1 << 39  # 512G-aligned, as hugecalc places it
pages = vsize >> 12
chunk = 1 << 22
rng = np.random.default_rng(seed)
pte, pmd, pud = set(), set(), set()
populated = 0
for first in range(0, pages, chunk):
    n = min(chunk, pages - first)
    touched = (start >> 12) + first + np.flatnonzero(rng.random(n) < fraction)
    populated += touched.size
    pte.update(np.unique(touched >> 9).tolist())
    pmd.update(np.unique(touched >> 18).tolist())
    pud.update(np.unique(touched >> 27).tolist())
print({"pte": len(pte), "pmd": len(pmd), "pud": len(pud), "populated_bytes": populated << 12})
