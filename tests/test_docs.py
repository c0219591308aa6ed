"""Docs that do not rot: every `metarun ...` command in the README and the docs composes.

Each command is composed as the CLI would compose it (Hydra's compose API, no training), and keys
added with `+` are checked as the CLI checks them, so a renamed or misspelt key in a page fails the
suite. Placeholders (`<run dir>`, `...`) stand for paths; sweeps (`a,b,c`) are composed with their
first value."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from metarun.config_check import check_added_keys

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# subcommands and other programs whose arguments are not overrides
NOT_OVERRIDES = ("predict",)


def commands_in(text: str) -> list[str]:
    """`metarun ARGS` in inline code, and lines of code blocks that start with it."""
    found = re.findall(r"`metarun ([^`]+)`", text)
    for block in re.findall(r"```(?:bash|sh|shell)?\n(.*?)```", text, flags=re.S):
        found += [line.split(" #")[0][len("metarun "):] for line in block.splitlines()
                  if line.startswith("metarun ")]
        found += [line.split("#")[0].split("-m metarun.cli", 1)[1] for line in block.splitlines()
                  if "-m metarun.cli" in line and line.startswith("torchrun")]
    return found


def overrides_of(arguments: str) -> list[str] | None:
    """The overrides a command gives, with placeholders as plain paths and sweeps at their first
    value; None for commands that take no overrides (`metarun predict`, `metarun --help`)."""
    arguments = re.sub(r"<[^<>]*>", "X", arguments.replace("\\\n", " "))
    try:
        tokens = shlex.split(arguments)
    except ValueError:  # a quoted fragment cut by the table it sits in
        tokens = arguments.split()
    if not tokens or tokens[0] in NOT_OVERRIDES or tokens[0] in ("--help", "-h"):
        return None
    overrides = []
    for token in tokens:
        if "=" not in token or token.startswith("-"):
            continue  # -m, --cfg job, "..."
        key, value = token.split("=", 1)
        if "," in value and not value.startswith(("[", "{")):
            value = value.split(",")[0]
        overrides.append(f"{key}={value}")
    return overrides


DOC_COMMANDS = sorted({(page.relative_to(ROOT).as_posix(), arguments)
                       for page in PAGES for arguments in commands_in(page.read_text())})


def test_the_pages_hold_commands():
    pages = {page for page, _ in DOC_COMMANDS}
    assert {"README.md", "docs/getting-started.md", "docs/own-data.md", "docs/sweeps.md"} <= pages
    assert len(DOC_COMMANDS) > 50


@pytest.fixture(scope="module")
def composing():
    """Hydra initialised once for the module (each initialisation costs about a second)."""
    with initialize_config_module(config_module="metarun.conf", version_base="1.3"):
        yield


def compose_command(arguments: str) -> None:
    overrides = overrides_of(arguments)
    if overrides is None:
        return
    compose(config_name="config", overrides=overrides, return_hydra_config=True)
    check_added_keys([o for o in overrides if not o.startswith("hydra")],
                     lambda kept: compose(config_name="config", overrides=kept))


@pytest.mark.parametrize("page, arguments", DOC_COMMANDS, ids=[f"{p}: {a[:60]}" for p, a in DOC_COMMANDS])
def test_every_command_in_the_docs_composes(page, arguments, composing):
    compose_command(arguments)


@pytest.mark.parametrize("arguments", ["algo=protonet trainer.max_step=5", "+trainer.max_step=5 algo=maml",
                                       "algo=protonett", "-m algo=maml,protonet data.way=5,20"])
def test_a_renamed_or_misspelt_key_in_a_page_fails(arguments, composing):
    with pytest.raises(Exception):
        compose_command(arguments)
