"""The reference for `make bench`: a straightforward pure-Python walk, fault by fault, of
`hugecalc mthp --vma-size 1T --size 64k --prepopulated-stride 1M` on x86-64 (top-level madvise,
so only 64K is allowed; every page written in address order).
"""

PAGE, PMD, FOLIO = 4096, 2 << 20, 64 << 10
start, size, pre = 1 << 39, 1 << 40, 1 << 20
end = start + size


def prepopulated(lo, hi):
    k = -(-(lo - start) // pre) if lo > start else 0
    return start + k * pre < hi


faults = folios_64k = folios_4k = 0
last_end = start
a = start
while a < end:
    p = a - a % PAGE
    if p < last_end:
        a = last_end
        continue
    if prepopulated(p, p + PAGE):
        a = p + PAGE
        continue
    y = p - p % FOLIO
    faults += 1
    if y >= start and y + FOLIO <= end and y >= last_end and not prepopulated(y, y + FOLIO):
        folios_64k += 1
        last_end = y + FOLIO
    else:
        folios_4k += 1
        last_end = p + PAGE
    a = last_end
print({"faults": faults, "64K": folios_64k, "4K": folios_4k})
