"""The `dslc` command: the only code that prints to the terminal or chooses the exit code.

Exit codes: 0 ok; 1 the model has errors (diagnostics on stderr); 2 bad command line; 3 bad data,
missing files or an unusable device (`error:`/`hint:` on stderr); 101 a bug in dslc itself
(`DSLC_BACKTRACE=1` shows the traceback); 130 interrupted; 141 the reader of the output left (a closed pipe, as
`dslc summary M.dl | head -1`: quiet, as for a command killed by SIGPIPE).
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback

from dslc.diagnostics import DataError, DslcError, UnknownDimension, printable, render_all
from dslc.spelling import command_line

EXIT_OK, EXIT_MODEL, EXIT_USAGE, EXIT_DATA, EXIT_INTERRUPTED, EXIT_BUG = 0, 1, 2, 3, 130, 101
EXIT_PIPE = 141  # 128 + SIGPIPE


class UsageError(Exception):
    """A command line that only turns out wrong once the model is compiled (exit 2, like argparse's)."""


def _define(text: str) -> tuple[str, str]:
    name, eq, value = text.partition("=")
    if not eq or not name.strip():
        raise argparse.ArgumentTypeError(f"expected `name=value`, got `{text}`")
    return name.strip(), value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got `{text}`") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got `{text}`")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got `{text}`")
    return value


def _device(text: str) -> str:
    kind, colon, index = text.partition(":")
    if text == "cpu" or (kind == "cuda" and (not colon or index.isdigit())):
        return text
    raise argparse.ArgumentTypeError(f"expected `cpu`, `cuda` or `cuda:N`, got `{text}`")


def _dim(text: str) -> tuple[str, int]:
    name, value = _define(text)
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected `NAME=N` with a positive integer N, got `{text}`")
    return name, int(value)


