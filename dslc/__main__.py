"""`python -m dslc ...` and the `dslc` console script: the `dslc` command (`dslc.cli.main`), with its exit code.

The command line is imported inside `run`, so that Ctrl-C while the imports load (numpy, onnx, lark: the
first half second) exits 130 quietly, as Ctrl-C later does, instead of printing a traceback."""
import os
import signal
import sys

EXIT_INTERRUPTED = 130  # as `dslc.cli.EXIT_INTERRUPTED`, which is not imported yet when it is needed


def run() -> int:
    signal.signal(signal.SIGINT, _interrupt)
    try:
        from dslc.cli import main

        return main()
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return EXIT_INTERRUPTED
    except ImportError as e:
        if not caused_by_interrupt(e):
            raise
        sys.stderr.write("error: interrupted\n")
        return EXIT_INTERRUPTED


def _interrupt(signum, frame) -> None:
    """Ctrl-C: a KeyboardInterrupt, as Python's own handler raises, unless it lands while a module is being
    imported. A KeyboardInterrupt inside an extension's initialisation (numpy's, onnxruntime's) can leave
    the interpreter broken: numpy's ImportError then no longer names the interrupt, and the process may
    crash on its way out (seen under load: SIGSEGV, SIGABRT). An import writes nothing, so the process
    ends there, at once."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            try:
                sys.stdout.flush()
                sys.stderr.write("error: interrupted\n")
                sys.stderr.flush()
            finally:
                os._exit(EXIT_INTERRUPTED)
        frame = frame.f_back
    raise KeyboardInterrupt


def caused_by_interrupt(error: BaseException) -> bool:
    """Whether `error` comes from a Ctrl-C: numpy turns a KeyboardInterrupt during the import of its C
    extension into an ImportError raised from it."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


if __name__ == "__main__":
    sys.exit(run())
