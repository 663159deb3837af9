"""What the terminal shows: user text printed as written (never rich markup or emoji codes),
each reason once, the verify table within 80 columns, and render saying what it did."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import cli, report, spec, verify

HOSTILE = "probe nosuchmod:train: cannot import 'nosuchmod' [bold]x[/bold] :smile:"


def table_text(result: verify.VerifyResult, width: int = 80) -> str:
    console = cli._console()
    console.width = width
    console.record = True
    report.print_table(result, console)
    return console.export_text()


def joined(text: str) -> str:
    """``text`` with its line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture
def demo(write_spec) -> spec.Spec:  # type: ignore[no-untyped-def]
    return spec.load(write_spec())


class TestVerifyTable:
    def test_reasons_are_printed_verbatim_and_once(self, demo: spec.Spec) -> None:
        failed = verify.TargetResult("venv", "failed", reason=HOSTILE)
        text = joined(table_text(verify.VerifyResult(demo, [failed], None, strict=False)))
        assert text.count(HOSTILE) == 1, text  # in the FAIL line, not again above it
        assert f"FAIL venv: failed: {HOSTILE}" in text
        assert "🚋" not in text and "😄" not in text

    def test_a_skip_that_is_no_failure_is_explained_once(self, demo: spec.Spec) -> None:
        skipped = verify.TargetResult("nix", "skipped", reason="nix: not installed [see docs]")
        failed = verify.TargetResult("venv", "failed", reason="boom")
        text = joined(table_text(verify.VerifyResult(demo, [skipped, failed], None, strict=False)))
        assert text.count("nix: not installed [see docs]") == 1
        assert "nix skipped: nix: not installed [see docs]" in text

    @pytest.mark.parametrize("width", [80, 120])
    def test_the_table_fits_and_the_verdict_is_whole(self, demo: spec.Spec, width: int) -> None:
        reason = "devcontainer: the cu130 flavor needs an NVIDIA GPU and none is visible here"
        rows = [
            verify.TargetResult("devcontainer", "skipped", reason=reason),
            verify.TargetResult("nix", "failed", reason="nix develop failed"),
        ]
        text = table_text(verify.VerifyResult(demo, rows, None, strict=False), width)
        table = text.split("\n\n")[0].splitlines() if "\n\n" in text else text.splitlines()[:4]
        assert max(len(line.rstrip()) for line in table) <= width
        assert "skipped" in text and "failed" in text
        assert "…" not in text


class TestRenderSaysWhatItWrote:
    def test_nothing_to_write(
        self, write_spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
    ) -> None:  # type: ignore[no-untyped-def]
        write_spec()
        monkeypatch.chdir(tmp_path)
        assert cli.main(["render"]) == 0
        assert capsys.readouterr().err == (
            "render: nothing to write: environment.toml has no [targets.nix], "
            "[targets.devcontainer], [variables] or [ci] (locks are written by 'envparity lock'; "
            "'envparity init' writes the two targets as comments, ready to uncomment)\n"
        )

    def test_written_then_current(
        self, write_spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
    ) -> None:  # type: ignore[no-untyped-def]
        from tests.helpers import MINIMAL

        write_spec(MINIMAL + '\n[variables]\nDATA = "./data"\n')
        monkeypatch.chdir(tmp_path)
        assert cli.main(["render"]) == 0
        out = capsys.readouterr()
        assert out.out == "  created .env.example\n"
        assert out.err == "render: wrote 1 of 1 generated file(s)\n"
        assert cli.main(["render"]) == 0
        assert capsys.readouterr().err == (
            "render: wrote 0 of 1 generated file(s) (the rest were current)\n"
        )


def test_an_error_is_printed_once(
    write_spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    write_spec()
    monkeypatch.chdir(tmp_path)
    assert cli.main(["verify", "--targets", "nix"]) == 2
    err = capsys.readouterr().err
    assert err.count("target 'nix' needs settings") == 1
    assert err.startswith("envparity: error\n")


class TestHelpMatchesReadme:
    """Each verb's --help says what README says the verb does."""

    @pytest.mark.parametrize(
        ("argv", "expected"),
        [
            pytest.param(
                ["render", "--help"],
                "write flake.nix, .devcontainer/, .env.example and, with [ci], the CI workflow "
                "and noxfile.py",
                id="render",
            ),
            pytest.param(
                ["compare", "--help"],
                "--rtol RTOL relative tolerance on the same device model (default: bitwise / "
                "1e-4; with --spec or ENVPARITY_SPEC, that spec's [verify])",
                id="compare",
            ),
            pytest.param(
                ["init", "--help"],
                "--from FILE requirements.txt, a conda environment.yml or spec list (conda list "
                "--export, @EXPLICIT), or a Poetry or PEP 621 + uv pyproject.toml",
                id="init",
            ),
        ],
    )
    def test_help_text(self, argv: list[str], expected: str, capsys) -> None:  # type: ignore[no-untyped-def]
        assert cli.main(argv) == 0
        assert expected in joined(capsys.readouterr().out)

    def test_probe_help_hides_the_deprecated_alias_which_still_works(self, capsys) -> None:  # type: ignore[no-untyped-def]
        assert cli.main(["probe", "--help"]) == 0
        shown = joined(capsys.readouterr().out)
        assert "--deterministic-algorithms {true,warn,false}" in shown
        assert "--no-deterministic-algorithms" not in shown
        args = cli.build_parser().parse_args(
            ["probe", "--out", "f.json", "--no-deterministic-algorithms"]
        )
        assert args.deterministic_algorithms is False
