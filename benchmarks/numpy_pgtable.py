"""The reference for `make bench`: the vectorized NumPy program a user would write to count the
tables that touching a random fraction of the pages of a mapping needs (x86-64, 4K pages): draw
every page (`rng.random(1 << 24) < p`), reshape per 512 (one row per PTE table), `.any(axis=1)`,
in chunks of 2^24 pages, and fold the PTE tables up into PMD and PUD tables.

usage: numpy_pgtable.py VSIZE_BYTES FRACTION SEED
"""

import sys

import numpy as np

vma_size, fraction, seed = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
pages = vma_size >> 12
chunk = min(1 << 24, pages)
rng = np.random.default_rng(seed)
pte_tables = []
populated = 0
for first in range(0, pages, chunk):
    touched = rng.random(min(chunk, pages - first)) < fraction
    populated += int(touched.sum())
    pte_tables.append(touched.reshape(-1, 512).any(axis=1))
pte = np.concatenate(pte_tables)
pmd = pte.reshape(-1, 512).any(axis=1) if pte.size % 512 == 0 else np.array([pte.any()])
pud = pmd.reshape(-1, 512).any(axis=1) if pmd.size % 512 == 0 else np.array([pmd.any()])
print({"pte": int(pte.sum()), "pmd": int(pmd.sum()), "pud": int(pud.sum()), "populated_bytes": populated << 12})
