"""The README's two set-up commands stay true: CI runs the test command
verbatim, and the run command is the one `test_train_cli.py` executes."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_COMMAND = "pip install . && python -m sincos_rs.train"
TEST_COMMAND = 'pip install ".[test,torch]" && cargo test -q && python -m pytest -q'


def fenced_lines(text: str) -> list[str]:
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_readme_has_the_two_setup_commands() -> None:
    lines = fenced_lines((ROOT / "README.md").read_text(encoding="utf-8"))
    assert RUN_COMMAND in lines
    assert TEST_COMMAND in lines


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert TEST_COMMAND in [line.strip() for line in ci]


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]])
def test_python_sources_pass_ruff(args: list[str]) -> None:
    """ruff comes with the test extras (``pip install ".[test]"``)."""
    if importlib.util.find_spec("ruff") is None:
        pytest.fail('ruff is not installed: pip install ".[test]"')
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "python", "tests", "benches", "examples"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The API example in the README runs as written (in a scratch folder)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL)
    assert blocks, "README.md has no ```python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md example", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "model.npz").exists()
    out = namespace["out"]
    assert getattr(out, "shape", None) == (32, 100, 64)
