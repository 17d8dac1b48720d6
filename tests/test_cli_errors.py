"""Every user mistake on the command line: exit status 2 and one line on
stderr, no traceback, found before training where it can be; a run whose
cost stops being finite stops with status 2 and ``--save`` keeps the last
finite iteration."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

import sincos_rs as sr
from sincos_rs.train import load_checkpoint
from test_train_cli import run_cli


def assert_usage_error(result, *words: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    for word in words:
        assert word in lines[0], f"{word!r} not in: {lines[0]}"
    return lines[0]


def test_a_diverging_run_stops_with_status_2_and_saves_the_last_finite_state(
    tmp_path: Path,
) -> None:
    result = run_cli(
        "--lr", "1e30", "--iterations", "5", "--save", "d.npz", "--json", "d.json",
        "--no-plot", cwd=tmp_path,
    )  # fmt: skip
    line = assert_usage_error(result, "not finite")
    assert "done:" not in result.stdout
    checkpoint = load_checkpoint(tmp_path / "d.npz")  # loads
    done = checkpoint.model.step
    assert 1 <= done < 5 and len(checkpoint.costs) == done
    assert all(np.isfinite(checkpoint.costs))
    assert f"after {done} iterations" in line and "d.npz" in line
    data = json.loads((tmp_path / "d.json").read_text())
    assert len(data["costs"]) == done and data["diverged"]
    # Resuming loads the file (it is valid) and stops again at the same step.
    again = run_cli("--resume", "d.npz", "--iterations", "3", "--no-plot", cwd=tmp_path)
    assert "not finite" in assert_usage_error(again)
    assert "invalid" not in again.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["--lr", "1e39"], ["--lr", "float32"]),
        (["--lr", "1e-50"], ["--lr", "float32"]),
        (["--forget-bias", "1e39"], ["--forget-bias", "float32"]),
        (["--forget-bias=-3.5e38"], ["--forget-bias", "float32"]),
        (["--hidden-size", "100000"], ["memory"]),
        (["--batch-size", "1000000000000"], ["memory"]),
        (["--time-steps", "1000000000000"], ["memory"]),
        (["--hidden-size", "3000", "--batch-size", "100000"], ["memory"]),
        (["--save", ""], ["--save"]),
        (["--json", ""], ["--json"]),
        (["--plot", ""], ["--plot"]),
        (["--save", "a_file/x.npz"], ["--save"]),
        (["--save", "x" * 300 + ".npz"], ["--save"]),
        (["--json", "same.out", "--save", "same.out"], ["same"]),
        (["--plot", "same.out", "--json", "same.out"], ["same"]),
        (["--save", "folder"], ["--save", "folder"]),
        (["--resume", "folder"], ["--resume"]),
        # Sizes that do not fit, found before training (issue 21, item 6).
        (["--stream", str(10**9)], ["--stream", "memory"]),
        (["--stream", str(10**12)], ["--stream", "memory"]),
        (["--stream", str(2**63)], ["--stream", "memory"]),
        # Folders no file can be written in, even by root (os.access says yes).
        (["--save", "/proc/x.npz"], ["--save", "/proc"]),
        (["--json", "/sys/x.json"], ["--json", "/sys"]),
        (["--plot", "/proc/self/x.png"], ["--plot", "/proc/self"]),
        (["--plot", "/sys/kernel/x.png"], ["--plot", "/sys/kernel"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0].startswith("-") else "",
)
def test_user_mistakes_exit_2_before_training(
    tmp_path: Path, args: list[str], words: list[str]
) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "folder").mkdir()
    start = time.perf_counter()
    result = run_cli(*args, "--iterations", "100000", cwd=tmp_path, timeout=60)
    assert_usage_error(result, *words)
    assert result.stdout == "", "training started"
    assert time.perf_counter() - start < 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "folder"]


def edited_checkpoints(tmp_path: Path) -> list[tuple[str, Path]]:
    from sincos_rs.train import TrainConfig, save_checkpoint, train

    good = tmp_path / "good.npz"
    save_checkpoint(good, train(TrainConfig(iterations=3)))
    with np.load(good) as npz:
        arrays = {k: npz[k] for k in npz.files}
    config = json.loads(str(arrays["config"]))
    meta = config["metadata"]
    cases = []
    for name, change in [
        ("batch size 1e12", {"settings": meta["settings"] | {"batch_size": 10**12}}),
        ("time steps 1e12", {"settings": meta["settings"] | {"time_steps": 10**12}}),
        ("batch size != state", {"settings": meta["settings"] | {"batch_size": 7}}),
        ("dtype != model", {"settings": meta["settings"] | {"dtype": "float64"}}),
        ("hidden != model", {"settings": meta["settings"] | {"hidden_size": 11}}),
        ("settings a list", {"settings": [1, 2]}),
        ("data_start negative", {"data_start": -20}),
        ("data_start huge", {"data_start": 10**400}),
        ("data_start a string", {"data_start": "60"}),
        ("costs not numbers", {"costs": ["a", "b", "c"]}),
        ("costs a dict", {"costs": {"a": 1}}),
        ("iterations_done != costs", {"iterations_done": 2}),
    ]:
        path = tmp_path / f"edit{len(cases)}.npz"
        edited = config | {"metadata": meta | change}
        np.savez(path, **(arrays | {"config": np.array(json.dumps(edited))}))
        cases.append((name, path))
    nan = tmp_path / "nan.npz"
    w = arrays["param/lstm.weight_hh"].copy()
    w[0, 0] = np.nan
    np.savez(nan, **(arrays | {"param/lstm.weight_hh": w}))
    cases.append(("nan weight", nan))
    return cases


def test_edited_checkpoints_exit_2_with_one_line(tmp_path: Path) -> None:
    failures = []
    for name, path in edited_checkpoints(tmp_path):
        result = run_cli("--resume", path.name, "--iterations", "2", "--no-plot", cwd=tmp_path)
        lines = result.stderr.strip().splitlines()
        if result.returncode != 2 or "Traceback" in result.stderr or len(lines) != 1:
            failures.append(f"{name}: exit {result.returncode}:\n{result.stderr[-1500:]}")
        elif path.name not in lines[0]:
            failures.append(f"{name}: the file is not named: {lines[0]}")
    assert not failures, "\n".join(failures)


def test_load_checkpoint_of_edited_files_is_a_value_error(tmp_path: Path) -> None:
    for name, path in edited_checkpoints(tmp_path):
        with pytest.raises(ValueError, match=path.name):
            load_checkpoint(path)
        del name
    assert sr.LSTMRegressor.load(tmp_path / "good.npz").step == 3


@pytest.mark.parametrize(
    "args, words",
    [
        (["--iterations", str(10**12), "--no-plot"], ["iterations", "memory"]),
        (["--iterations", str(2**63), "--no-plot"], ["iterations", "memory"]),
        # A checkpoint's settings hold at most 64 MiB of JSON, the costs included.
        (["--iterations", "3000000", "--save", "x.npz", "--no-plot"], ["--save", "3000000"]),
    ],
    ids=["1e12 iterations", "2**63 iterations", "save 3e6 costs"],
)
def test_runs_that_cannot_keep_their_costs_exit_2_before_training(
    tmp_path: Path, args: list[str], words: list[str]
) -> None:
    result = run_cli(*args, cwd=tmp_path, timeout=60)
    assert_usage_error(result, *words)
    assert result.stdout == "", "training started"
    assert list(tmp_path.iterdir()) == []


def test_a_resumed_run_counts_the_costs_it_resumes(tmp_path: Path) -> None:
    from sincos_rs import train as cli

    result = run_cli("--iterations", "3", "--save", "a.npz", "--no-plot", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    most = (cli.MAX_CONFIG_CHARS - cli.CHECKPOINT_OTHER_CHARS) // cli.CHECKPOINT_CHARS_PER_COST
    args = ["--resume", "a.npz", "--save", "a.npz", "--no-plot"]
    again = run_cli(*args, "--iterations", str(most - 2), cwd=tmp_path, timeout=60)
    assert_usage_error(again, "--save", str(most + 1))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("flag", ["--resume", "--save", "--json", "--plot"])
def test_a_fifo_is_refused_at_once(tmp_path: Path, flag: str) -> None:
    """--resume of a FIFO waited forever for a writer; an output over one
    replaced it with a file after training."""
    os.mkfifo(tmp_path / "pipe")
    result = run_cli(flag, "pipe", "--iterations", "3", cwd=tmp_path, timeout=60)
    assert_usage_error(result, flag, "regular file")
    assert result.stdout == ""
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]
