"""--sweep and --plot: points, the table and JSON per point, and charts checked for their data."""

import json
import sys
import xml.etree.ElementTree as ET

import pytest

from hugecalc.errors import InputError
from hugecalc.sweep import grid, parse_sweep

ALL = {"touch-fraction": "number", "size": "size", "kernel": "text", "vma-size": "size", "pages": "pool",
       "zones": "count"}


def test_parse_sweeps():
    s = parse_sweep("touch-fraction=1e-6..1x10", ALL)
    assert s.values == (1e-06, 1e-05, 0.0001, 0.001, 0.01, 0.1, 1.0) and s.geometric and s.kind == "number"
    s = parse_sweep("vma-size=64M..256M:64M", ALL)
    assert s.values == (64 << 20, 128 << 20, 192 << 20, 256 << 20) and not s.geometric and s.kind == "size"
    s = parse_sweep("size=16k,32k,64k,128k,2M", ALL)
    assert s.values == (16 << 10, 32 << 10, 64 << 10, 128 << 10, 2 << 20) and s.geometric
    s = parse_sweep("kernel=5.14,5.18,6.3,7.1", ALL)
    assert s.values == ("5.14", "5.18", "6.3", "7.1") and s.kind == "text"
    assert len(grid([parse_sweep("size=16k,64k", ALL), parse_sweep("vma-size=1M,2M,4M", ALL)])) == 6


@pytest.mark.parametrize("spec,message", [
    ("bogus=1,2", "cannot be swept"), ("size", "use OPTION="), ("touch-fraction=1..0:0.1", "STOP at least START"),
    ("touch-fraction=0..1x10", "start above 0"), ("vma-size=4K..1T:1K", "at most 1000"),
    ("touch-fraction=0..1:0.0001", "at most 1000"), ("vma-size=4K..2M:x8", "START..STOPxFACTOR"),
])
def test_bad_sweeps(spec, message):
    with pytest.raises(InputError, match=message):
        parse_sweep(spec, ALL)


def test_a_swept_pool_size_stays_a_size(run):
    """--pages without a unit is a count: a swept size is passed on with its unit."""
    doc = run("vmemmap", "--pages", "1G", "--hugepage-size", "2M", "--sweep", "pages=1G..3G:1G", "--json").json
    assert [p["result"]["rows"][0]["hugepages"] for p in doc["points"]] == [512, 1024, 1536]


def test_readme_examples_run(run):
    for args in (["pgtable", "--vma-size", "1T", "--sweep", "touch-fraction=1e-6..1x10"],
                 ["mthp", "--sweep", "size=16k,32k,64k,128k,2M", "--vma-size", "64M"],
                 ["vmemmap", "--pages", "1T", "--sweep", "kernel=5.14,5.18,6.3,7.1", "--profile", "arm64-4k"]):
        r = run(*args)
        assert r.exit_code == 0, r.stderr
        assert "│" in r.stdout and "└" in r.stdout  # the chart under the table
        doc = run(*args, "--json").json
        assert doc["sweep"] is True and len(doc["points"]) == len(doc["sweeps"][0]["values"])
        # One result document per point: the same as running the command at that point.
        point = doc["points"][1]
        option, value = next(iter(point["values"].items()))
        single = run(*[a for a in args if not a.startswith("--sweep") and "=" not in a], f"--{option}",
                     str(value), "--json").json
        assert single == point["result"]


def test_a_grid(run):
    doc = run("mthp", "--sweep", "size=16k,64k", "--sweep", "vma-size=1M,2M,4M", "--json").json
    assert [p["values"] for p in doc["points"]][:2] == [{"size": 16384, "vma-size": 1 << 20},
                                                       {"size": 16384, "vma-size": 2 << 20}]
    assert len(doc["points"]) == 6
    r = run("mthp", "--sweep", "size=16k,64k", "--sweep", "vma-size=1M,2M,4M")
    assert "vma-size=1M" in r.stdout and "vma-size=4M" in r.stdout  # one line per value of the second



@pytest.mark.parametrize("suffix", ["png", "svg", "pdf"])
def test_charts_to_files_carry_their_data(run, tmp_path, suffix):
    path = tmp_path / f"chart.{suffix}"
    args = ["pgtable", "--vma-size", "64G", "--sweep", "touch-fraction=1e-4..1x10", "--after", "dontneed"]
    doc = run(*args, "--plot", str(path), "--json").json
    expected = [p["result"]["page_table_bytes"] for p in doc["points"]]
    raw = path.read_bytes()
    if suffix == "png":
        from PIL import Image

        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            data = json.loads(image.text["Description"])
            assert image.size[0] > 400 and image.size[1] > 200
    elif suffix == "svg":
        root = ET.fromstring(raw)
        data = json.loads(root.find(".//{http://purl.org/dc/elements/1.1/}description").text)
        assert root.tag.endswith("svg") and len(root.findall(".//{http://www.w3.org/2000/svg}path")) > 10
    else:
        assert raw.startswith(b"%PDF")
        assert all(str(v).encode() in raw for v in expected)  # the series in the Subject
        return
    assert data["series"]["page tables"] == expected
    assert data["x"] == ["0.0001", "0.001", "0.01", "0.1", "1"]
    assert "profile x86-64" in data["title"]


