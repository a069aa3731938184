"""``hugecalc schema``: every command's --json, in every mode, is valid against the published schema."""

import json
from pathlib import Path

import jsonschema
import pytest

from hugecalc.cli import specs
from hugecalc.cli.schema import documented
from tests.conftest import valid_document

CAPTURES = Path(__file__).parent / "data" / "captures"
X86 = str(CAPTURES / "x86-64-6.18.json")
ARM = str(CAPTURES / "arm64-4k-6.8-synthetic.json")
PID = str(json.loads(Path(X86).read_text())["processes"][0]["pid"])

#: command -> (mode, argv) for every mode its --json has.  The last test holds the list complete.
MODES = {
    "vmemmap": [
        ("pool by size", ["--pages", "1024G"]),
        ("one size, explained, old kernel", ["--pages", "64", "--hugepage-size", "1G", "--kernel", "5.15", "--explain"]),
        ("devdax", ["--pages", "64G", "--devdax", "--explain"]),
        ("arm64 without HVO", ["--pages", "16G", "--profile", "arm64-4k", "--kernel", "6.6"]),
        ("a capture's pools", ["--host", X86, "--explain"]),
        ("sweep", ["--pages", "1G", "--sweep", "pages=1G..4G:1G"]),
    ],
    "pgtable": [
        ("stride", ["--vma-size", "64G", "--touch-stride", "2M", "--after", "dontneed", "--explain"]),
        ("fraction", ["--vma-size", "1T", "--touch-fraction", "0.01", "--seed", "1"]),
        ("thp", ["--vma-size", "256M", "--backing", "thp", "--after", "dontneed"]),
        ("hugetlb shared", ["--vma-size", "4G", "--backing", "hugetlb-2M", "--shared-by", "4"]),
        ("worst case", ["--worst-case", "--explain"]),
        ("a captured process", ["--host", X86, "--pid", PID, "--explain"]),
        ("sweep", ["--vma-size", "1G", "--sweep", "touch-stride=4K..2Mx8"]),
    ],
    "mthp": [
        ("one size", ["--size", "64k", "--explain"]),
        ("every size", ["--vma-size", "64M", "--explain"]),
        ("shmem", ["--memory", "shmem", "--shmem-enabled", "64K=always"]),
        ("khugepaged", ["--size", "64k", "--prepopulated-stride", "1M", "--khugepaged", "--profile", "arm64-4k"]),
        ("a capture now and what-if", ["--host", ARM, "--size", "64k", "--explain"]),
        ("replay a captured process", ["--host", X86, "--pid", PID, "--size", "64k"]),
        ("sweep", ["--sweep", "size=16k,64k", "--vma-size", "64M"]),
    ],
    "hgm": [
        ("default", ["--explain"]),
        ("one scheme", ["--hugepage-size", "1G", "--path", "4K,2M,1G", "--scheme", "head-only"]),
    ],
    "host": [("this machine", [])],
    "fleet": [
        ("vmemmap", ["vmemmap", str(CAPTURES), "--by", "arch"]),
        ("mthp", ["mthp", str(CAPTURES), "--size", "64k"]),
        ("pgtable", ["pgtable", str(CAPTURES), "--vma-size", "1G", "--after", "dontneed"]),
    ],
    "profiles": [("list", []), ("one", ["arm64-64k"])],
    "advise": [("a record, a budget, explained", ["--trace", "tests/data/records/sqlite3.record", "--max-bloat", "1%",
                                                  "--explain"]),
               ("a captured process", ["--host", X86, "--pid", PID, "--max-memory", "64M"])],
}


def _validate(command, document):
    valid_document(command, document)


_SCHEMAS = {}


def _schema(command):
    if command not in _SCHEMAS:
        from hugecalc.cli.schema import json_schema

        _SCHEMAS[command] = json_schema(command)
        jsonschema.Draft202012Validator.check_schema(_SCHEMAS[command])
    return _SCHEMAS[command]


