"""``python -m sincos_rs.train``: the seed program, trained for real.

End to end in subprocesses (exit status, the cost lines, the summary, the
PNG, ``--json``, ``--save`` / ``--resume``, bad flags, Ctrl-C, the README's
command), and in-process through ``train()`` for the numbers: same seed same
costs, rust and numpy backends agree, and the learning bar.
"""

from __future__ import annotations

import json
import math
import os
import re
import selectors
import shlex
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sincos_rs as sr
from sincos_rs.train import (
    MAX_TRACE_BATCHES,
    PredictionTrace,
    TrainConfig,
    load_checkpoint,
    main,
    save_checkpoint,
    stream,
    train,
)

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "python -m sincos_rs.train"

COST_LINE = re.compile(r"^cost: (\d+(?:\.\d+)?(?:e-?\d+)?)$")
SUMMARY_LINE = re.compile(
    r"^done: final cost (\d+\.\d{4}) after (\d+) iterations(?: \((\d+) this run\))? "
    r"in (\d+\.\d+) s \((\d+) it/s, backend (rust|numpy), (float32|float64)\)$"
)


# --- helpers ------------------------------------------------------------------------------


def run_cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m sincos_rs.train ARGS`` in ``cwd``, stdout and stderr captured."""
    return subprocess.run(
        [sys.executable, "-m", "sincos_rs.train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cost_lines(stdout: str) -> list[float]:
    """The values of the ``cost: ...`` lines, in order."""
    values = []
    for line in stdout.splitlines():
        match = COST_LINE.match(line)
        if match:
            values.append(float(match.group(1)))
    return values


def summary(stdout: str) -> re.Match[str]:
    lines = [line for line in stdout.splitlines() if line.startswith("done:")]
    assert len(lines) == 1, f"expected one summary line, got {lines!r} in:\n{stdout}"
    match = SUMMARY_LINE.match(lines[0])
    assert match, f"summary line has an unexpected format: {lines[0]!r}"
    return match


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails if not a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR", f"{path}: no IHDR chunk first"
    assert data[-8:-4] == b"IEND", f"{path}: truncated PNG (no IEND chunk at the end)"
    return struct.unpack(">II", data[16:24])


def assert_valid_png(path: Path) -> None:
    assert path.is_file(), f"no figure at {path}"
    width, height = png_size(path)
    assert (width, height) == (1000, 600), f"unexpected figure size {width}x{height}"
    size = path.stat().st_size
    assert 10_000 < size < 1_000_000, f"figure of {size} bytes: not a sensible size"


def expected_printed_costs(costs: list[float]) -> list[float]:
    """What the seed prints: round(cost, 4) every 20 iterations from the first."""
    return [round(c, 4) for c in costs[::20]]


def readme_command() -> str:
    """The run command in the README's fenced block that mentions it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL)
    lines = [line.strip() for b in blocks for line in b.splitlines() if COMMAND in line]
    assert lines, f"README.md has no fenced code block with `{COMMAND}`"
    wanted = f"pip install . && {COMMAND}"
    assert wanted in lines, f"README.md: expected the line `{wanted}`, found {lines!r}"
    return wanted.split("&&")[1].strip()


# --- the CLI end to end ------------------------------------------------------------------