def _compare(text: str) -> tuple[str, ...]:
    from dslc.peers import parse_compare

    try:
        return parse_compare(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _learning_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got `{text}`")
    return value


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    from dslc import __version__

    parser = argparse.ArgumentParser(prog="dslc", description="Compile, train and run deep-learning models.")
    parser.add_argument("--version", action="version", version=f"dslc {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name: str, help: str) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help, description=help)
        p.add_argument("model", metavar="MODEL.dl", help="the model source file")
        return p

    def compile_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("-D", dest="defines", metavar="NAME=VALUE", type=_define, action="append", default=[],
                       help="set a model parameter (repeatable)")
        p.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                       help="floating-point type of the graphs (default float32)")
        p.add_argument("--import-path", dest="import_path", metavar="DIR", action="append", default=[],
                       help="a folder `import` may read `.dl` files from besides the model's own (repeatable)")

    def device_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", type=_device, default="cpu", metavar="{cpu,cuda,cuda:N}",
                       help="where to run (default cpu; `cuda` is GPU 0)")

    def threads_option(p: argparse.ArgumentParser, also: str = "") -> None:
        p.add_argument("--threads", type=_positive, help=f"intra-op threads for ONNX Runtime{also} (default: all cores)")

    p = verb("build", "compile a model and write its graphs and manifest")
    compile_options(p)
    p.add_argument("-o", dest="out", metavar="DIR", help="output directory (default .)")
    p.add_argument("--emit", choices=["onnx", "ir"], default="onnx",
                   help="`ir` prints the compiled IR to stdout and writes nothing")
    p.add_argument("--print-ir-after", metavar="PASS",
                   help="print the IR after pass PASS to stdout instead (implies --emit ir)")
    p.add_argument("--seed", type=_non_negative, default=0, help="seed of the initial weights (default 0)")
    p.add_argument("--dim", dest="dims", metavar="NAME=N", type=_dim, action="append", default=[],
                   help="pin a symbolic dimension to a size in every graph, e.g. `--dim B=64` for runtimes that "
                        "need static shapes (repeatable)")
    p.add_argument("--split", action="store_true",
                   help="also write each training step as a gradient graph and an update graph (<model>.grad.onnx, "
                        "<model>.apply.onnx), for gradient accumulation and data-parallel training")

    p = verb("check", "compile a model and report errors, writing nothing")
    compile_options(p)

    p = verb("train", "train a model; checkpoints after every epoch")
    compile_options(p)
    p.add_argument("--data", required=True, metavar="TRAIN", help="training data: .npz, a folder of .npy files, or .csv")
    p.add_argument("--val", metavar="VAL", help="validation data (formats as --data)")
    p.add_argument("--epochs", required=True, type=_positive, help="total number of epochs")
    p.add_argument("--batch-size", required=True, type=_positive)
    p.add_argument("--seed", type=_non_negative, default=0,
                   help="seed of the initial weights, the shuffling and dropout (default 0)")
    p.add_argument("--lr", type=_learning_rate, help="override the model's learning rate")
    device_option(p)
    p.add_argument("-o", dest="out", metavar="RUN", required=True, help="run directory")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="STATE",
                   help="continue the run in -o RUN up to --epochs; with STATE (an init graph .onnx or an .npz of "
                        "every parameter, buffer and optimizer state, e.g. from another runtime), start a new run "
                        "in -o RUN from those values")
    threads_option(p)
    training_options(p)
    csv_options(p)
    p.add_argument("--accumulate", type=_positive, default=1, metavar="K",
                   help="compute each batch's gradient in K micro-batches (less memory, same step)")
    p.add_argument("--workers", type=_positive, metavar="N",
                   help="train data-parallel in N local MPI processes (needs `dslc[mpi]`); under `mpiexec -n N` "
                        "the ranks are found by themselves")

    p = verb("predict", "run a trained model on inputs")
    compile_options(p)
    p.add_argument("--weights", metavar="RUN", help="run directory or checkpoint.npz (models with a loss)")
    p.add_argument("--input", required=True, metavar="X.npz",
                   help="the inputs: .npz, a folder of .npy files, .csv, or one .npy for a model with one input")
    p.add_argument("-o", dest="out", required=True, metavar="Y.npz", help="where to write the outputs")
    p.add_argument("--batch-size", type=_positive, default=256, help="rows per run (default 256)")
    device_option(p)
    threads_option(p)
    csv_options(p, target=False)
    p.add_argument("--dask", nargs="?", const="", metavar="ADDRESS",
                   help="run on a Dask cluster (a local one without ADDRESS) over data larger than memory: --input is "
                        "a .npy, a directory of <input>.npy or of .npz files; -o is an .npz or a directory of "
                        "<output>.npy (needs `dslc[dask]`)")

    p = verb("summary", "the layers, parameters, FLOPs and memory of a model")
    compile_options(p)
    p.add_argument("-B", "--batch-size", type=_positive, default=32,
                   help="batch size of the FLOPs and activation-memory figures (default 32)")
    p.add_argument("--dim", dest="dims", metavar="NAME=N", type=_dim, action="append", default=[],
                   help="size of a symbolic dimension other than the batch `B` (repeatable)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")

    p = verb("evaluate", "loss and metrics of trained weights on labelled data")
    compile_options(p)
    p.add_argument("--weights", required=True, metavar="RUN", help="run directory or checkpoint.npz (or best.npz)")
    p.add_argument("--data", required=True, metavar="TEST.npz", help="inputs and targets")
    p.add_argument("--batch-size", type=_positive, default=256, help="rows per run (default 256)")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    device_option(p)
    threads_option(p)
    csv_options(p)

    p = verb("bench", "time the training step and inference, optionally against PyTorch")
    compile_options(p)
    p.add_argument("--batch-size", type=_positive, default=64, help="training batch size (default 64)")
    p.add_argument("--infer-batch-size", type=_positive, help="inference batch size (default: the training one)")
    p.add_argument("--steps", type=_positive, default=50,
                   help="timed steps per measurement (default 50; rounded up to a multiple of the 5 alternating "
                        "rounds)")
    p.add_argument("--dim", dest="dims", metavar="NAME=N", type=_dim, action="append", default=[],
                   help="size of a symbolic dimension other than the batch `B` (repeatable)")
    threads_option(p, " and PyTorch")
    p.add_argument("--compare", metavar="LIST", type=_compare, default=(),
                   help="also time the model run other ways, each checked against dslc's first step: `twin` (dslc's "
                        "IR by PyTorch op by op, and its inference via torch.onnx.export), the hand-written peers "
                        "`torch`, `torch-compile`, `jax` (examples/bench/peers/), comma-separated, or `all`")
    p.add_argument("--peers", metavar="DIR", help="where the hand-written peers are (default: examples/bench/peers "
                                                  "of dslc's source tree)")
    p.add_argument("--memory", action="store_true",
                   help="also measure the training step's peak memory (RSS) with dslc and with PyTorch, each in "
                        "a fresh process (a few seconds; needs PyTorch)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")

    p = verbs.add_parser("plot", help="draw a run's training curves into RUN/curves.png",
                         description="draw a run's training curves (loss and metrics, training and validation) "
                                     "into RUN/curves.png; needs matplotlib: pip install 'dslc[plot]'")
    p.add_argument("run", metavar="RUN", help="a run directory of `dslc train`")
    p.add_argument("-o", dest="out", metavar="FILE.png", help="where to write the picture (default RUN/curves.png)")

    p = verb("export", "write a self-contained inference model with trained weights, or a run's training state")
    compile_options(p)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--weights", metavar="RUN", help="run directory or checkpoint.npz (models with a loss)")
    source.add_argument("--train-state", metavar="RUN",
                        help="write the graphs, the manifest and an init graph holding the run's parameters, buffers "
                             "and optimizer state to the directory -o, so another runtime continues the run")
    p.add_argument("-o", dest="out", required=True, metavar="MODEL.onnx|DIR")

    p = verbs.add_parser("fmt", help="rewrite .dl files in the canonical layout",
                         description="rewrite .dl files in the canonical layout (comments are kept)")
    p.add_argument("files", metavar="FILE", nargs="+", help=".dl files, or folders to format every .dl file in")
    p.add_argument("--check", action="store_true",
                   help="write nothing; print the diff of each file not formatted and exit 1 if there is one")
    verbs.add_parser("lsp", help="run the language server on stdin and stdout (needs `pip install 'dslc[lsp]'`)")
    return parser, verbs.choices


