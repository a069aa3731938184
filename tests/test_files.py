"""Nothing hugecalc writes can hurt the machine, nothing it reads can hang it (hugecalc.files)."""

import os
import stat
import subprocess
import sys

import pytest

CAPTURE = "tests/data/captures/x86-64-6.18.json"


def hugecalc(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "hugecalc", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_output_onto_a_device_node_is_refused_and_the_node_kept(tmp_path):
    node = tmp_path / "null"
    os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    r = hugecalc("host", "--output", str(node))
    assert r.returncode == 2 and r.stdout == "" and "is a device" in r.stderr
    assert stat.S_ISCHR(os.lstat(node).st_mode)


@pytest.mark.parametrize("make,words", [(os.mkfifo, "is a FIFO"), (os.mkdir, "is a directory")])
def test_output_onto_a_fifo_or_a_folder_is_refused(tmp_path, make, words):
    target = tmp_path / "out"
    make(target)
    for args in (["host", "--output", str(target)], ["record", "-o", str(target), "--", "true"],
                 ["pgtable", "--vma-size", "1G", "--sweep", "seed=1,2", "--touch-fraction", "0.1", "--plot",
                  str(target)]):
        r = hugecalc(*args)
        assert r.returncode == 2 and r.stdout == "" and (words in r.stderr or "directory" in r.stderr), (args, r.stderr)


def test_a_symlink_at_the_final_name_is_refused_unless_forced(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / "capture.json"
    link.symlink_to(victim)
    r = hugecalc("host", "--output", str(link))
    assert r.returncode == 2 and "is a symbolic link" in r.stderr and victim.read_text() == "precious\n"
    r = hugecalc("host", "--output", str(link), "--force")
    assert r.returncode == 0, r.stderr
    assert not link.is_symlink() and victim.read_text() == "precious\n"  # the link replaced, not followed


def test_a_link_planted_at_the_old_temporary_name_is_never_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "fleet.jsonl.tmp").symlink_to(victim)
    r = hugecalc("fleet", "synth", "--hosts", "3", "--output", str(tmp_path / "fleet.jsonl"))
    assert r.returncode == 0, r.stderr
    assert victim.read_text() == "precious\n" and len((tmp_path / "fleet.jsonl").read_text().splitlines()) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fleet.jsonl.")]  # no temporary file left


def test_output_paths_are_checked_before_the_work(run, tmp_path):
    r = run("fleet", "vmemmap", "tests/data/captures", "-o", "/nonexistent/dir/x.parquet")
    assert r.exit_code == 2 and "does not exist" in r.stderr
    r = run("fleet", "synth", "--hosts", "2", "--output", str(tmp_path / "fleet.json"))
    assert r.exit_code == 2 and "not one .json" in r.stderr and not (tmp_path / "fleet.json").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "other.json").write_text("{}")
    r = run("fleet", "synth", "--hosts", "2", "--output", str(busy))
    assert r.exit_code == 2 and "not empty" in r.stderr
    r = run("fleet", "synth", "--hosts", "2", "--output", str(tmp_path / "new"))
    assert r.exit_code == 0 and sorted(p.name for p in (tmp_path / "new").iterdir()) == ["host-000000.json",
                                                                                          "host-000001.json"]


@pytest.mark.parametrize("option", [["vmemmap", "--host"], ["vmemmap", "--pages", "1G", "--profile"],
                                    ["pgtable", "--vma-size", "2G", "--vma-start", "0x8000000000", "--touch-file"],
                                    ["mthp", "--size", "64k", "--prepopulated-stride", "1M", "--khugepaged",
                                     "--occupancy-file"]])
def test_special_files_are_refused_without_hanging(tmp_path, option):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    for path, words in ((fifo, "is a FIFO"), ("/dev/zero", "is a device"), (tmp_path, "directory")):
        r = hugecalc(*option, str(path), timeout=20)
        assert r.returncode == 2 and r.stdout == "" and (words in r.stderr or "not a regular" in r.stderr), \
            (option, path, r.stderr)
        assert "Traceback" not in r.stderr


def test_a_huge_input_file_is_refused_unread(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(300 << 20)  # sparse: costs no disk
    r = hugecalc("vmemmap", "--host", str(big))
    assert r.returncode == 2 and "more than the" in r.stderr


def test_a_binary_capture_is_refused(tmp_path):
    binary = tmp_path / "c.json"
    binary.write_bytes(b"\xff\xfe\x00binary")
    r = hugecalc("vmemmap", "--host", str(binary))
    assert r.returncode == 2 and "not UTF-8" in r.stderr


@pytest.mark.parametrize("encoding", ["ascii", "utf-8", "upper-hex"])
def test_text_from_a_capture_never_reaches_the_terminal_as_escapes(run, tmp_path, encoding):
    """However the JSON text carries a control character (escaped in either case of hex, or raw: a C1
    character), it is written out; the fleet's groups (--by hostname) too."""
    import json

    from pathlib import Path

    data = json.loads(Path(CAPTURE).read_text())
    data["hostname"] = "evil\x1b]0;pwned\x07\x1b[31m"
    data["kernel"] = data["kernel"] + "\x9b2J"
    text = json.dumps(data, ensure_ascii=encoding == "ascii")
    path = tmp_path / "evil.json"
    path.write_text(text.replace("\\u001b", "\\u001B") if encoding == "upper-hex" else text, encoding="utf-8")
    for args in (["vmemmap", "--host", str(path)], ["mthp", "--host", str(path), "--size", "64k"],
                 ["fleet", "vmemmap", str(path), "--by", "hostname", "--by", "kernel"]):
        r = run(*args)
        assert r.exit_code == 0, r.stderr
        assert "\x1b" not in r.stdout and "\x07" not in r.stdout and "\x9b" not in r.stdout
        assert "evil\\x1b]0;pwned" in r.stdout


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
@pytest.mark.parametrize("argv, stdin", [
    (["vmemmap", "--pages", "1G", "--json"], None),
    (["vmemmap", "--pages", "1G"], None),
    (["schema", "mthp"], None),
    (["batch"], b'{"command": "vmemmap", "args": ["--pages", "1G"]}\n'),
])
def test_stdout_on_a_full_disk_is_one_line_and_exit_1(argv, stdin):
    """stdout that cannot be written (a full disk: /dev/full) is said in one line, exit 1, never a
    traceback (a reader that went away, `| head`, is exit 0 and silent: test_cli)."""
    with open("/dev/full", "wb") as full:
        out = subprocess.run([sys.executable, "-m", "hugecalc", *argv], input=stdin, stdout=full,
                             stderr=subprocess.PIPE)
    lines = out.stderr.decode().splitlines()
    assert out.returncode == 1 and len(lines) == 1, out.stderr.decode()
    assert lines[0] == "hugecalc: cannot write the output (stdout): No space left on device"
