"""A failing command whose stderr reader has left (`dslc train ... 2>&1 | head -1`, a closed pipe) still
exits with the failure's documented code: printing the message or the usage raised BrokenPipeError out of
`main`, and Python exited with 1 (the code of errors in the model) whatever had failed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL = """model reg {
    input  x: f32[B, 4]
    target y: f32[B, 1]
    output pred = x |> dense(1)
    loss      mse(pred, y)
    optimizer sgd(lr = 0.1)
}
"""


def exit_code_with_stderr_closed(*args, cwd: Path) -> tuple[int, bytes]:
    read, write = os.pipe()
    os.close(read)  # every write to stderr fails with EPIPE
    try:
        done = subprocess.run([sys.executable, "-m", "dslc", *map(str, args)], cwd=cwd, stderr=write,
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT), "DSLC_NO_CACHE": "1"},
                              timeout=300)
    finally:
        os.close(write)
    return done.returncode, done.stdout


@pytest.mark.parametrize("case, code", [("data", 3), ("usage", 2), ("model", 1)])
def test_a_failure_keeps_its_exit_code_when_stderr_is_closed(tmp_path, case, code):
    (tmp_path / "reg.dl").write_text(MODEL if case != "model" else MODEL.replace("dense(1)", "dense(0)"))
    np.savez(tmp_path / "x_only.npz", x=np.zeros((4, 4), np.float32))
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 4), np.float32), y=np.zeros((4, 1), np.float32))
    data = "x_only.npz" if case == "data" else "d.npz"
    lr = ["--lr", "1e40"] if case == "usage" else []  # refused once compiled: a UsageError
    got, out = exit_code_with_stderr_closed("train", "reg.dl", "--data", data, "--epochs", 1, "--batch-size", 2,
                                            "-o", "run", *lr, "--log-format", "jsonl", cwd=tmp_path)
    assert got == code
    assert f'"event": "error", "exit": {code}'.encode() in out  # the script reading stdout is still told