def csv_options(p: argparse.ArgumentParser, target: bool = True) -> None:
    p.add_argument("--inputs", metavar="COL,COL...",
                   help="CSV data: the columns stacked into the model's input (default: columns named after it)")
    if target:
        p.add_argument("--target", metavar="COL[,COL...]", help="CSV data: the column(s) of the model's target")


def _data(path: str | None, args):
    """A data argument, with the CSV columns of `--inputs`/`--target` when given."""
    inputs, target = getattr(args, "inputs", None), getattr(args, "target", None)
    if path is None or not (inputs or target):
        return path
    if not path.lower().endswith(".csv"):
        raise UsageError(f"`--inputs` and `--target` choose the columns of CSV data; `{path}` is not a `.csv` file")
    from dslc.runtime.datafiles import CsvColumns

    split = lambda text: tuple(c.strip() for c in text.split(",")) if text else ()
    return CsvColumns(path, split(inputs), split(target))


def training_options(p: argparse.ArgumentParser) -> None:
    """`dslc train`'s options for validation, stopping, logs and fine-tuning (README "Training")."""
    p.add_argument("--val-split", type=_fraction, metavar="F",
                   help="hold out this fraction of the training data for validation (chosen by --seed)")
    p.add_argument("--early-stopping", nargs="?", const="", type=_early_stopping,
                   metavar="monitor=M,patience=N,min_delta=D,mode=min|max|off",
                   help="stop when the monitored value (default val_loss, else loss) stops improving "
                        "(default patience 5); keeps RUN/best.npz. Keys given replace those of the model's "
                        "`callback early_stopping(...)`; `off` drops it")
    p.add_argument("--restore-best", action="store_true", default=None,
                   help="at the end, make the best epoch's weights the run's checkpoint (RUN/best.npz)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only warnings and errors")
    p.add_argument("--log-format", choices=["text", "jsonl"], default="text",
                   help="`jsonl`: one JSON object per event on stdout, for scripts")
    p.add_argument("--log-every", type=_positive, metavar="N", help="also log the running means every N steps")
    p.add_argument("--plot", action="store_true", help="at the end, draw RUN/curves.png (needs `dslc[plot]`)")
    p.add_argument("--init-from", metavar="RUN_OR_ONNX",
                   help="start from the parameters of another run, checkpoint or exported .onnx that match by name")
    p.add_argument("--freeze", metavar="PATTERN", action="append", default=[],
                   help="keep the matching parameters fixed: a layer name, a glob such as `enc*`, `weights`... "
                        "(repeatable)")


