"""A model trained with two LSTMCells and LBFGS, as pytorch/examples'
time_sequence_prediction trains it (sine waves, two stacked cells and a
linear layer, one step at a time, then predicting the future by feeding each
prediction back in), once with torch.nn.LSTMCell and once with
sincos_rs.torch.LSTMCell from the same weights: every loss LBFGS sees, the
test losses and the final weights agree in float64.

Smaller than the example (8 training waves of 60 points, 12 hidden units, 3
LBFGS steps of up to 20 evaluations each) so that it runs in seconds; the
code is the example's, with the cell class a parameter."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

if os.environ.get("CI") and importlib.util.find_spec("torch") is None:
    raise RuntimeError("CI must run the torch tests: .ci/run installs torch")
torch = pytest.importorskip("torch")

from sincos_rs.torch import LSTMCell, paths  # noqa: E402

HIDDEN = 12
WAVES, LENGTH, PERIOD = 11, 61, 20  # 3 test waves, 8 training ones
STEPS, FUTURE = 3, 20
TOL = 1e-10


class Sequence(torch.nn.Module):
    """time_sequence_prediction's model, with the cell class given."""

    def __init__(self, cell) -> None:
        super().__init__()
        self.lstm1 = cell(1, HIDDEN)
        self.lstm2 = cell(HIDDEN, HIDDEN)
        self.linear = torch.nn.Linear(HIDDEN, 1)

    def forward(self, input, future: int = 0):  # noqa: A002 - the example's names
        outputs = []
        h_t = torch.zeros(input.size(0), HIDDEN, dtype=torch.double)
        c_t = torch.zeros(input.size(0), HIDDEN, dtype=torch.double)
        h_t2 = torch.zeros(input.size(0), HIDDEN, dtype=torch.double)
        c_t2 = torch.zeros(input.size(0), HIDDEN, dtype=torch.double)
        for input_t in input.split(1, dim=1):
            h_t, c_t = self.lstm1(input_t, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs += [output]
        for _ in range(future):  # predicting the future
            h_t, c_t = self.lstm1(output, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs += [output]
        return torch.cat(outputs, dim=1)


def sine_waves() -> np.ndarray:
    """generate_sine_wave.py: waves shifted by random offsets."""
    rng = np.random.RandomState(2)
    x = np.empty((WAVES, LENGTH), "int64")
    x[:] = np.array(range(LENGTH)) + rng.randint(-4 * PERIOD, 4 * PERIOD, WAVES).reshape(WAVES, 1)
    return np.sin(x / 1.0 / PERIOD).astype("float64")


def train(cell, state: dict) -> dict:
    """train.py's loop: every closure loss, the test losses, the weights."""
    data = sine_waves()
    inputs, target = torch.from_numpy(data[3:, :-1]), torch.from_numpy(data[3:, 1:])
    test_input, test_target = torch.from_numpy(data[:3, :-1]), torch.from_numpy(data[:3, 1:])
    seq = Sequence(cell).double()
    seq.load_state_dict(state, strict=True)
    criterion = torch.nn.MSELoss()
    optimizer = torch.optim.LBFGS(seq.parameters(), lr=0.8)
    losses, test_losses = [], []
    for _ in range(STEPS):

        def closure():
            optimizer.zero_grad()
            out = seq(inputs)
            loss = criterion(out, target)
            losses.append(loss.item())
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            pred = seq(test_input, future=FUTURE)
            test_losses.append(criterion(pred[:, :-FUTURE], test_target).item())
            prediction = pred.clone()
    return {"losses": losses, "test losses": test_losses, "prediction": prediction,
            "state": seq.state_dict()}  # fmt: skip


@pytest.fixture
def one_torch_thread():
    """torch's many small ops on one thread: on a shared 2-core machine its
    OpenMP workers otherwise make the reference run take many times longer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("path", ["function", "operator"])
def test_time_sequence_prediction_trains_as_with_torch(path, monkeypatch, one_torch_thread) -> None:
    if path == "operator":  # through the custom operator, as under torch.compile
        monkeypatch.setattr(paths, "through_operator", True)
    torch.manual_seed(0)
    state = Sequence(torch.nn.LSTMCell).double().state_dict()
    ours, theirs = train(LSTMCell, state), train(torch.nn.LSTMCell, state)
    assert len(ours["losses"]) == len(theirs["losses"]) > STEPS, "LBFGS evaluations differ"
    assert theirs["losses"][-1] < 0.5 * theirs["losses"][0], "the reference did not learn"
    for key in ("losses", "test losses"):
        mine, reference = np.array(ours[key]), np.array(theirs[key])
        diff = np.abs(mine - reference) / np.abs(reference)
        assert diff.max() <= TOL, f"{key}: relative difference {diff.max():.3g} at {diff.argmax()}"
    scale = theirs["prediction"].abs().max().item()
    diff = (ours["prediction"] - theirs["prediction"]).abs().max().item()
    assert diff <= TOL * scale, f"future prediction: {diff:.3g}"
    for name, value in theirs["state"].items():
        diff = (ours["state"][name] - value).abs().max().item()
        assert diff <= TOL * value.abs().max().item(), f"{name}: {diff:.3g}"
