"""Bad input: every broken scenario gets exit status 2 and one clear line per problem.

The corpus lives in ``tests/corpus/bad/*.toml``; each file says what it expects in
comment lines ``# expect: FRAGMENT`` (one per problem line; ``A ... B`` means both
fragments, in order, on the same line).  Files that cannot hold such comments
(empty, binary, missing, a directory...) are made here in code.  Every case goes
through the real command line: ``validate`` and ``run`` must print exactly the
expected lines, each starting with the file name and naming the field, with no
traceback and no run folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simulator.cli import app
from simulator.scenario import MAX_FILE_BYTES

CORPUS = Path(__file__).parent / "corpus" / "bad"
ROOT = Path(__file__).parent.parent
GOOD = """\
name = "good"
days = 1
[population]
users = 1000
[[generate]]
count = 3
categories = ["beauty"]
"""


def expectations(path: Path) -> list[list[str]]:
    """The ``# expect:`` lines of a corpus file, each split into its ordered fragments."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return [line[len("# expect: ") :].split(" ... ") for line in text.splitlines() if line.startswith("# expect: ")]


def matches(fragments: list[str], line: str) -> bool:
    pos = 0
    for frag in fragments:
        i = line.find(frag, pos)
        if i < 0:
            return False
        pos = i + len(frag)
    return True


def check_lines(label: str, lines: list[str], expected: list[list[str]]) -> None:
    """Exactly one line per expected problem, each ``FILE: field: message``, matched in any order."""
    assert lines, f"no error lines for {label}"
    assert len(lines) == len(expected), f"{label}: expected {len(expected)} line(s), got:\n" + "\n".join(lines)
    for line in lines:
        assert line.startswith(f"{label}: "), line
        assert "Traceback" not in line and "Error(" not in line, line
        assert len(line) < 400, f"line too long ({len(line)}): {line[:120]}"
    for frags in expected:
        assert any(matches(frags, line) for line in lines), f"{label}: no line with {frags!r} in:\n" + "\n".join(lines)


def stderr_lines(result) -> list[str]:  # noqa: ANN001
    return [line for line in result.stderr.splitlines() if line.strip()]


CASES = sorted(CORPUS.glob("*.toml"))