def _early_stopping(text: str) -> str:
    """`--early-stopping`'s settings, checked as the command line is read (the monitored name is checked
    against the run's logs when it starts)."""
    from dslc.runtime.callbacks import OFF, EarlyStopping

    if text.strip().lower() in OFF:
        return text
    try:
        EarlyStopping.parse(text)
    except DataError as e:
        message = e.message.removeprefix("early stopping: ")
        raise argparse.ArgumentTypeError(message + (f" ({e.hint})" if e.hint else "")) from None
    return text


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got `{text}`")
    return value


# verbs that use only a program's graphs and manifest (`dslc/compile_cache.py`); `check` always compiles
CACHED_VERBS = ("build", "train", "predict", "evaluate", "export")


def _compile(args):
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
    if getattr(args, "split", False) or _scaled_out(args):
        extra["split"] = True
    if args.verb in CACHED_VERBS and getattr(args, "emit", "onnx") == "onnx":  # without onnx if compiled before
        from dslc.compile_cache import compile_cached as compile_file
    else:
        from dslc.compiler import compile_file
    try:
        return compile_file(args.model, defines=defines, dtype=args.dtype, seed=getattr(args, "seed", 0),
                            import_path=args.import_path, **extra)
    except UnknownDimension as e:
        raise UsageError(f"`--dim {e.unknown[0]}=...`: {e}") from None


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _run(args) -> int:
    if args.verb in ("fmt", "lsp"):
        return _fmt(args) if args.verb == "fmt" else _lsp()
    if args.verb == "plot":  # reads a run, compiles nothing
        from dslc.runtime.plot import plot_run

        _say(f"wrote {plot_run(args.run, args.out)}")
        return EXIT_OK
    program = _compile(args)
    if program.warnings:  # before the verb's output; they do not change the exit code
        _say(render_all(program.warnings) + "\n")
    if args.verb == "check":
        summary = f"{program.num_parameters:,} parameters" if program.trainable else "inference only (no loss)"
        _say(f"checked {program.name}: {summary}")
    elif args.verb == "build":
        if args.emit == "ir" or args.print_ir_after:
            sys.stdout.write(program.ir_text if program.ir_text.endswith("\n") else program.ir_text + "\n")
        else:
            paths = program.build(args.out or ".")
            _say(f"built {program.name}: " + ", ".join(str(p) for p in paths))
    elif args.verb == "train":
        from dslc.runtime.progress import make_reporter

        _check_trainable(program, args)
        if args.val is not None and args.val_split is not None:
            raise UsageError("give validation data (`--val`) or a validation split (`--val-split`), not both")
        if args.plot:  # fail before training, not after it
            from dslc.runtime.plot import check_matplotlib

            check_matplotlib()
        from dslc.runtime import distributed

        comm = distributed.world()
        if comm is not None and args.workers:
            raise UsageError("`--workers` starts MPI processes itself; under `mpiexec` drop it")
        writer = comm is None or comm.Get_rank() == 0
        reporter = make_reporter(args.log_format, args.quiet, args.log_every) if writer else None
        threads = distributed.rank_threads() if comm is not None and not args.threads else args.threads
        try:
            with distributed.abort_on_error(comm):
                program.train(_data(args.data, args), _data(args.val, args), epochs=args.epochs,
                              batch_size=args.batch_size, seed=args.seed, device=args.device, out_dir=args.out,
                              resume=args.resume, lr=args.lr, reporter=reporter, verbose=1 if writer else 0,
                              threads=threads, val_split=args.val_split, early_stopping=args.early_stopping,
                              restore_best=args.restore_best, init_from=args.init_from,
                              accumulate=args.accumulate, workers=args.workers, comm=comm)
        finally:
            if reporter is not None:
                reporter.close()
        if args.plot and writer:
            from dslc.runtime.plot import plot_run

            _say(f"wrote {plot_run(args.out)}")
    elif args.verb == "predict" and args.dask is not None:
        from dslc.runtime import dask_predict

        if args.device != "cpu":
            raise UsageError("`--dask` runs on the workers' CPUs; drop `--device`")
        paths = dask_predict.predict(program, args.input, args.out, args.weights, address=args.dask or None,
                                     batch_size=args.batch_size, progress=dask_predict.Progress(sys.stderr))
        _say("wrote " + ", ".join(str(p) for p in paths))
    elif args.verb == "predict":
        from dslc.fsutil import atomic_save_npz, check_writable

        check_writable(args.out)  # before the work: a mistyped folder must not cost a whole prediction
        outputs = program.predict(_data(args.input, args), args.weights, device=args.device, batch_size=args.batch_size,
                                  threads=args.threads)
        atomic_save_npz(args.out, outputs)
        shapes = ", ".join(f"`{k}` {v.dtype}{list(v.shape)}" for k, v in outputs.items())
        _say(f"wrote {args.out}: {shapes}")
    elif args.verb == "evaluate":
        _evaluate(program, args)
    elif args.verb == "summary":
        import json

        summary = program.summary(args.batch_size, dict(args.dims))
        print(json.dumps(summary) if args.json else summary)
    elif args.verb == "bench":
        _bench(program, args)
    elif args.verb == "export" and args.train_state:
        paths = program.export_train_state(args.train_state, args.out)
        _say(f"exported the training state of {program.name}: " + ", ".join(str(p) for p in paths))
    elif args.verb == "export":
        path = program.export(args.weights, args.out)
        _say(f"exported {program.name} to {path}")
    return EXIT_OK


