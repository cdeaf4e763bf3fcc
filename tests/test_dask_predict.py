"""`dslc predict --dask`: the inference graph over memory-mapped `.npy` inputs and over many `.npz`
files on a Dask LocalCluster of 2 workers (threads, `processes=False`: 0.15 s to start), outputs in
input order and equal to `Program.predict`."""
from __future__ import annotations

import numpy as np
import pytest

from dslc.cli import main
from dslc.diagnostics import DataError
from helpers import compile_text, hang_guard

pytest.importorskip("dask.distributed")
from dslc.runtime import dask_predict  # noqa: E402

MODEL = """
model two {
    input  x: f32[B, 5]
    input  z: f32[B, 3]
    output y = concat(x |> dense(4) |> tanh, z) |> dense(2)
    output s = sum(x, 1)
}
"""


@pytest.fixture(scope="module")
def program(workdir):
    return compile_text(workdir, MODEL, name="two.dl")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(4)
    return {"x": rng.standard_normal((1003, 5)).astype(np.float32), "z": rng.standard_normal((1003, 3)).astype(np.float32)}


def test_memory_mapped_inputs_in_order_with_progress(program, data, tmp_path):
    for name, array in data.items():
        np.save(tmp_path / f"{name}.npy", array)
    expected = program.predict(data)
    seen = []
    paths = dask_predict.predict(program, tmp_path, tmp_path / "out.npz", chunk_rows=97, workers=2, batch_size=40,
                                 progress=lambda done, total: seen.append((done, total)))
    assert paths == [tmp_path / "out.npz"]
    with np.load(tmp_path / "out.npz") as got:
        assert sorted(got.files) == ["s", "y"]
        for name in ("y", "s"):
            np.testing.assert_array_equal(got[name], expected[name])
    assert len(seen) == 11 and seen[-1] == (1003, 1003) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert not list(tmp_path.glob(".*partial*"))


