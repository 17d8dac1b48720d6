"""DistributedDataParallel over gloo: examples/ddp_train.py, launched by
torchrun as 2 processes on this machine, each training on half of every batch,
ends with the same parameters (float64, within 1e-10) as one process trained on
the whole batch."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

if os.environ.get("CI") and importlib.util.find_spec("torch") is None:
    raise RuntimeError("CI must run the torch tests: .ci/run installs torch")
torch = pytest.importorskip("torch")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ddp_train.py"
ARGS = ["--steps", "5", "--batch-size", "8", "--time-steps", "6", "--hidden-size", "5",
        "--lr", "0.05", "--dtype", "float64"]  # fmt: skip


def run(cmd: list[str]) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, f"{cmd}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_two_processes_match_one_on_the_whole_batch(tmp_path: Path) -> None:
    ddp, single = tmp_path / "ddp.pt", tmp_path / "single.pt"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    log = run([*launcher, str(EXAMPLE), *ARGS, "--save", str(ddp)])
    assert "step 5: cost" in log, log
    run([sys.executable, str(EXAMPLE), *ARGS, "--single", "--save", str(single)])

    expected = torch.load(single)
    for path in (ddp, Path(f"{ddp}.rank1")):
        got = torch.load(path)
        assert list(got) == list(expected)
        for name, value in expected.items():
            assert got[name].dtype == torch.float64
            diff = (got[name] - value).abs().max().item()
            assert diff <= 1e-10, f"{path.name} {name}: max |diff| {diff:.3g} from one process"
    # The run trained: the parameters moved from their initial values.
    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        import ddp_train
    finally:
        sys.path.pop(0)
    torch.manual_seed(0)
    start = ddp_train.SeedNet(5).to(torch.float64).state_dict()
    moved = max((expected[k] - start[k]).abs().max().item() for k in start)
    assert moved > 1e-3, "the parameters did not change: nothing was trained"
