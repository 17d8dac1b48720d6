"""Checkpoint files: every invalid file is a ``ValueError`` naming the path,
checked before anything is allocated from what the file declares; saving
changes nothing when it fails, keeps the file's permissions and leaves no
temporary file behind."""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sincos_rs as sr
from test_api import assert_same, snapshot, trained_model

Arrays = dict[str, np.ndarray]


def saved(tmp_path: Path, dtype: str = "float32") -> tuple[Path, Arrays, dict[str, Any]]:
    """A checkpoint with a carried state, its arrays and its config."""
    path = tmp_path / "good.npz"
    trained_model(dtype, steps=2).save(path, metadata={"note": "x"})
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    config = json.loads(str(arrays["config"]))
    return path, arrays, config


def write_npz(path: Path, arrays: Arrays) -> Path:
    np.savez(path, **arrays)
    return path


def with_config(arrays: Arrays, config: dict[str, Any], **changes: Any) -> Arrays:
    return arrays | {"config": np.array(json.dumps(config | changes))}


def npy_bytes(header: dict[str, Any], data: bytes) -> bytes:
    """An .npy member with the given header and (possibly too short) data."""
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, header)
    return f.getvalue() + data


def zip_with(path: Path, arrays: Arrays, members: dict[str, bytes]) -> Path:
    """The checkpoint's arrays, with some members replaced by raw bytes."""
    with zipfile.ZipFile(path, "w") as z:
        for key, array in arrays.items():
            name = f"{key}.npy"
            if name in members:
                z.writestr(name, members.pop(name))
            else:
                f = io.BytesIO()
                np.lib.format.write_array(f, array, allow_pickle=False)
                z.writestr(name, f.getvalue())
        for name, data in members.items():
            z.writestr(name, data)
    return path