def test_many_npz_files_to_a_directory_and_bad_data(program, data, tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    bounds = [0, 300, 301, 700, 1003]
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        np.savez(parts / f"part-{i:03d}.npz", x=data["x"][a:b], z=data["z"][a:b])
    expected = program.predict(data)
    dask_predict.predict(program, parts, tmp_path / "out", workers=2)
    for name in ("y", "s"):  # batches cut at other rows: ORT's row sums differ in the last bit (4.8e-7 seen)
        np.testing.assert_allclose(np.load(tmp_path / "out" / f"{name}.npy"), expected[name], rtol=1e-6, atol=1e-6)
    np.savez(parts / "part-999.npz", x=data["x"][:5], z=data["z"][:5, :2])  # a wrong width
    with pytest.raises(DataError, match="part-999.npz"):
        dask_predict.predict(program, parts, tmp_path / "bad", workers=2)


def test_command_line(program, data, tmp_path, capsys):
    np.save(tmp_path / "x.npy", data["x"])
    np.save(tmp_path / "z.npy", data["z"][:10])
    code = main(["predict", program.source_path, "--input", str(tmp_path), "-o", str(tmp_path / "y.npz"), "--dask"])
    assert code == 3
    assert "different numbers of rows (10, 1003)" in capsys.readouterr().err
    np.save(tmp_path / "z.npy", data["z"])
    code = main(["predict", program.source_path, "--input", str(tmp_path), "-o", str(tmp_path / "y.npz"), "--dask"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "predicted 1,003/1,003 rows (100%" in err
    with np.load(tmp_path / "y.npz") as got:
        np.testing.assert_array_equal(got["y"], program.predict(data)["y"])


def test_a_scheduler_shut_down_mid_run_is_a_clear_error(program, data, tmp_path, capfd):
    # it raised distributed's CommClosedError ("in <TCP (closed) ConnectionPool.gather ...>: Stream is closed")
    from dask.distributed import LocalCluster

    for name, array in data.items():
        np.save(tmp_path / f"{name}.npy", array)
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)

    def stop_the_scheduler(done, total):
        if not cluster.status.name == "closed":
            cluster.close()

    try:
        with pytest.raises(DataError) as e:
            dask_predict.predict(program, tmp_path, tmp_path / "out.npz", address=cluster.scheduler_address,
                                 chunk_rows=50, progress=stop_the_scheduler)
    finally:
        cluster.close()
    stopped = f"the Dask scheduler at `{cluster.scheduler_address}` stopped answering after "
    assert e.value.message.startswith(stopped) and " of 1,003 rows (" in e.value.message
    assert int(e.value.message[len(stopped):].split(" ")[0]) < 1003
    assert e.value.message.endswith("); nothing was written"), e.value.message
    assert not (tmp_path / "out.npz").exists() and not list(tmp_path.glob(".out.npz*"))
    assert "Traceback" not in capfd.readouterr().err  # the client's reconnection errors, logged by Dask
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), pytest.raises(DataError) as e:
        dask_predict.predict(program, tmp_path, tmp_path / "out.npz", address=cluster.scheduler_address)
    assert e.value.message.startswith(f"cannot reach the Dask scheduler at `{cluster.scheduler_address}` (")


def test_one_npz_file_and_a_folder_without_an_inputs_npy(program, data, tmp_path):
    # an .npz, what `dslc predict` reads without --dask, was refused as "cannot read ... as data for --dask"
    np.savez(tmp_path / "all.npz", **data)
    dask_predict.predict(program, tmp_path / "all.npz", tmp_path / "out.npz", workers=1)
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")["y"], program.predict(data)["y"], rtol=1e-6, atol=1e-6)
    folder = tmp_path / "columns"
    folder.mkdir()
    np.save(folder / "x.npy", data["x"])
    np.save(folder / "zz.npy", data["z"])
    with pytest.raises(DataError) as e:  # it said "cannot read ... as data for --dask"
        dask_predict.predict(program, folder, tmp_path / "out2.npz", workers=1)
    assert e.value.message == f"`{folder}` has no `z.npy` (one `<input>.npy` per input of the model: x, z)"
    assert e.value.hint == "it holds x.npy, zz.npy"


def test_progress_says_each_count_of_rows_once():
    # an .npz of no rows finishing last printed "predicted 25/25 rows (100%...)" twice
    lines = []
    progress = dask_predict.Progress(type("Stream", (), {"write": lambda self, text: lines.append(text),
                                                          "flush": lambda self: None})(), every=0.0)
    for done in (10, 25, 25):
        progress(done, 25)
    assert [line.split(" (")[0] for line in lines] == ["predicted 10/25 rows", "predicted 25/25 rows"]


@pytest.mark.parametrize("module, owner, method", [
    # the interrupted close left the cluster open, and Dask's exit hook closed it again with a 10 s timeout
    # after `error: terminated (SIGTERM)` was printed: the command seemed to hang (11.5 s to exit)
    ("distributed.worker", "Worker", "close"),
    # the cluster's start cut short: Dask's exit hook failed to close it, with a traceback
    ("distributed.deploy.spec", "SpecCluster", "_correct_state"),
])
def test_a_signal_while_the_local_cluster_starts_or_closes_ends_the_command_at_once(program, data, tmp_path,
                                                                                      module, owner, method):
    import subprocess
    import sys
    import time

    for name, array in data.items():
        np.save(tmp_path / f"{name}.npy", array)
    script = f"""
import os, signal, sys, time
import {module}
original = {module}.{owner}.{method}
def signalled(*args, **kwargs):
    if not os.path.exists({str(tmp_path / "signalled")!r}):
        open({str(tmp_path / "signalled")!r}, "w").close()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
    return original(*args, **kwargs)
{module}.{owner}.{method} = signalled
from dslc.__main__ import run
sys.argv = ["dslc"] + sys.argv[1:]
sys.exit(run())
"""
    done = subprocess.run([sys.executable, "-c", script, "predict", program.source_path, "--input", str(tmp_path),
                           "-o", str(tmp_path / "y.npz"), "--dask"], capture_output=True, text=True,
                          timeout=hang_guard(60))
    ended = time.time()
    assert done.returncode == 143, done.stderr
    assert done.stderr.endswith("error: terminated (SIGTERM)\n") and "Traceback" not in done.stderr, done.stderr
    assert ended - (tmp_path / "signalled").stat().st_mtime < 6.0  # 10 s more with the exit hook's close


@pytest.mark.parametrize("left", [0, 1])
def test_workers_lost_mid_run(program, data, tmp_path, left):
    """Every worker gone while the scheduler stays (it said the scheduler "stopped answering", with Dask's
    "FutureCancelledError: ... cancelled for reason: already forgotten": the model scattered to the workers
    left with them): the message says what happened and to start workers; one of two lost, the other
    finishes the work."""
    from dask.distributed import LocalCluster

    for name, array in data.items():
        np.save(tmp_path / f"{name}.npy", array)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)

    def lose_workers(done, total):
        if len(cluster.workers) > left:
            cluster.scale(left)

    try:
        if left:
            paths = dask_predict.predict(program, tmp_path, tmp_path / "out.npz", address=cluster.scheduler_address,
                                         chunk_rows=50, progress=lose_workers)
            with np.load(paths[0]) as got:
                np.testing.assert_allclose(got["y"], program.predict(data)["y"], rtol=1e-6, atol=1e-6)
            return
        with pytest.raises(DataError) as e:
            dask_predict.predict(program, tmp_path, tmp_path / "out.npz", address=cluster.scheduler_address,
                                 chunk_rows=50, progress=lose_workers)
    finally:
        cluster.close()
    address = cluster.scheduler_address
    lost = f"the Dask scheduler at `{address}` lost every worker after "
    assert e.value.message.startswith(lost), e.value.message
    assert e.value.message.endswith(" of 1,003 rows: the workers left (stopped, killed or disconnected) and took the "
                                    "model dslc had sent them; nothing was written")
    assert e.value.hint == (f"start workers for it (`dask worker {address}`), then run the command again (a worker "
                            "that leaves while others stay is replaced by them)")
    assert not (tmp_path / "out.npz").exists() and not list(tmp_path.glob(".out.npz*"))