def test_corpus_is_big_and_every_file_says_what_it_expects():
    assert len(CASES) >= 60
    for path in CASES:
        assert expectations(path), f"{path.name} has no '# expect:' line"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_corpus_validate_exits_2_with_one_line_per_problem(path: Path):
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    check_lines(str(path), stderr_lines(result), expectations(path))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_corpus_run_exits_2_and_writes_nothing(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    for args in (["run", str(path), "--quiet"], ["run", str(path), "--quiet", "--out", str(out)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        check_lines(str(path), stderr_lines(result), expectations(path))
    assert list(tmp_path.iterdir()) == [], "a refused run must not create any folder"


# ---------------------------------------------------------------- cases made in code


def _write(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(data)
        return path

    return make


def _missing(tmp: Path) -> Path:
    return tmp / "no_such_scenario.toml"


def _missing_dir(tmp: Path) -> Path:
    return tmp / "no_such_folder" / "x.toml"


def _directory(tmp: Path) -> Path:
    path = tmp / "a_folder.toml"
    path.mkdir()
    return path


def _dangling_symlink(tmp: Path) -> Path:
    path = tmp / "link.toml"
    path.symlink_to(tmp / "gone.toml")
    return path


def _fifo(tmp: Path) -> Path:
    path = tmp / "pipe.toml"
    os.mkfifo(path)
    return path


def _huge(tmp: Path) -> Path:
    path = tmp / "huge.toml"
    with open(path, "wb") as fh:
        fh.write(GOOD.encode())
        fh.write(b"# " + b"x" * (MAX_FILE_BYTES + 10) + b"\n")
    return path


def _unreadable(tmp: Path) -> Path:
    path = tmp / "secret.toml"
    path.write_text(GOOD)
    path.chmod(0)
    return path


GENERATED: list[tuple[str, Callable[[Path], Path], str]] = [
    ("empty", _write("empty.toml", b""), "the file is empty"),
    ("whitespace_only", _write("blank.toml", b"  \n\t\n\n"), "the file is empty"),
    ("binary", _write("binary.toml", bytes(range(256)) * 8), "not a UTF-8 text file"),
    ("png_header", _write("image.toml", b"\x89PNG\r\n\x1a\n" + b"\xff\xfe" * 50), "not a UTF-8 text file"),
    ("nul_bytes", _write("nul.toml", GOOD.encode() + b"\x00\x00"), "contains NUL bytes"),
    ("utf16", _write("utf16.toml", GOOD.encode("utf-16")), "not a UTF-8 text file"),
    ("latin1", _write("latin1.toml", 'name = "caf\xe9"\n'.encode("latin-1")), "not a UTF-8 text file"),
    ("deeply_nested", _write("deep.toml", b"name = " + b"[" * 5000 + b"]" * 5000), "nested too deeply"),
    ("deep_inline", _write("deep2.toml", b"x = " + b"{a = " * 3000 + b"1" + b"}" * 3000), "nested too deeply"),
    ("json_not_toml", _write("x.toml", b'{"name": "x", "days": 3}'), "TOML syntax error"),
    ("yaml_not_toml", _write("x.toml", b"name: x\ndays: 3\n"), "TOML syntax error"),
    ("missing", _missing, "no such file"),
    ("missing_folder", _missing_dir, "no such file"),
    ("directory", _directory, "is a directory"),
    ("dangling_symlink", _dangling_symlink, "no such file"),
    ("fifo", _fifo, "not a regular file"),
    ("too_large", _huge, "too large for a scenario file"),
    ("unreadable", _unreadable, "cannot read"),
]


@pytest.mark.parametrize(("maker", "fragment"), [c[1:] for c in GENERATED], ids=[c[0] for c in GENERATED])
def test_generated_bad_files(maker, fragment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if maker is _unreadable and os.geteuid() == 0:
        pytest.skip("root reads any file")
    work = tmp_path / "work"
    work.mkdir()
    path = maker(tmp_path)
    monkeypatch.chdir(work)
    for args in (["validate", str(path)], ["run", str(path), "--quiet"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        check_lines(str(path), stderr_lines(result), [[fragment]])
    assert list(work.iterdir()) == []


def test_byte_order_mark_is_accepted(tmp_path: Path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "ok (good: 1 days" in result.stdout


def test_validate_reports_every_file_and_still_exits_2(tmp_path: Path):
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    bad = CORPUS / "unknown_top_key.toml"
    result = CliRunner().invoke(app, ["validate", str(good), str(bad), str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert f"{good}: ok" in result.stdout
    lines = stderr_lines(result)
    assert lines == [f"{bad}: dayz: unknown field (did you mean days?)", f"{tmp_path / 'nope.toml'}: no such file"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--days", "0"], "--days: must be between 1 and 400 (got 0)"),
        (["--days", "100000"], "--days: must be between 1 and 400"),
        (["--seed", "-3"], "--seed: must be >= 0 (got -3)"),
        (["--seed", str(2**64)], "seed: must be < 9223372036854775808"),
    ],
)
def test_bad_options_exit_2(args: list[str], fragment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", str(path), "--quiet", *args])
    assert result.exit_code == 2, result.output
    assert any(fragment in line for line in stderr_lines(result)), result.output
    assert not (tmp_path / "runs").exists()


def test_report_on_bad_folders_exits_2(tmp_path: Path):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    damaged = tmp_path / "damaged_run"
    damaged.mkdir()
    (damaged / "manifest.json").write_text("{}")
    (damaged / "scenario.toml").write_text(GOOD)
    (damaged / "advertiser_daily.parquet").write_bytes(b"not parquet at all")
    (damaged / "market_daily.parquet").write_bytes(b"PAR1")
    cases = [
        (tmp_path / "nope", "not a complete run folder"),
        (empty, "not a complete run folder"),
        (damaged, "damaged run folder"),
    ]
    for folder, fragment in cases:
        result = CliRunner().invoke(app, ["report", str(folder)])
        assert result.exit_code == 2, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        lines = stderr_lines(result)
        assert len(lines) == 1 and lines[0].startswith(f"{folder}: ") and fragment in lines[0], lines
    bad_scenario = tmp_path / "bad_scenario_run"
    bad_scenario.mkdir()
    (bad_scenario / "manifest.json").write_text("{}")
    (bad_scenario / "scenario.toml").write_text("days = [")
    result = CliRunner().invoke(app, ["report", str(bad_scenario)])
    assert result.exit_code == 2
    assert "scenario.toml: TOML syntax error" in result.stderr


SUBPROCESS_CASES = ["unknown_nested_key", "nan_and_inf", "syntax_unclosed_table", "limit_memory", "several_problems"]


def test_real_process_exit_status_and_no_traceback(tmp_path: Path):
    """The same through a real interpreter, ``python -m simulator``: exit status, stderr, no folder.

    (Two processes only: each pays the interpreter's start-up and imports.)
    """
    paths = [CORPUS / f"{stem}.toml" for stem in SUBPROCESS_CASES]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "simulator", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )

    proc = cli("validate", *map(str, paths))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    for path in paths:
        check_lines(str(path), [ln for ln in lines if ln.startswith(f"{path}: ")], expectations(path))
    assert len(lines) == sum(len(expectations(p)) for p in paths)
    proc = cli("run", str(paths[0]), "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    check_lines(str(paths[0]), [ln for ln in proc.stderr.splitlines() if ln.strip()], expectations(paths[0]))
    assert list(tmp_path.iterdir()) == []