@pytest.mark.parametrize("command,mode,args", [(c, m, a) for c, modes in MODES.items() for m, a in modes],
                         ids=lambda v: v if isinstance(v, str) else None)
def test_json_output_is_valid_against_the_schema(run, command, mode, args):
    r = run(command, *args, "--json")
    assert r.exit_code == 0, r.stderr
    document = r.json
    _validate(command, document)
    _validate(None, document)  # and against the schema of every hugecalc document
    for key in ("schema_version", "command", "profile", "kernel", "inputs", "notes"):
        assert key in document, f"{command} ({mode}) lacks {key}"


def test_the_schema_refuses_what_a_command_does_not_print(run):
    document = run("pgtable", "--vsize", "1G", "--json").json
    with pytest.raises(jsonschema.ValidationError):
        _validate("pgtable", {**document, "page_tables": 1})  # a key no model has
    with pytest.raises(jsonschema.ValidationError):
        _validate("pgtable", {**document, "page_table_bytes": "8 KiB"})  # a human string for bytes
    with pytest.raises(jsonschema.ValidationError):
        _validate("vmemmap", document)  # another command's document


def test_batch_lines_are_valid_against_the_batch_schema(run):
    requests = [{"command": "vmemmap", "args": ["--pages", "1G"]},
                {"command": "mthp", "options": {"size": "64k", "vma_size": "64M"}},
                {"command": "profiles", "args": ["x86-64"]},
                {"command": "pgtable", "args": ["--vma-size", "-1G"]},
                "not an object"]
    r = run("batch", input="\n".join(json.dumps(q) for q in requests) + "\n")
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == len(requests)
    assert [("error" in line) for line in lines] == [False, False, False, True, True]
    for line in lines:
        _validate("batch", line)


def test_schema_command_prints_one_schema_per_command(run):
    for command in [*documented(), "batch"]:
        r = run("schema", command)
        assert r.exit_code == 0
        assert r.json["$schema"].endswith("2020-12/schema")
        assert r.json == json.loads(json.dumps(_schema(command)))
    r = run("schema", "nosuch")
    assert r.exit_code == 2 and r.stdout == "" and "nosuch" in r.stderr


def test_folio_counts_have_one_shape_in_every_document():
    """Newcomer review #19: folio counts by size came as a list in one place and as an object by size
    in another of the same document.  Every folio-count field is a list of FolioCount now; the old
    object survives only as a field marked deprecated."""
    seen = 0
    for command in set(documented()) - {"host"}:  # a capture is an input file, its own format (README: host)
        for name, model in _schema(command).get("$defs", {}).items():
            for key, prop in model.get("properties", {}).items():
                if not key.endswith("folios") or prop.get("type") == "integer":  # a count of folios
                    continue
                shapes = prop.get("anyOf", [prop])
                if prop.get("deprecated"):
                    assert key == "captured_folios", (command, name, key)
                    continue
                seen += 1
                assert all(s.get("type") == "null" or s.get("items") == {"$ref": "#/$defs/FolioCount"} for s in shapes), \
                    (command, name, key)
    assert seen >= 5


def test_every_command_and_mode_is_covered():
    """A new command (or a new result model) must be added here: every declared document is tested."""
    assert set(documented()) | {"batch", "schema", "record"} == {spec.name for spec in specs()}
    covered = set(MODES) | {"verify"}  # verify's --json: the root tests read it through Run.json, which validates
    assert covered == set(documented())


@pytest.mark.parametrize("command,mode,args",
                         [(c, m, a) for c, modes in MODES.items() if c not in ("host", "profiles") for m, a in modes],
                         ids=lambda v: v if isinstance(v, str) else None)
def test_every_view_explains_itself(run, command, mode, args):
    """--explain explains every view: each mode's JSON carries derivations, each with a rule."""
    document = run(command, *[a for a in args if a != "--explain"], "--explain", "--json").json
    assert document["explain"], f"{command} ({mode}) explains nothing"
    assert all(d["formula"] and d["rule"] for d in document["explain"])
