"""The device an ONNX Runtime session runs on (`cpu`, `cuda`, `cuda:N`), its threads, and making the session
there (`make_session`; `SessionAhead` makes one on a thread while the caller goes on). `dslc.runtime.session`
runs the compiled graphs in them."""
from __future__ import annotations

import os
import threading
import warnings

import onnxruntime as ort

from dslc.diagnostics import DataError

CUDA_HINT = (
    "install `dslc[gpu]` (onnxruntime-gpu) on a machine with an NVIDIA GPU and CUDA 12, "
    "or use `--device cpu`"
)


def parse_device(device: str) -> tuple[str, int]:
    """`cpu`, `cuda` or `cuda:N` -> (ORT device type, device id)."""
    if not isinstance(device, str):
        raise DataError(f"the device must be a string, got {device!r} (`{type(device).__name__}`)",
                        hint="use `cpu`, `cuda` or `cuda:N`")
    kind, _, index = device.partition(":")
    if kind == "cpu" and not index:
        return "cpu", 0
    if kind == "cuda" and (not index or index.isdigit()):
        return "cuda", int(index or 0)
    raise DataError(f"unknown device `{device}`", hint="use `cpu`, `cuda` or `cuda:N`")


def default_threads() -> int:
    """All cores this process may run on (FACTS: 2 spinning threads beat 1 by 1.2-1.4x)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_cuda_provider() -> None:
    """`DataError` unless this onnxruntime has the CUDA provider (the first of `make_session`'s checks;
    `--workers` makes it before starting processes that would each fail on it)."""
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise DataError(
            "CUDA was requested but this onnxruntime has no CUDA support "
            f"(available providers: {', '.join(available)})",
            hint=CUDA_HINT,
        )


def make_session(model_bytes: bytes, device: str = "cpu", threads: int | None = None,
                 memory_pattern: bool = True, keep_spinning: bool = True) -> ort.InferenceSession:
    """An inference session on `device`, or `DataError` if that device cannot be used.

    `keep_spinning=False`: the pool's threads stop spinning when a run returns (they still spin inside
    it), for a session called in bursts beside another, such as the training loop's validation: after
    validation its spinning thread took a core from the training steps for ~40 ms (on 2 threads, an epoch
    of cnn_digits' training 62-79 -> 43-44 ms, text_rnn's 99-174 -> 97-115 ms; validation itself as fast).

    CUDA is checked three ways: the provider must be listed by `ort.get_available_providers()`,
    session creation must succeed, and the created session must report `CUDAExecutionProvider`
    (onnxruntime-gpu without a usable GPU otherwise falls back to the CPU silently). We do not set
    `session.disable_cpu_ep_fallback`: ORT refuses it together with an explicit CPU provider, and the
    CUDA provider deliberately leaves small shape computations to the CPU, which it would reject.
    """
    from dslc.runtime.data import check_count

    kind, device_id = parse_device(device)
    if threads is not None:
        threads = check_count(threads, "threads", "the number of threads")
    options = ort.SessionOptions()
    # 4 (fatal only): inputs-with-defaults log one warning per parameter, and a node failing on the
    # user's data logs an error line we report ourselves as a `DataError` (see `_run`)
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Training steps turn it off: with two alternating buffer sets the planned pattern doubled peak
    # memory (transformer step +123 MB vs +63 MB) for ~2% of step time.
    options.enable_mem_pattern = memory_pattern
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    if not keep_spinning:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    if kind == "cpu":
        return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])

    check_cuda_provider()
    providers = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ORT warns before falling back; we raise instead
            session = ort.InferenceSession(model_bytes, options, providers=providers)
    except Exception as e:  # noqa: BLE001 - any failure to start CUDA is the same user-facing problem
        raise DataError(f"CUDA was requested but onnxruntime could not start it: {e}", hint=CUDA_HINT) from None
    if "CUDAExecutionProvider" not in session.get_providers():
        raise DataError(
            "CUDA was requested but onnxruntime fell back to the CPU (the CUDA libraries or the GPU "
            "could not be loaded)",
            hint=CUDA_HINT,
        )
    return session


class SessionAhead:
    """`make_session(...)` on a thread of its own, started now; `result()` waits for it and returns the
    session or raises its error. ONNX Runtime builds a session without holding the GIL, so the training
    loop makes its sessions while it reads the data: digits' training graph takes ~15 ms (its optimizer
    ~8 ms of that), the process's first session ~3 ms more, against ~4 ms of data, checks and initial values."""

    def __init__(self, model_bytes: bytes, device: str = "cpu", threads: int | None = None,
                 memory_pattern: bool = True, keep_spinning: bool = True):
        self._session: ort.InferenceSession | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._make,
                                        args=(model_bytes, device, threads, memory_pattern, keep_spinning),
                                        name="dslc-session", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Until the session is made or has failed (a run that fails first waits: an interpreter exiting
        under a thread inside ONNX Runtime may crash)."""
        self._thread.join()

    def _make(self, *args) -> None:
        try:
            self._session = make_session(*args)
        except BaseException as e:  # noqa: BLE001 - raised by `result`, in the caller's thread
            self._error = e

    def result(self) -> ort.InferenceSession:
        self.wait()
        if self._error is not None:
            raise self._error
        return self._session