def test_a_scheduler_without_workers_is_a_clear_error(program, data, tmp_path):
    # it said the scheduler "stopped answering after 0 of 1,003 rows (TimeoutError: No valid workers found)"
    import dask
    from dask.distributed import LocalCluster

    np.save(tmp_path / "x.npy", data["x"])
    np.save(tmp_path / "z.npy", data["z"])
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster, \
            dask.config.set({"distributed.comm.timeouts.connect": "1s"}), pytest.raises(DataError) as e:
        dask_predict.predict(program, tmp_path, tmp_path / "out.npz", address=cluster.scheduler_address)
    assert e.value.message == f"the Dask scheduler at `{cluster.scheduler_address}` has no workers: none joined it " \
                              "within 1s; nothing was written"
    assert e.value.hint.startswith(f"start workers for it (`dask worker {cluster.scheduler_address}`)")
    assert not (tmp_path / "out.npz").exists()


def test_an_npz_in_a_missing_folder_is_refused_before_the_work(program, data, tmp_path):
    # `dslc predict` refuses it; with --dask the folder was created
    np.save(tmp_path / "x.npy", data["x"])
    np.save(tmp_path / "z.npy", data["z"])
    with pytest.raises(DataError) as e:
        dask_predict.predict(program, tmp_path, tmp_path / "missing" / "y.npz",
                             progress=lambda done, total: pytest.fail("it predicted"))
    assert e.value.message == f"cannot write `{tmp_path / 'missing' / 'y.npz'}`: No such file or directory " \
                              f"(`{tmp_path / 'missing'}`)"
    assert not (tmp_path / "missing").exists()


def test_a_signal_held_back_by_deferred_is_delivered_after_the_block():
    # in a process of its own: a SIGINT sent to the test process once crashed it (exit 139) in the full suite
    import subprocess
    import sys

    script = """
import os, signal, time
from dslc import interrupts
handler, ran = signal.getsignal(signal.SIGINT), []
try:
    with interrupts.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # a handler would have run by now
        ran.append("the rest of the block")
except KeyboardInterrupt:
    print(ran, signal.getsignal(signal.SIGINT) is handler)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=hang_guard(60))
    assert done.stdout == "['the rest of the block'] True\n", done.stderr
