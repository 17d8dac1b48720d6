"""benches/instances.py (the default SIMD instance against a lower one): its
cells are the grid's, a cell above the limit gets more rounds and its median
is of all of them, the report marks what is above, and the worker process
measures a real call. No timing is asserted."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benches"))

import grid  # noqa: E402
import instances  # noqa: E402
import timing  # noqa: E402


def test_the_cells_are_the_grids() -> None:
    args = argparse.Namespace(
        batch=",".join(map(str, grid.BATCHES)), hidden=",".join(map(str, grid.HIDDENS))
    )
    cells = instances.cells(args)
    expected = grid.grid_cells(grid.parse_args([]))
    assert cells == [(c.mode, c.dtype, c.batch, c.steps, c.hidden) for c in expected]


def _fake_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, slow_cell: tuple) -> dict:
    """Runs instances.main on a small grid with `measure` replaced: the
    default instance 10 % slower than avx2 at `slow_cell` only."""
    monkeypatch.setattr(timing, "cpu_isas", lambda: ["avx512", "avx2", "baseline"])
    calls: list[tuple[str, tuple]] = []

    def measure(isa: str, cell: tuple, budget: float) -> float:
        calls.append((isa, cell))
        return 1.1e-3 if (isa == "avx512" and cell == slow_cell) else 1.0e-3

    monkeypatch.setattr(instances, "measure", measure)
    argv = ["--batch", "1,8", "--hidden", "16", "--rounds", "3", "--recheck", "4"]
    assert instances.main([*argv, "--out", str(tmp_path)]) == 0
    (json_path,) = tmp_path.glob("instances-*.json")
    return {"data": json.loads(json_path.read_text()), "calls": calls, "dir": tmp_path}


def test_a_cell_above_the_limit_is_rechecked_and_marked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    slow = ("inference", "float32", 8, 50, 16)
    run = _fake_run(monkeypatch, tmp_path, slow)
    data, calls = run["data"], run["calls"]
    assert data["default"] == "avx512" and data["lowers"] == ["avx2"]  # baseline only if asked
    rounds = {tuple(r["cell"]): len(r["samples"]["avx512"]) for r in data["cells"]}
    assert rounds.pop(slow) == 3 + 4
    assert set(rounds.values()) == {3}
    # Every round measures both instances, the order flipping round by round.
    firsts = [calls[i][0] for i in range(0, 2 * 7, 2) if calls[i][1] == calls[0][1]]
    assert firsts[:3] == ["avx512", "avx2", "avx512"]
    (md,) = run["dir"].glob("instances-*.md")
    text = md.read_text()
    assert "Cells above 1.05: 1 of 8. Worst: inference float32 B8 T50 H16, 1.10." in text
    assert "| inference float32 B8 T50 H16 | 1.1 ms | 1 ms | 1.10 ✗ |" in text
    assert text.count("✗") == 2  # the target line and the one cell


def test_the_worker_measures_one_call_of_each_mode() -> None:
    isa = timing.cpu_isas()[0]
    for mode in ("training", "inference"):
        seconds = instances.measure(isa, (mode, "float32", 2, 5, 8), 0.01)
        assert 0 < seconds < 1
