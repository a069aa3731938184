"""10,000 mixed vmemmap/pgtable/mthp requests for `hugecalc batch`, as JSON Lines on stdout."""

import json
import random

rng = random.Random(1)
SIZES = ["16k", "32k", "64k", "128k", "256k", "2M"]
for i in range(10_000):
    kind = i % 3
    if kind == 0:
        req = {"command": "vmemmap", "args": ["--pages", f"{rng.choice([1, 16, 64, 256, 1024])}G",
                                              "--kernel", rng.choice(["5.14", "5.18", "6.8", "7.1"])]}
    elif kind == 1:
        req = {"command": "pgtable", "options": {"vma_size": f"{rng.choice([1, 4, 64, 512])}G",
                                                 "touch-stride": rng.choice(["4K", "64K", "2M"]),
                                                 "after": rng.choice(["dontneed", "free", None])}}
    else:
        req = {"command": "mthp", "options": {"size": rng.choice(SIZES), "vma-size": rng.choice(["64M", "1G"]),
                                              "madvise": rng.choice([True, False])}}
    print(json.dumps(req))
