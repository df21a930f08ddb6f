"""The command line's --help for every sub-command, and which settings each one lists."""

from __future__ import annotations

import pytest

from open_dsm.cli import BENCHMARKS, COMMAND_SETTINGS, build_parser

COMMANDS = ["serve", "migrate", "train", "import", "points", "demo"]


def _help(capsys: pytest.CaptureFixture[str], words: list[str]) -> str:
    parser = build_parser(bench_arguments="bench" in words)
    with pytest.raises(SystemExit) as stop:
        parser.parse_args([*words, "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: open-dsm")
    return text


@pytest.mark.parametrize(
    "words", [[], *([c] for c in COMMANDS), ["bench"], *(["bench", b] for b in BENCHMARKS)]
)
def test_every_help_prints(capsys: pytest.CaptureFixture[str], words: list[str]) -> None:
    text = _help(capsys, words)
    assert len(text.splitlines()) > 2


def test_serve_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, ["serve"])
    for flag in ("--bacnet-address", "--demand-charge-per-kw", "--http-port", "--db"):
        assert flag in text


@pytest.mark.parametrize("command", sorted(COMMAND_SETTINGS))
def test_other_commands_list_only_their_settings(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    text = _help(capsys, [command])
    flags = {"--" + name.replace("_", "-") for name in COMMAND_SETTINGS[command]}
    for flag in flags:
        assert flag in text
    for foreign in ("--bacnet-address", "--demand-charge-per-kw", "--http-port", "--has-battery"):
        assert foreign not in text, f"{command} --help lists {foreign}"


def test_bench_demand_help_shows_percent(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, ["bench", "demand"])
    assert "20% of the target" in " ".join(text.split())


def test_serve_help_shows_an_empty_list_default(capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(_help(capsys, ["serve"]).split())
    assert "[OPEN_DSM_BBMD_BDT; default: empty]" in text
    assert "default: computed" not in text
