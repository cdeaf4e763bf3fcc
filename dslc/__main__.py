"""`python -m dslc ...` and the `dslc` console script: the `dslc` command (`dslc.cli.main`), with its exit code.

The command line is imported inside `run`, so that Ctrl-C while the imports load (numpy, onnx, lark: the
first half second) exits 130 quietly, as Ctrl-C later does, instead of printing a traceback."""
import sys

EXIT_INTERRUPTED = 130  # as `dslc.cli.EXIT_INTERRUPTED`, which is not imported yet when it is needed


def run() -> int:
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