def test_readme_command_runs_the_seed_program(tmp_path: Path) -> None:
    """The README's command, exactly (no flags): 400 iterations, 20 cost lines,
    the summary, the figure in the current folder."""
    command = readme_command()
    assert command == COMMAND
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "sincos_rs.train"]
    result = run_cli(*argv[3:], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    printed = cost_lines(result.stdout)
    assert len(printed) == 20, result.stdout
    assert printed == expected_printed_costs(train(TrainConfig()).costs)
    match = summary(result.stdout)
    assert int(match.group(2)) == 400
    assert (match.group(6), match.group(7)) == ("rust", "float32")
    assert "figure: sincos.png" in result.stdout.splitlines()
    assert_valid_png(tmp_path / "sincos.png")


def test_short_run_end_to_end(tmp_path: Path) -> None:
    result = run_cli("--iterations", "40", "--plot", "fig.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # Not a terminal: no progress bar, nothing at all on stderr.
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert [COST_LINE.match(line) is not None for line in lines[:2]] == [True, True]
    assert cost_lines(result.stdout) == expected_printed_costs(
        train(TrainConfig(iterations=40)).costs
    )
    match = summary(result.stdout)
    assert int(match.group(2)) == 40
    assert float(match.group(4)) > 0 and int(match.group(5)) > 0
    assert lines[-1] == "figure: fig.png"
    assert_valid_png(tmp_path / "fig.png")
    assert not (tmp_path / "sincos.png").exists()


def test_json_holds_settings_and_costs(tmp_path: Path) -> None:
    result = run_cli(
        "--iterations", "30", "--seed", "3", "--json", "run.json", "--no-plot", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert not list(tmp_path.glob("*.png")), "--no-plot wrote a figure"
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["settings"] == {
        "batch_size": 50,
        "time_steps": 20,
        "hidden_size": 10,
        "lr": 0.006,
        "forget_bias": 1.0,
        "seed": 3,
        "dtype": "float32",
        "backend": "rust",
        "eps_style": "tensorflow",
    }
    assert data["iterations_done"] == data["iterations_run"] == 30
    assert data["interrupted"] is False
    assert data["data_start"] == 30 * 20
    costs = data["costs"]
    assert len(costs) == 30 and all(isinstance(c, float) for c in costs)
    # Same seed, same numbers, across processes: exactly.
    assert costs == train(TrainConfig(iterations=30, seed=3)).costs
    assert data["final_cost"] == costs[-1]


def test_save_then_resume_equals_one_uninterrupted_run(tmp_path: Path) -> None:
    whole = run_cli("--iterations", "60", "--json", "whole.json", "--no-plot", cwd=tmp_path)
    first = run_cli("--iterations", "35", "--save", "ck.npz", "--no-plot", cwd=tmp_path)
    second = run_cli(
        "--resume", "ck.npz", "--iterations", "25", "--json", "resumed.json",
        "--plot", "resumed.png", cwd=tmp_path,
    )  # fmt: skip
    for result in (whole, first, second):
        assert result.returncode == 0, result.stderr

    whole_costs = json.loads((tmp_path / "whole.json").read_text())["costs"]
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert resumed["costs"] == whole_costs, "resumed run's costs differ from the whole run's"
    assert resumed["resumed_at"] == 35 and resumed["iterations_run"] == 25
    # The cost lines continue where the first part stopped (iterations 0, 20, 40).
    assert cost_lines(first.stdout) + cost_lines(second.stdout) == cost_lines(whole.stdout)
    match = summary(second.stdout)
    assert (int(match.group(2)), int(match.group(3))) == (60, 25)
    assert_valid_png(tmp_path / "resumed.png")

    checkpoint = load_checkpoint(tmp_path / "ck.npz")
    assert checkpoint.model.step == 35 and len(checkpoint.costs) == 35
    assert checkpoint.batches.start == 35 * 20


def test_resume_in_process_equals_uninterrupted(tmp_path: Path) -> None:
    whole = train(TrainConfig(iterations=50, dtype="float64"))
    part = train(TrainConfig(iterations=20, dtype="float64"))
    save_checkpoint(tmp_path / "ck.npz", part)
    checkpoint = load_checkpoint(tmp_path / "ck.npz")
    rest = train(
        TrainConfig(iterations=30, dtype="float64"),
        model=checkpoint.model,
        batches=checkpoint.batches,
        prior_costs=checkpoint.costs,
    )
    assert rest.costs == whole.costs
    assert rest.iterations_done == 50 and rest.iterations_run == 30


@pytest.mark.parametrize(
    "args",
    [
        ["--hidden-size", "-3"],
        ["--hidden-size", "0"],
        ["--batch-size", "-1"],
        ["--time-steps", "0"],
        ["--iterations", "-5"],
        ["--iterations", "ten"],
        ["--lr", "0"],
        ["--lr", "-0.01"],
        ["--lr", "nan"],
        ["--forget-bias", "inf"],
        ["--seed", "-1"],
        ["--dtype", "float16"],
        ["--backend", "torch"],
        ["--resume", "missing.npz"],
        ["--resume", "garbage.npz"],
        ["--backend", "numpy", "--save", "ck.npz"],
        ["--plot", "no/such/folder/fig.png"],
        ["--plot", "a.png", "--no-plot"],
        ["--no-such-flag"],
    ],
    ids=lambda args: " ".join(args),
)
def test_bad_flags_exit_2_with_one_line(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "garbage.npz").write_bytes(b"not a checkpoint")
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected a one-line message, got:\n{result.stderr}"
    assert "error" in lines[0]
    assert not list(tmp_path.glob("*.png")) and not (tmp_path / "ck.npz").exists()


def test_resume_with_conflicting_settings_exits_2(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ck.npz", train(TrainConfig(iterations=3)))
    result = run_cli("--resume", "ck.npz", "--hidden-size", "20", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--hidden-size" in result.stderr and "checkpoint" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # The same value as the checkpoint's is no conflict.
    ok = run_cli(
        "--resume", "ck.npz", "--hidden-size", "10", "--iterations", "2", "--no-plot",
        cwd=tmp_path,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert int(summary(ok.stdout).group(2)) == 5


def test_resume_from_a_bare_model_checkpoint_exits_2(tmp_path: Path) -> None:
    sr.LSTMRegressor().save(tmp_path / "bare.npz")  # no training metadata
    result = run_cli("--resume", "bare.npz", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_help_explains_every_flag(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for flag in (
        "--iterations", "--batch-size", "--time-steps", "--hidden-size", "--lr",
        "--forget-bias", "--seed", "--dtype", "--backend", "--save", "--resume",
        "--quiet", "--json", "--plot", "--no-plot", "--show",
    ):  # fmt: skip
        assert flag in result.stdout, f"--help does not mention {flag}"
    for default in ("400", "50", "20", "10", "0.006", "1.0", "float32", "sincos.png"):
        assert f"default: {default}" in result.stdout


def test_quiet_prints_only_the_summary(tmp_path: Path) -> None:
    result = run_cli("--iterations", "25", "--quiet", "--plot", "q.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1
    summary(result.stdout)
    assert_valid_png(tmp_path / "q.png")


def test_no_plot_run_imports_neither_matplotlib_nor_tqdm(tmp_path: Path) -> None:
    code = (
        "import sys; from sincos_rs.train import main; "
        "status = main(['--iterations', '2', '--no-plot', '--quiet']); "
        "print(status, 'matplotlib' in sys.modules, 'tqdm' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "0 False False"


def test_main_returns_the_status_instead_of_exiting(tmp_path: Path, capsys) -> None:
    assert main(["--lr", "0"]) == 2
    assert main(["--iterations", "2", "--no-plot", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("done: final cost")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
def test_ctrl_c_writes_the_last_completed_iteration_and_exits_130(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "sincos_rs.train", "--iterations", str(10**6)]
        + ["--save", "ck.npz", "--json", "run.json", "--no-plot"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=60), "no cost line within 60 s"
        first_line = process.stdout.readline()
        assert COST_LINE.match(first_line.strip()), first_line
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stderr and len(stderr.strip().splitlines()) == 1
    assert "done:" not in stdout

    model = sr.LSTMRegressor.load(tmp_path / "ck.npz")
    done = model.metadata["iterations_done"]
    assert done >= 1
    assert model.step == done == len(model.metadata["costs"])
    assert model.metadata["data_start"] == done * 20
    assert f"after {done} iterations" in stderr
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["interrupted"] is True and len(data["costs"]) == done
    # And the checkpoint continues exactly like an uninterrupted run.
    checkpoint = load_checkpoint(tmp_path / "ck.npz")
    more = train(
        TrainConfig(iterations=5),
        model=checkpoint.model,
        batches=checkpoint.batches,
        prior_costs=checkpoint.costs,
    )
    assert more.costs == train(TrainConfig(iterations=done + 5)).costs


# --- the numbers, in-process ---------------------------------------------------------------


def test_same_seed_same_costs() -> None:
    first = train(TrainConfig(iterations=100, seed=5)).costs
    second = train(TrainConfig(iterations=100, seed=5)).costs
    assert first == second
    assert first != train(TrainConfig(iterations=100, seed=6)).costs


def relative_differences(a: list[float], b: list[float]) -> np.ndarray:
    a64, b64 = np.asarray(a), np.asarray(b)
    return np.abs(a64 - b64) / np.abs(b64)


def test_backends_agree_float64_on_every_cost() -> None:
    rust = train(TrainConfig(dtype="float64", backend="rust")).costs
    numpy = train(TrainConfig(dtype="float64", backend="numpy")).costs
    assert len(rust) == len(numpy) == 400
    rel = relative_differences(rust, numpy)
    worst = int(rel.argmax())
    assert rel.max() < 1e-9, (
        f"float64: iteration {worst + 1}: rust {rust[worst]!r} vs numpy {numpy[worst]!r}, "
        f"relative difference {rel.max():.3g} >= 1e-9"
    )


def test_backends_agree_float32_over_the_first_50() -> None:
    rust = train(TrainConfig(iterations=50, backend="rust")).costs
    numpy = train(TrainConfig(iterations=50, backend="numpy")).costs
    rel = relative_differences(rust, numpy)
    worst = int(rel.argmax())
    assert rel.max() < 1e-3, (
        f"float32: iteration {worst + 1}: rust {rust[worst]!r} vs numpy {numpy[worst]!r}, "
        f"relative difference {rel.max():.3g} >= 1e-3"
    )


def test_numpy_backend_from_the_cli(tmp_path: Path) -> None:
    result = run_cli(
        "--backend", "numpy", "--dtype", "float64", "--iterations", "21", "--json", "np.json",
        "--no-plot", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert summary(result.stdout).group(6, 7) == ("numpy", "float64")
    costs = json.loads((tmp_path / "np.json").read_text())["costs"]
    rust = train(TrainConfig(iterations=21, dtype="float64")).costs
    assert relative_differences(costs, rust).max() < 1e-9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_default_run_learns(seed: int) -> None:
    """The learning bar: the mean of the last 20 of 400 costs is below 0.5 and
    at least 20 times below the first cost."""
    result = train(TrainConfig(seed=seed))
    first, mean_last = result.costs[0], result.mean_last(20)
    assert all(math.isfinite(c) for c in result.costs)
    assert mean_last < 0.5, f"seed {seed}: mean of the last 20 costs {mean_last:.4f} >= 0.5"
    assert mean_last * 20 <= first, (
        f"seed {seed}: mean of the last 20 costs {mean_last:.4f} is not 20 times below "
        f"the first cost {first:.4f}"
    )


# --- the figure's trace ----------------------------------------------------------------------


def test_trace_keeps_row_0_end_to_end() -> None:
    result = train(TrainConfig(iterations=7, time_steps=5, batch_size=3), record_trace=True)
    trace = result.trace
    assert trace is not None and len(trace) == 7 and trace.stride == 1
    # Row 0 of consecutive batches continues along x without gaps or overlap.
    steps = np.diff(trace.xs.ravel())
    np.testing.assert_allclose(steps, 1 / (10 * np.pi))
    np.testing.assert_allclose(trace.true, np.cos(trace.xs), atol=1e-6)


def test_trace_of_a_long_run_is_bounded() -> None:
    iterations = 3 * MAX_TRACE_BATCHES + 1
    trace = PredictionTrace(iterations, time_steps=4)
    xs = np.zeros((2, 4))
    for _ in range(iterations):
        trace.add(xs, np.zeros((2, 4, 1)), np.zeros((2, 4, 1)))
    assert trace.stride == 4
    assert len(trace) <= MAX_TRACE_BATCHES
    assert trace.xs.shape == (len(trace), 4)


# --- --stream: the trained model one step at a time -------------------------------------


def test_stream_flag_prints_and_adds_a_panel(tmp_path: Path) -> None:
    result = run_cli("--iterations", "30", "--stream", "200", "--plot", "s.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("stream: "))
    assert line.startswith("stream: 200 steps of sin(x) one at a time"), line
    assert "never trained on" in line and "mse" in line
    assert png_size(tmp_path / "s.png") == (1000, 900)  # a third panel, half as tall again
    assert 10_000 < (tmp_path / "s.png").stat().st_size < 1_000_000


@pytest.mark.parametrize("backend", ["rust", "numpy"])
def test_stream_equals_predict_over_the_same_steps(backend: str) -> None:
    result = train(TrainConfig(iterations=5, dtype="float64", backend=backend))
    first_unseen = result.batches.start - 20 + 20 * 50
    streamed = stream(result.model, result.batches, 30)
    assert streamed.xs[0] * 10 * math.pi == pytest.approx(first_unseen)
    result.model.reset_state()
    want = result.model.predict(np.sin(streamed.xs).reshape(1, 30, 1))
    np.testing.assert_allclose(streamed.pred, want[0, :, 0], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(streamed.true, np.cos(streamed.xs))


#: A sitecustomize that sends the process SIGINT when the module named by
#: SINCOS_RS_TEST_SIGINT_AT is about to be imported (and leaves a mark).
SIGINT_AT_IMPORT = """
import os, signal, sys

class InterruptAt:
    def find_spec(self, fullname, path=None, target=None):
        if fullname == os.environ["SINCOS_RS_TEST_SIGINT_AT"]:
            sys.meta_path.remove(self)
            open(os.environ["SINCOS_RS_TEST_SIGINT_MARK"], "w").close()
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, InterruptAt())
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to oneself")
@pytest.mark.parametrize(
    "module",
    # What `python -m sincos_rs.train` imports after the package's first
    # lines run, in order: the CLI module, NumPy, the kernels, the rest.
    ["sincos_rs.train", "argparse", "numpy", "sincos_rs._core", "sincos_rs.data"]
    + ["sincos_rs.regressor", "sincos_rs.reference", "sincos_rs._atomic"],
)
def test_ctrl_c_while_the_cli_starts_exits_130_with_one_line(tmp_path: Path, module: str) -> None:
    """However early Ctrl-C arrives once our code runs (here: as each module
    is imported, deterministically), exit 130 and one line, no traceback.
    Before, NumPy and the kernels loaded in the package's __init__, before
    the CLI could handle it: a KeyboardInterrupt traceback, status -2."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SIGINT_AT_IMPORT)
    mark = tmp_path / "fired"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")]),
        "SINCOS_RS_TEST_SIGINT_AT": module,
        "SINCOS_RS_TEST_SIGINT_MARK": str(mark),
    }
    result = subprocess.run(
        [sys.executable, "-m", "sincos_rs.train", "--iterations", "5", "--no-plot"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert mark.exists(), f"{module} was not imported after the hook: the test does not test"
    assert result.returncode == 130, (result.returncode, result.stderr[-3000:])
    assert result.stderr == "interrupted\n", result.stderr[-3000:]
    assert result.stdout == ""
