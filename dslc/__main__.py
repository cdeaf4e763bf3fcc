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


if __name__ == "__main__":
    sys.exit(run())