def bad_files(tmp_path: Path) -> list[tuple[str, Path]]:
    good, arrays, config = saved(tmp_path)
    raw = good.read_bytes()
    p = tmp_path
    cases: list[tuple[str, Callable[[], Path]]] = [
        ("npy", lambda: (np.save(p / "a.npy", np.zeros(3)), (p / "a.npy").rename(p / "a.npz"))[1]),
        ("pickle", lambda: _write(p / "pickle.npz", pickle.dumps({"config": 1}))),
        ("text", lambda: _write(p / "text.npz", b"hello\n")),
        ("zip of text", lambda: _zip(p / "zip_text.npz", {"readme.txt": b"hi"})),
        ("truncated 90%", lambda: _write(p / "t90.npz", raw[: len(raw) * 9 // 10])),
        ("truncated 10%", lambda: _write(p / "t10.npz", raw[: len(raw) // 10])),
        ("flipped bytes", lambda: _write(p / "flip.npz", _flip(raw, 200))),
        ("object config", lambda: write_npz(p / "obj.npz", arrays | {"config": np.array([{}])})),
        ("config not JSON", lambda: write_npz(p / "nj.npz", arrays | {"config": np.array("{")})),
        ("config a list", lambda: write_npz(p / "cl.npz", arrays | {"config": np.array("[]")})),
        ("config bytes", lambda: write_npz(p / "cb.npz", arrays | {"config": np.array(b"{}")})),
        ("config 2-d", lambda: write_npz(p / "c2.npz", arrays | {"config": np.array([["{}"]])})),
        ("no format", lambda: write_npz(p / "nf.npz", with_config(arrays, config, format=None))),
        ("other format", lambda: write_npz(p / "of.npz", with_config(arrays, config, format="x"))),
    ]
    for key, value in [
        ("hidden_size", "10"),
        ("hidden_size", 10.5),
        ("hidden_size", True),
        ("hidden_size", -1),
        ("hidden_size", 0),
        ("hidden_size", None),
        ("hidden_size", 10**12),  # no machine holds 8e24 parameters
        ("input_size", 2**64),
        ("output_size", 10**9),  # 1e10 parameters: more than this machine's memory
        ("dtype", "float16"),
        ("dtype", ["float32"]),
        ("eps_style", "keras"),
        ("lr", -1.0),
        ("lr", float("nan")),
        ("lr", "0.1"),
        ("eps", 0.0),
        ("beta2", 1.0),
        ("forget_bias", float("inf")),
        ("seed", -1),
        ("step", -1),
        ("step", 1.5),
        ("step", 2**70),
        ("metadata", [1, 2]),
    ]:
        name = f"config {key}={value!r}"
        file = p / f"cfg_{key}_{len(cases)}.npz"
        cases.append(
            (
                name,
                lambda f=file, k=key, v=value: write_npz(f, with_config(arrays, config, **{k: v})),
            )
        )
    w = "param/lstm.weight_hh"
    for name, change in [
        ("float64 param", {w: arrays[w].astype(np.float64)}),
        ("int param", {w: arrays[w].astype(np.int32)}),
        ("big-endian param", {w: arrays[w].astype(">f4")}),
        ("fortran param", {w: np.asfortranarray(arrays[w])}),
        ("param shape", {w: arrays[w][:-1]}),
        ("param 0-d", {w: np.float32(1.0)}),
        ("nan param", {w: _set(arrays[w], 3, np.nan)}),
        ("inf m", {"adam_m/lstm.bias": _set(arrays["adam_m/lstm.bias"], 0, np.inf)}),
        ("negative v", {"adam_v/lstm.bias": _set(arrays["adam_v/lstm.bias"], 0, -1.0)}),
        ("state h wrong H", {"state/h": arrays["state/h"][:, :3]}),
        ("state h and c differ", {"state/c": arrays["state/c"][:2]}),
        ("state of 0 rows", {"state/h": arrays["state/h"][:0], "state/c": arrays["state/c"][:0]}),
        ("nan state", {"state/c": _set(arrays["state/c"], 0, np.nan)}),
        ("extra array", {"param/lstm.peephole": np.zeros(3, np.float32)}),
    ]:
        file = p / f"arr_{len(cases)}.npz"
        cases.append((name, lambda f=file, c=change: write_npz(f, arrays | c)))
    for name, drop in [
        ("no config", "config"),
        ("missing param", "param/output.bias"),
        ("missing moment", "adam_v/input.weight"),
        ("state h without c", "state/c"),
    ]:
        file = p / f"drop_{len(cases)}.npz"
        cases.append((name, lambda f=file, d=drop: write_npz(f, _without(arrays, d))))
    huge = {"descr": "<f4", "fortran_order": False, "shape": (10**12,)}
    big = {"descr": "<f4", "fortran_order": False, "shape": (400_000_000,)}  # 1.6 GB claimed
    huge_config = {"descr": "<U1000000000", "fortran_order": False, "shape": ()}
    state_big = {**big, "shape": (40_000_000, 10)}
    raw_members: list[tuple[str, str, bytes]] = [
        ("header claims 4 TB", f"{w}.npy", npy_bytes(huge, b"\0" * 64)),
        ("header claims 1.6 GB", f"{w}.npy", npy_bytes(big, b"\0" * 64)),
        ("state claims 1.6 GB", "state/h.npy", npy_bytes(state_big, b"")),
        ("config claims 4 GB", "config.npy", npy_bytes(huge_config, b"{}")),
        ("member not .npy", "notes.txt", b"hello"),
    ]
    for name, member, data in raw_members:
        file = p / f"raw_{len(cases)}.npz"
        cases.append((name, lambda f=file, m=member, d=data: zip_with(f, arrays, {m: d})))
    return [(name, make()) for name, make in cases]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    for k in range(at, len(out), 97):
        out[k] ^= 0x5A
    return bytes(out)


def _set(array: np.ndarray, index: int, value: float) -> np.ndarray:
    out = array.copy()
    out.flat[index] = value
    return out


def _without(arrays: Arrays, key: str) -> Arrays:
    return {k: a for k, a in arrays.items() if k != key}


def test_every_invalid_checkpoint_is_a_value_error_naming_the_file(tmp_path: Path) -> None:
    failures = []
    for name, path in bad_files(tmp_path):
        tracemalloc.start()
        try:
            sr.LSTMRegressor.load(path)
        except ValueError as err:
            if str(path) not in str(err):
                failures.append(f"{name}: path not in the message: {err}")
        except BaseException as err:  # noqa: BLE001
            failures.append(f"{name}: {type(err).__name__}: {err}")
        else:
            failures.append(f"{name}: loaded")
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        if peak > 100e6:
            failures.append(f"{name}: allocated {peak / 1e6:.0f} MB before refusing the file")
    assert not failures, "\n".join(failures)


def test_compressed_checkpoint_loads(tmp_path: Path) -> None:
    """np.savez_compressed of a checkpoint's arrays is still a checkpoint."""
    path, arrays, _ = saved(tmp_path)
    np.savez_compressed(tmp_path / "z.npz", **arrays)
    a, b = sr.LSTMRegressor.load(path), sr.LSTMRegressor.load(tmp_path / "z.npz")
    assert_same(snapshot(a, False), snapshot(b, False), "compressed")


# --- saving ---------------------------------------------------------------------------------


def test_failed_save_changes_nothing(tmp_path: Path) -> None:
    model = trained_model(steps=2)
    model.metadata = {"run": 1}
    before = snapshot(model)
    (tmp_path / "folder.npz").mkdir()
    for path, metadata, error in [
        (tmp_path / "folder.npz", {"run": 2}, OSError),  # a folder is in the way
        (tmp_path / "no" / "such" / "dir.npz", {"run": 3}, OSError),
        (tmp_path / "m.npz", {"run": {1, 2}}, TypeError),  # not JSON
        (tmp_path / "m.npz", {"run": np.float32(1)}, TypeError),
    ]:
        with pytest.raises(error):
            model.save(path, metadata=metadata)
        assert model.metadata == {"run": 1}, "a failed save changed the metadata"
        assert_same(snapshot(model), before, "a failed save changed the model")
    assert sorted(os.listdir(tmp_path)) == ["folder.npz"], "a failed save left a file"


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444])
def test_resaving_keeps_the_permissions(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "m.npz"
    model = trained_model(steps=1)
    model.save(path)
    path.chmod(mode)
    model.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert os.listdir(tmp_path) == ["m.npz"]


def test_saving_through_a_symlink_replaces_its_target(tmp_path: Path) -> None:
    target = tmp_path / "real.npz"
    link = tmp_path / "link.npz"
    model = trained_model(steps=1)
    model.save(target)
    link.symlink_to(target)
    trained_model(steps=2).save(link)
    assert link.is_symlink(), "the symlink was replaced by a file"
    assert sr.LSTMRegressor.load(target).step == 2


def test_interrupted_save_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupt)
    with pytest.raises(KeyboardInterrupt):
        trained_model(steps=1).save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


# --- temporaries left by kill -9 (issue 21, item 9) -----------------------------------------

#: A process that saves ``model`` to argv[1] and, with the temporary file
#: written and held, says so and waits to be killed (or told to go on).
SAVER = """
import sys
import numpy as np
import sincos_rs as sr

path, model = sys.argv[1], sr.LSTMRegressor(hidden_size=int(sys.argv[2]), seed=0)
real_savez = np.savez

def savez_then_wait(file, *args, **kwargs):
    real_savez(file, *args, **kwargs)
    file.flush()
    print("writing", flush=True)
    sys.stdin.readline()  # killed here, or told to finish

np.savez = savez_then_wait
model.save(path)
print("saved", flush=True)
"""


def start_saver(path: Path, hidden: int = 50) -> subprocess.Popen[str]:
    """A process in the middle of ``save(path)``, its temporary written."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(path), str(hidden)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "writing"
    return proc


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="no kill -9 here")
def test_a_later_save_removes_the_temporaries_of_killed_writers(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    for _ in range(3):
        proc = start_saver(path)
        proc.kill()  # kill -9 in the middle of the write
        proc.wait()
    # Each killed writer's temporary was removed by the next writer's save:
    # only the last one is left (before, they piled up).
    left = temporaries(tmp_path)
    assert len(left) == 1 and not path.exists(), left
    other = tmp_path / "other.npz"
    trained_model(steps=1).save(other)
    assert temporaries(tmp_path) == left, "a save of another file removed them"
    trained_model(steps=1).save(path)
    assert temporaries(tmp_path) == [], "the save of the same path left them"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz", "other.npz"]


def test_a_save_never_removes_the_temporary_of_a_live_writer(tmp_path: Path) -> None:
    """Two processes save the same path at once: the one that comes second
    removes nothing of the first, which then finishes (its file wins)."""
    path = tmp_path / "m.npz"
    proc = start_saver(path, hidden=7)
    try:
        held = temporaries(tmp_path)
        assert len(held) == 1
        trained_model(steps=1).save(path)  # hidden size 10
        assert temporaries(tmp_path) == held
        assert sr.LSTMRegressor.load(path).hidden_size == 10
    finally:
        out, _ = proc.communicate("go on\n", timeout=60)
    assert proc.returncode == 0 and out.strip() == "saved", out
    assert temporaries(tmp_path) == []
    assert sr.LSTMRegressor.load(path).hidden_size == 7


def test_a_temporary_removed_before_its_writer_locked_it_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one moment a cleaner may take a live writer's temporary: between
    its creation and its lock. The writer then sees it gone and makes
    another, and the save succeeds."""
    from sincos_rs import _atomic

    if _atomic.fcntl is None:
        pytest.skip("no flock here")
    real_flock = _atomic.fcntl.flock
    removed = []

    def cleaner_first(fd: int, operation: int) -> None:
        if not removed:  # a cleaner in another process: took it, removed it
            name = next(p for p in tmp_path.iterdir() if p.name.endswith(".tmp"))
            name.unlink()
            removed.append(name.name)
        real_flock(fd, operation)

    monkeypatch.setattr(_atomic.fcntl, "flock", cleaner_first)
    trained_model(steps=1).save(tmp_path / "m.npz")
    monkeypatch.setattr(_atomic.fcntl, "flock", real_flock)
    assert removed and os.listdir(tmp_path) == ["m.npz"]
    assert sr.LSTMRegressor.load(tmp_path / "m.npz").step == 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_files_that_are_not_regular_are_refused_without_waiting(tmp_path: Path) -> None:
    """Loading a FIFO waited forever for a writer, and /dev/zero never ended;
    saving over a FIFO or a device replaced it with a file (as root, over
    /dev/null itself). Each is now a ValueError naming the path, at once."""
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    code = f"""
import sincos_rs as sr
for path in [{str(fifo)!r}, "/dev/zero", {str(tmp_path)!r}]:
    try:
        sr.LSTMRegressor.load(path)
    except ValueError as err:
        assert path in str(err) and "regular file" in str(err), err
    else:
        raise AssertionError(path)
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr[-2000:]
    model = trained_model(steps=1)
    with pytest.raises(ValueError, match="regular file"):
        model.save(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode), "the FIFO was replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.npz"]
