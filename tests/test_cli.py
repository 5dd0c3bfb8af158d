"""The command line itself (issue 16 item 10): help for every command and option, --version,
usage errors that exit 2 before anything is created, and a reader that stops reading."""

import os
import re
import subprocess

import pytest

from pipelines.cli import main
from tests.conftest import PILOT_CONFIG, ROOT
from tests.deliveries import write_delivery
from tests.ops_study import cli_env, dpf_eval

COMMANDS = ("synth", "run", "check", "demo", "boundaries")


def _help(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*args, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_and_option_has_help(command, capsys):
    top = _help(capsys)
    assert re.search(rf"(?m)^\s+{command}\s+\S", top), top  # the command, with a description
    text = _help(capsys, command)
    usage, _, rest = text.partition("\n\n")
    description, _, listed = rest.partition("\n\n")
    assert len(description.split()) >= 5, text  # what the command does, in a sentence
    lines = listed.splitlines()
    bare = re.sub(r"--?[a-z-]+( [A-Z_]+\b|\s\{[^}]*\})?", "", usage.split(" ", 2)[2])
    positional = re.findall(r"\b[A-Z_]+\b", bare)  # what is left once options are gone
    names = {*re.findall(r"--[a-z-]+", usage), *positional} - {"--help"}
    assert names, usage
    for name in names:
        (i,) = [i for i, line in enumerate(lines) if re.match(rf"\s+{name}\b", line)]
        # The help follows the option and its metavar on the same line, or on the next.
        same_line = re.match(rf"\s+{name}( [A-Z_a-z{{}},]+)?\s{{2,}}\S", lines[i])
        next_line = i + 1 < len(lines) and re.match(r"\s{8,}\S", lines[i + 1])
        assert same_line or next_line, f"{command} {name} has no help:\n{text}"


def test_version_names_the_package_and_the_commit(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    printed = capsys.readouterr().out.strip()
    assert re.fullmatch(r"dpf-eval \d+\.\d+\.\d+( \(commit [0-9a-f]{12}(-dirty)?\))?", printed)
    if (ROOT / ".git").exists():
        assert "(commit " in printed


def test_usage_errors_exit_2_before_anything_is_created(tmp_path, capsys, monkeypatch):
    home = tmp_path / "no-instance"
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # an instance would be made here
    out = tmp_path / "out"
    drop = tmp_path / "drop"
    run = ["run", "--config", str(PILOT_CONFIG)]
    # A drop folder that is not there.
    assert main([*run, "--drop", str(drop), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"dpf-eval: --drop: no such folder: {drop}\n"
    # An output folder that is a file.
    drop.mkdir()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main([*run, "--drop", str(drop), "--out", str(blocker)]) == 2
    assert capsys.readouterr().err == f"dpf-eval: --out: not a folder: {blocker}\n"
    # A config that cannot be read.
    bad = ["run", "--config", str(tmp_path / "missing.yaml"), "--drop", str(drop)]
    assert main([*bad, "--out", str(out)]) == 2
    # A missing argument, an unknown option.
    for args in ([*run, "--drop", str(drop)], [*run, "--drop", str(drop), "--out", "x", "--y"]):
        with pytest.raises(SystemExit) as done:
            main(args)
        assert done.value.code == 2
    # synth: a scale that is no scale.
    assert main(["synth", "--config", str(PILOT_CONFIG), "--out", str(out), "--scale", "0"]) == 2
    assert not out.exists() and not home.exists()
    made = {p.name for p in tmp_path.iterdir()} - {"dagster_home"}  # the tests' own instance
    assert made == {"a-file", "drop"}


def test_check_json_into_a_closed_pipe_ends_quietly(tmp_path):
    """`dpf-eval check --json DIR | head -1`: the reader has gone before the findings are
    written. No traceback, no complaint: the exit code of a closed pipe (128 + SIGPIPE)."""
    delivery = write_delivery(tmp_path / "drop", n_people=40)
    read, write = os.pipe()
    os.close(read)  # as `head` does once it has its line
    try:
        done = subprocess.run(
            dpf_eval("check", str(delivery), "--config", str(PILOT_CONFIG), "--json"),
            cwd=ROOT,
            env=cli_env(),
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == 141
