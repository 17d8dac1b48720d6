"""``_core.pyi`` matches the compiled module: mypy's stubtest compares every
name, signature and class in the stub with the module at run time (so a
function added in the binding, rust/python.rs or rust/python/, needs its
stub, and ``__all__`` too)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest


def test_stubs_match_the_compiled_module(tmp_path: Path) -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.fail('mypy is not installed: pip install ".[test]"')
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "sincos_rs._core"],
        cwd=tmp_path,  # its cache goes there
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"stubtest:\n{result.stdout[-5000:]}\n{result.stderr[-2000:]}"