def test_mthp_side_by_side_gets_the_chart(run, tmp_path):
    r = run("mthp", "--vma-size", "64M", "--plot", str(tmp_path / "sizes.svg"))
    assert r.exit_code == 0 and "● faults" in r.stdout
    assert (tmp_path / "sizes.svg").read_bytes().startswith(b"<?xml")


def test_plot_without_matplotlib_names_the_extra(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    r = run("pgtable", "--vma-size", "1G", "--sweep", "touch-fraction=0.1,1", "--plot", str(tmp_path / "c.png"))
    assert r.exit_code == 2 and "pip install 'hugecalc[plot]'" in r.stderr and r.stdout == ""
    r = run("pgtable", "--vma-size", "1G", "--sweep", "touch-fraction=0.1,1", "--plot", str(tmp_path / "c.gif"))
    assert r.exit_code == 2 and ".svg, .png or .pdf" in r.stderr


def test_a_sweep_explains_itself_and_both_ends(run):
    r = run("pgtable", "--vma-size", "1G", "--sweep", "touch-stride=4K..2Mx8", "--explain")
    assert r.exit_code == 0, r.stderr
    text = r.stdout
    assert "How the sweep was run" in text and "hugecalc pgtable --vma-size 1G --explain --touch-stride V" in text
    assert "derived at touch-stride=4K" in text and "derived at touch-stride=2M" in text
    assert "holding a touched address = 512" in text  # 2M stride: one PTE table per 2 MiB block
    doc = run("pgtable", "--vma-size", "1G", "--sweep", "touch-stride=4K,2M", "--explain", "--json").json
    assert doc["explain"][0]["scope"] == "sweep" and all(p["result"]["explain"] for p in doc["points"])


# --- each command's declared sweepable options, swept through their own click types ------------

#: Two values for each option a command declares sweepable (Spec.sweep), and the options it needs beside.
POINTS = {
    "vmemmap": (["--pages", "1T"], {"pages": "512,1024", "struct-page-size": "64,128", "zones": "1,2",
                                    "kernel": "6.1,7.1"}),
    "pgtable": (["--vma-size", "1G"], {"vma-size": "1G,2G", "vma-start": "0x40000000,0x80000000",
                                       "touch-stride": "4K,2M", "touch-fraction": "0.1,0.5", "seed": "1,2",
                                       "shared-by": "1,10", "kernel": "6.1,7.1"}),
    "mthp": (["--vma-size", "64M", "--size", "64k"],
             {"size": "16k,64k", "vma-size": "1M,2M", "vma-start": "0x40000000,0x40200000",
              "file-offset": "64K,2M", "touch-stride": "4K,64K", "prepopulated-stride": "1M,2M",
              "max-ptes-none": "0,511", "kernel": "6.8,7.1"}),
}
NEEDS = {("mthp", "file-offset"): ["--memory", "shmem", "--shmem-enabled", "64K=always", "--size", None],
         ("mthp", "size"): ["--size", None],
         ("mthp", "max-ptes-none"): ["--khugepaged", "--prepopulated-stride", "1M"],
         ("pgtable", "shared-by"): ["--backing", "hugetlb-2M"], ("pgtable", "seed"): ["--touch-fraction", "0.1"]}


def test_every_declared_option_is_swept_here():
    from hugecalc.cli import specs
    from hugecalc.cli.command import load
    from hugecalc.cli.sweep import sweepable

    for spec in specs():
        if spec.sweep:
            flags = {p.opts[0].lstrip("-") for p in sweepable(spec, load(spec.name)[1]).values()}
            assert flags == set(POINTS[spec.name][1]), spec.name


@pytest.mark.parametrize("command,option", [(c, o) for c, (_, opts) in POINTS.items() for o in opts])
def test_every_sweepable_option_sweeps_to_the_single_runs(run, command, option):
    """Each point of a sweep is exactly the command run once with that value, in the option's own type."""
    base, values = POINTS[command]
    extra = NEEDS.get((command, option), [])
    if None in extra:  # drop an option of the base the extra ones replace
        dropped = extra[extra.index(None) - 1]
        i = base.index(dropped)
        base, extra = base[:i] + base[i + 2:], [a for a in extra if a not in (None, dropped)]
    args = [command, *base, *extra]
    doc = run(*args, "--sweep", f"{option}={values[option]}", "--json").json
    assert len(doc["points"]) == 2
    for point, text in zip(doc["points"], values[option].split(",")):
        single = run(*args, f"--{option}", text, "--json")
        assert single.exit_code == 0, single.stderr
        assert point["result"] == single.json, f"{option}={text}"


def test_a_pool_count_sweeps_as_hugepages(run):
    """--pages 512 is 512 hugepages, in a sweep too (not 512 bytes)."""
    doc = run("vmemmap", "--pages", "1T", "--hugepage-size", "2M", "--sweep", "pages=512,1024", "--json").json
    assert [p["result"]["rows"][0]["hugepages"] for p in doc["points"]] == [512, 1024]
    assert doc["points"][0]["values"] == {"pages": 512}
    doc = run("vmemmap", "--pages", "1T", "--hugepage-size", "2M", "--sweep", "pages=512..2048x2", "--json").json
    assert [p["result"]["rows"][0]["hugepages"] for p in doc["points"]] == [512, 1024, 2048]


def test_integer_options_sweep_as_integers(run):
    for args in (["vmemmap", "--pages", "1T", "--sweep", "zones=1,2", "--kernel", "7.1"],
                 ["vmemmap", "--pages", "1T", "--sweep", "struct-page-size=64..128:64"],
                 ["pgtable", "--vma-size", "1G", "--touch-fraction", "0.1", "--sweep", "seed=1..3"]):
        r = run(*args, "--json")
        assert r.exit_code == 0, r.stderr
    doc = run("vmemmap", "--pages", "1T", "--sweep", "zones=1,2", "--kernel", "7.1", "--json").json
    saved = [p["result"]["rows"][0]["saved_bytes"] for p in doc["points"]]
    assert saved[0] - saved[1] == 4096  # one more zone keeps one more shared tail page (7.1)


@pytest.mark.parametrize("args", [["--sweep", "vma-size=1M,2M"], ["--sweep", "vma-size=1M,2M", "--size", "64k"],
                                  ["--sweep", "vma-size=1M,2M", "--host", "tests/data/captures/x86-64-6.18.json"],
                                  ["--sweep", "vma-size=1M,2M", "--host", "tests/data/captures/x86-64-6.18.json",
                                   "--size", "64k"]])
def test_mthp_sweeps_in_every_mode(run, args):
    """Every mode's result has figures to sweep: the side-by-side comparison and now-and-what-if too."""
    r = run("mthp", *args)
    assert r.exit_code == 0, r.stderr
    doc = run("mthp", *args, "--json").json
    assert len(doc["points"]) == 2


@pytest.mark.parametrize("spec,message", [
    ("zones=1.5,2", "not a whole number"), ("pages=1G,512", "mixes sizes and counts"),
    ("zones=0,1", "--sweep at zones=0: Invalid value for '--zones'"), ("struct-page-size=1G,2G", "not a whole number"),
])
def test_bad_sweep_values_name_the_option(run, spec, message):
    r = run("vmemmap", "--pages", "1T", "--sweep", spec)
    assert r.exit_code == 2 and r.stdout == "" and message in r.stderr, r.stderr


def test_a_range_of_sizes_without_a_step_doubles(run):
    """Newcomer review #21: START..STOP without :STEP is allowed, as the help writes it; sizes double."""
    doc = run("pgtable", "--sweep", "vma-size=1G..4G", "--json").json
    assert [p["values"]["vma-size"] for p in doc["points"]] == [1 << 30, 2 << 30, 4 << 30]
    assert len(run("pgtable", "--vma-size", "1T", "--sweep", "touch-fraction=0.1..0.5", "--json").json["points"]) == 11


def test_a_flat_chart_has_one_label_and_says_which_series_are_hidden(run):
    """Newcomer review #22: a constant series gets one y label (not 1 B, 0 B, 0 B), a series drawn
    over by another says so in the legend, and a sweep whose charted figure is flat charts the one
    that moves."""
    out = run("vmemmap", "--pages", "1T", "--sweep", "kernel=5.14,5.18,6.3,7.1", "--profile", "arm64-4k").stdout
    labels = [line.split("│")[0].strip() for line in out.splitlines() if "│" in line and line.split("│")[0].strip()]
    assert labels == ["0 B"] and "saved 64K (under +)" in out and "saved 1G (under" not in out
    out = run("pgtable", "--vma-size", "1G", "--sweep", "touch-fraction=0.1..0.5").stdout
    assert "● populated" in out and "● page tables" not in out
