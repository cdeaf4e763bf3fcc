"""What the `dslc` command line's arguments turn into, before a verb runs: the program (compiled, or read
from the compile cache, with its `-D` values, `--dim`s, `--freeze` patterns, split graphs and `--tune`
setting; compiled by rank 0 alone under `mpiexec --tune`) and the data arguments (CSV columns). Nothing
here prints: `dslc.cli` does."""
from __future__ import annotations

import os

from dslc.cli_failures import UsageError
from dslc.diagnostics import DataError, UnknownDimension


def data_argument(path: str | None, args):
    """A data argument, with the CSV columns of `--inputs`/`--target` when given."""
    inputs, target = getattr(args, "inputs", None), getattr(args, "target", None)
    if path is None or not (inputs or target):
        return path
    if not path.lower().endswith(".csv"):
        raise UsageError(f"`--inputs` and `--target` choose the columns of CSV data; `{path}` is not a `.csv` file")
    from dslc.runtime.datafiles import CsvColumns

    split = lambda text: tuple(c.strip() for c in text.split(",")) if text else ()
    return CsvColumns(path, split(inputs), split(target))


# verbs that use only a program's graphs and manifest (`dslc/compile_cache.py`); `check` always compiles
CACHED_VERBS = ("build", "train", "predict", "evaluate", "export")


def compile_program(args):
    if not os.path.exists(args.model):
        raise DataError(f"cannot read `{args.model}`: No such file or directory")
    defines: dict[str, str] = {}
    for name, value in args.defines:
        if name in defines:
            raise UsageError(f"`-D {name}` is given twice (`{name}={defines[name]}` and `{name}={value}`)")
        defines[name] = value
    extra = {"print_ir_after": args.print_ir_after} if getattr(args, "print_ir_after", None) else {}
    if args.verb == "build" and args.dims:
        extra["dims"] = dict(args.dims)
    if getattr(args, "freeze", None):
        extra["freeze"] = tuple(args.freeze)
    if getattr(args, "split", False) or scaled_out(args):
        extra["split"] = True
    if getattr(args, "tune", False):
        extra["tune"] = tune_setting(args)
    if args.verb in CACHED_VERBS and getattr(args, "emit", "onnx") == "onnx":  # without onnx if compiled before
        from dslc.compile_cache import compile_cached as compile_file
    else:
        from dslc.compiler import compile_file
    try:
        return compile_file(args.model, defines=defines, dtype=args.dtype, seed=getattr(args, "seed", 0),
                            import_path=args.import_path, **extra)
    except UnknownDimension as e:
        raise UsageError(f"`--dim {e.unknown[0]}=...`: {e}") from None


def compiled(args):
    """The program: compiled here, or for `dslc train --tune` under `mpiexec`, compiled and tuned by rank 0
    alone and sent to the other ranks (`distributed.program_from_rank_zero`)."""
    if args.verb == "train" and args.tune:
        from dslc.runtime import distributed

        comm = distributed.world()
        if comm is not None:
            return distributed.program_from_rank_zero(comm, lambda: compile_program(args))
    return compile_program(args)


def tune_setting(args):
    """What `--tune` measures for: the run's threads and the batch of its training step."""
    from dslc.runtime.devices import default_threads
    from dslc.runtime.tune import DEFAULT_BATCH, TuneSetting

    batch, threads = DEFAULT_BATCH, args.threads or default_threads()
    if args.verb == "train":
        from dslc.runtime.distributed import tuned_share

        batch, threads = tuned_share(args.batch_size, args.accumulate, args.workers, args.threads)
    elif args.verb == "bench":
        batch = args.batch_size
    return TuneSetting(threads=threads, batch=batch)


def scaled_out(args) -> bool:
    """Whether `dslc train` runs through the split graphs: accumulating, or data-parallel."""
    if args.verb != "train":
        return False
    from dslc.runtime.distributed import launched_by_mpi

    return args.accumulate > 1 or bool(args.workers) or launched_by_mpi()