def _fmt(args) -> int:
    from dslc.editor.fmt import diff, dl_files, format_source
    from dslc.frontend.parser import read_source
    from dslc.fsutil import atomic_write_text

    errors, changed = [], []
    for path in dl_files(args.files):
        try:
            source = read_source(path)
            formatted = format_source(source)
        except DslcError as e:
            errors.extend(e.diagnostics)
            continue
        if formatted != path.read_text(encoding="utf-8"):
            changed.append(path)
            if args.check:
                sys.stdout.write(diff(str(path), source.text, formatted))
            else:
                atomic_write_text(path, formatted)
    if errors:
        raise DslcError(errors)
    if args.check and changed:
        _say(f"{len(changed)} file{'s' * (len(changed) != 1)} not formatted: run `dslc fmt` on "
             + " ".join(str(p) for p in changed))
        return EXIT_MODEL
    if changed:
        _say("formatted " + ", ".join(str(p) for p in changed))
    return EXIT_OK


def _lsp() -> int:
    try:
        from dslc.editor.lsp import serve
    except ImportError as e:
        raise DataError(f"`dslc lsp` needs the `lsp` extra ({e})", hint="pip install 'dslc[lsp]'") from None
    serve()
    return EXIT_OK


def _scaled_out(args) -> bool:
    """Whether `dslc train` runs through the split graphs: accumulating, or data-parallel."""
    if args.verb != "train":
        return False
    from dslc.runtime.distributed import launched_by_mpi

    return args.accumulate > 1 or bool(args.workers) or launched_by_mpi()


def _check_trainable(program, args) -> None:
    """Problems `fit` reports as data errors (for API callers) that, from `dslc train`, are the model's
    (exit 1) or the command line's (exit 2)."""
    from dslc.diagnostics import error
    from dslc.runtime.layout import train_keys
    from dslc.runtime.train import lr_out_of_range

    keys = train_keys(program.manifest)
    if not keys:
        span = program.header_span()
        if span is not None:  # otherwise `fit` raises its `DataError`
            raise error(f"model `{program.name}` has no loss, so it cannot be trained", span,
                        "this model has no `loss`", hint="add a `loss` and an `optimizer` to the model")
    elif args.lr is not None and len(keys) > 1:
        raise UsageError(f"`--lr`: model `{program.name}` has several objectives, each with its own learning rate; "
                         "set each objective's `lr` in the model (or with -D) instead")
    elif lr_out_of_range(program.manifest, args.lr):
        raise UsageError(f"`--lr`: {lr_out_of_range(program.manifest, args.lr)}")


