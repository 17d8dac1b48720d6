"""Every compiled kernel instance against the NumPy reference.

The kernels are compiled for AVX-512, AVX2+FMA and baseline x86-64, and the
best one this CPU has runs (``sincos_rs.simd_level()``). ``SINCOS_RS_SIMD``
caps that choice, once per process; so each lower level gets a subprocess
that reruns the layer and seed-network comparisons of
``test_rust_vs_reference.py`` with the cap set, and checks the cap held.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import sincos_rs as sr

TESTS = Path(__file__).parent
LEVELS = ("baseline", "avx2", "avx512")


def level_in(env_value: str) -> str:
    """``simd_level()`` in a fresh interpreter with ``SINCOS_RS_SIMD`` set."""
    env = {**os.environ, sr._core.SIMD_ENV_VAR: env_value}
    out = subprocess.run(
        [sys.executable, "-c", "import sincos_rs; print(sincos_rs.simd_level())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_simd_level_names_the_instance_in_use() -> None:
    assert sr.simd_level() in LEVELS


def test_the_cap_never_raises_the_level() -> None:
    best = sr.simd_level() if sr._core.SIMD_ENV_VAR not in os.environ else level_in("avx512")
    assert level_in("baseline") == "baseline"
    assert level_in("avx512") == best
    assert level_in("nonsense") == best
    assert level_in("avx2") == ("avx2" if best != "baseline" else "baseline")


@pytest.mark.parametrize("level", ["baseline", "avx2"])
def test_lower_instances_match_the_reference(level: str) -> None:
    if level == "avx2" and level_in("avx2") != "avx2":
        pytest.skip("this CPU has no AVX2+FMA: its instance cannot run here")
    env = {**os.environ, sr._core.SIMD_ENV_VAR: level}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(TESTS / "test_rust_vs_reference.py"),
            str(TESTS / "test_accuracy.py"),
            "-k",
            "lstm_layer or seed_loss or one_train_step or accurate or accuracy",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, f"{level}:\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}"
    assert " passed" in run.stdout and "failed" not in run.stdout, run.stdout[-1000:]
