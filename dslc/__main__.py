"""`python -m dslc ...` and the `dslc` console script: the `dslc` command (`dslc.cli.main`), with its exit code.

The command line is imported inside `run`, so that Ctrl-C or SIGTERM while the imports load (numpy, onnx,
lark: the first half second) ends the command quietly, as they do later (`dslc.interrupts`), instead of
printing a traceback."""
import sys

from dslc import interrupts


def run() -> int:
    interrupts.install()
    try:
        from dslc.cli import main

        return main()
    except KeyboardInterrupt as e:
        message, code = interrupts.stopped(e)
        sys.stderr.write(message + "\n")
        return code
    except ImportError as e:
        stop = interrupts.caused_by_interrupt(e)
        if stop is None:
            raise
        message, code = interrupts.stopped(stop)
        sys.stderr.write(message + "\n")
        return code


if __name__ == "__main__":
    sys.exit(run())