def _evaluate(program, args) -> None:
    import json

    from dslc.runtime.progress import format_number

    results = program.evaluate(_data(args.data, args), args.weights, batch_size=args.batch_size, device=args.device,
                               threads=args.threads)
    if args.json:
        print(json.dumps({"model": program.name, "data": args.data, "weights": args.weights, **results}))
        return
    scalars = {k: v for k, v in results.items() if isinstance(v, float)}
    width = max(map(len, scalars))
    print(f"{program.name} on {args.data} (weights {args.weights})")
    for name, value in scalars.items():
        print(f"  {name:<{width}}  {format_number(value)}")
    for name, matrix in results.items():
        if name not in scalars:  # a confusion matrix: rows are the true classes, columns the predicted
            cell = max(len(str(c)) for row in matrix for c in row)
            print(f"  {name} (rows: true class, columns: predicted class)")
            for row in matrix:
                print("    " + " ".join(str(c).rjust(cell) for c in row))


def _bench(program, args) -> None:
    import json

    from dslc import bench
    from dslc.bench_report import report_lines
    from dslc.fsutil import atomic_write_text, check_writable

    dims = dict(args.dims)
    symbols = bench.symbols(program.manifest)
    if "B" in dims:
        raise UsageError("`--dim B=...`: the batch size is set by `--batch-size` (and `--infer-batch-size`)")
    known = ", ".join(f"`{d}`" for d in sorted(symbols - {"B"})) or "none besides the batch `B`"
    for name in dims:
        if name not in symbols:
            raise UsageError(f"`--dim {name}=...`: `{program.name}` has no dimension `{name}` (its dimensions: {known})")
    missing = sorted(symbols - {"B"} - set(dims))
    if missing:
        raise UsageError(f"`{program.name}` has the symbolic dimension(s) {', '.join(f'`{d}`' for d in missing)}; "
                         f"give their sizes with " + " ".join(f"`--dim {d}=N`" for d in missing))
    if args.json:
        check_writable(args.json)
    if args.memory:
        from dslc.peers import import_library

        import_library("twin", "--memory")  # the memory child runs the twin
    result = bench.run(program, batch_size=args.batch_size, infer_batch_size=args.infer_batch_size, steps=args.steps,
                       dims=dims, compare=args.compare, memory=args.memory, threads=args.threads,
                       peers_folder=args.peers)
    r = result.as_json()
    print("\n".join(report_lines(r)))
    if args.json:
        document = {"machine": bench.machine(), "workloads": {program.name: r}}
        atomic_write_text(args.json, json.dumps(document, indent=2) + "\n")


def _os_error_message(e: OSError) -> str:
    """A file problem other than a failed write (`fsutil.WriteError` is a `DataError`)."""
    reason = e.strerror or str(e)
    return f"cannot access `{e.filename}`: {reason}" if e.filename else reason


# argument -> flag: the paths a verb reads or writes (`-o ''` trained a run into the working directory)
_PATH_ARGUMENTS = {"model": "MODEL.dl", "out": "-o", "data": "--data", "val": "--val", "input": "--input",
                   "weights": "--weights", "train_state": "--train-state", "init_from": "--init-from", "run": "RUN",
                   "json": "--json", "peers": "--peers"}


def _refuse_empty_paths(args, parser: argparse.ArgumentParser) -> None:
    for name, flag in _PATH_ARGUMENTS.items():
        if getattr(args, name, None) == "":
            parser.error(f"argument {flag}: expected a path, got an empty string")
    if getattr(args, "resume", None) == "" or "" in getattr(args, "files", ()):
        parser.error(f"argument {'--resume' if args.verb == 'train' else 'FILE'}: expected a path, got an empty string")


def _refuse_repeated_dims(args, parser: argparse.ArgumentParser) -> None:
    """`--dim B=4 --dim B=8` is refused as `-D` twice is (the last one silently won)."""
    given: dict[str, int] = {}
    for name, size in getattr(args, "dims", ()):
        if name in given:
            parser.error(f"argument --dim: `{name}` is given twice (`{name}={given[name]}` and `{name}={size}`)")
        given[name] = size


def _full_disk_hint(args, e: DataError) -> str:
    """A training run stopped by a full disk keeps its last whole epoch, as one stopped by Ctrl-C does."""
    if args.verb != "train" or getattr(e, "errno", None) not in (errno.ENOSPC, errno.EDQUOT):
        return ""
    if os.path.exists(os.path.join(args.out, "checkpoint.npz")):
        return "the last completed epoch is saved; free some space and run the same command with `--resume` to continue"
    return "free some space and train again"


def main(argv: list[str] | None = None) -> int:
    """Run the `dslc` command line; returns the exit code (the console script passes it to sys.exit)."""
    parser, verbs = _parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "print_ir_after", None):
            from dslc.passes import PASS_NAMES

            if args.print_ir_after not in PASS_NAMES:
                verbs[args.verb].error(f"argument --print-ir-after: no pass `{args.print_ir_after}`; "
                                       f"passes: {', '.join(PASS_NAMES)}")
        _refuse_empty_paths(args, verbs[args.verb])
        _refuse_repeated_dims(args, verbs[args.verb])
        if args.verb == "predict" and args.out.lower().endswith(".npy"):  # was an `.npz` archive named `.npy`
            where = "an `.npz` file or a directory" if args.dask is not None else "an `.npz` file"
            verbs[args.verb].error(f"argument -o: the outputs go to {where}, not `{args.out}` (an `.npy` holds one "
                                   "array)")
        if args.verb == "build" and args.out is not None and (args.emit == "ir" or args.print_ir_after):
            flag = "--print-ir-after" if args.print_ir_after else "--emit ir"
            verbs[args.verb].error(f"argument -o: `{flag}` prints the IR and writes nothing; drop `-o`")
    except SystemExit as e:  # argparse: --help/--version (0) or a usage error (2, message already printed)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    try:
        with command_line():
            return _run(args)
    except UsageError as e:
        verbs[args.verb].print_usage(sys.stderr)
        _say(f"dslc {args.verb}: error: {e}")
        return EXIT_USAGE
    except DslcError as e:
        _say(render_all(e.diagnostics))
        return EXIT_MODEL
    except DataError as e:
        hint = e.hint or _full_disk_hint(args, e)
        _say(printable(f"error: {e.message}" + (f"\nhint: {hint}" if hint else "")))
        return EXIT_DATA
    except BrokenPipeError:
        _reader_left(args)
        return EXIT_PIPE
    except OSError as e:
        _say(printable(f"error: {_os_error_message(e)}"))
        return EXIT_DATA
    except KeyboardInterrupt:
        _say("error: interrupted")
        if args.verb == "train" and os.path.exists(os.path.join(args.out, "checkpoint.npz")):
            _say("hint: the last completed epoch is saved; run the same command with `--resume` to continue")
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - anything else is a bug in dslc, reported as such
        from dslc.__main__ import caused_by_interrupt

        if caused_by_interrupt(e):
            _say("error: interrupted")
            return EXIT_INTERRUPTED
        _say(f"error: internal compiler error: {type(e).__name__}: {e}")
        _say("note: this is a bug in dslc; please report it with the model file")
        if os.environ.get("DSLC_BACKTRACE") == "1":
            _say("".join(traceback.format_exception(e)).rstrip())
        else:
            _say("note: run with `DSLC_BACKTRACE=1` to see the traceback")
        return EXIT_BUG


def _reader_left(args) -> None:
    """The output's reader closed the pipe: stop quietly, and keep the interpreter's last flush of stdout
    from failing again at exit."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    if args.verb == "train" and os.path.exists(os.path.join(args.out, "checkpoint.npz")):
        _say("note: the output's reader left, so training stopped; the last completed epoch is saved and "
             "`--resume` continues")


if __name__ == "__main__":
    sys.exit(main())
