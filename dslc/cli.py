"""The `dslc` command: the only code that prints to the terminal or ends the command. Its exit codes,
and what a failed command says, are `dslc.cli_failures`'s."""
from __future__ import annotations

import os
import sys

from dslc import interrupts, standard_json
from dslc.cli_args import build_parser, refuse_misuse
from dslc.cli_failures import (  # noqa: F401 - the exit codes are `dslc.cli`'s too
    EXIT_BUG, EXIT_DATA, EXIT_INTERRUPTED, EXIT_MODEL, EXIT_NOT_FORMATTED, EXIT_OK, EXIT_PIPE, EXIT_TERMINATED,
    EXIT_USAGE, UsageError,
    checkpoint_saved, failure, run_checkpoint, to_devnull)
from dslc.cli_program import compiled, data_argument
from dslc.cli_ranks import job_to_stop, other_rank, refuse_mpiexec, said_once_by_rank_zero, stop_the_other_ranks
from dslc.diagnostics import DataError, DslcError, UnknownDimension, render_all
from dslc.spelling import command_line


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _run(args) -> int:
    if args.verb in ("fmt", "lsp"):
        return _fmt(args) if args.verb == "fmt" else _lsp()
    if args.verb == "plot":  # reads a run, compiles nothing
        from dslc.runtime.plot import plot_run

        _say(f"wrote {plot_run(args.run, args.out)}")
        return EXIT_OK
    refuse_mpiexec(args)
    program = compiled(args)
    if program.warnings and not other_rank(args):  # before the verb's output; they do not change the exit code
        _say(render_all(program.warnings) + "\n")
    if getattr(args, "tune", False) and not getattr(args, "quiet", False) and not other_rank(args):
        from dslc.runtime.tune import tuning_lines

        _say("\n".join(tuning_lines(program.manifest["tuning"], program.extras.get("tuned"))))
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
            with distributed.abort_on_error(comm, run_checkpoint(args)):
                program.train(data_argument(args.data, args), data_argument(args.val, args), epochs=args.epochs,
                              batch_size=args.batch_size, seed=args.seed, device=args.device, out_dir=args.out,
                              resume=args.resume, lr=args.lr, reporter=reporter, verbose=1 if writer else 0,
                              threads=threads, val_split=args.val_split, early_stopping=args.early_stopping,
                              restore_best=args.restore_best, init_from=args.init_from,
                              accumulate=args.accumulate, workers=args.workers, comm=comm,
                              reduce_lr_on_plateau=args.reduce_lr_on_plateau, class_weight=args.class_weight)
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
        outputs = program.predict(data_argument(args.input, args), args.weights, device=args.device,
                                  batch_size=args.batch_size, threads=args.threads)
        atomic_save_npz(args.out, outputs)
        shapes = ", ".join(f"`{k}` {v.dtype}{list(v.shape)}" for k, v in outputs.items())
        _say(f"wrote {args.out}: {shapes}")
    elif args.verb == "evaluate":
        _evaluate(program, args)
    elif args.verb == "summary":
        try:
            summary = program.summary(args.batch_size, dict(args.dims))
        except UnknownDimension as e:
            raise UsageError(f"`--dim {e.unknown[0]}=...`: {e}") from None
        print(standard_json.dumps(summary) if args.json else summary)
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
    from dslc.editor.fmt import diff, dl_files, format_source, in_the_written_style, read_only_error
    from dslc.frontend.parser import read_source
    from dslc.fsutil import rewrite_bytes

    if "-" in args.files:
        return _fmt_stdin(args)
    if args.stdin_filename is not None:
        raise UsageError("`--stdin-filename` names the text read from stdin: give `-` as the file")
    errors, changed, read_only = [], [], []
    for path in dl_files(args.files):
        try:
            source = read_source(path)
            written = path.read_bytes().decode("utf-8")  # UTF-8: read_source said so
            formatted = in_the_written_style(format_source(source), written)
        except DslcError as e:
            errors.extend(e.diagnostics)
            continue
        if formatted != written:
            changed.append(path)
            if args.check:
                sys.stdout.write(diff(str(path), written, formatted))
            elif not os.access(path, os.W_OK) or not os.stat(path).st_mode & 0o200:  # the bit for root too
                read_only.append(path)
            else:  # through a symbolic link to the file it names, as an editor saves; hard links kept
                rewrite_bytes(path.resolve(), formatted.encode("utf-8"))
    # what was done is said whatever else failed: a file that does not parse stopped the report, not the writes
    rewritten = [p for p in changed if p not in read_only]
    if args.check and changed:
        _say(f"{len(changed)} file{'s' * (len(changed) != 1)} not formatted: run `dslc fmt` on "
             + " ".join(str(p) for p in changed))
    elif rewritten:
        _say("formatted " + ", ".join(str(p) for p in rewritten))
    if read_only and errors:  # the model errors give the exit code; the read-only files are still named
        unwritable = read_only_error(read_only)
        _say(f"error: {unwritable.message}\nhint: {unwritable.hint}\n")
    if errors:
        raise DslcError(errors)
    if read_only:
        raise read_only_error(read_only)
    return EXIT_NOT_FORMATTED if args.check and changed else EXIT_OK


def _fmt_stdin(args) -> int:
    """`dslc fmt -`: the text on stdin, formatted, on stdout (as `black -`, `rustfmt`, `gofmt` read it, and
    editors call them); with `--check`, nothing written but the diff, exit 4 if it is not formatted."""
    from dslc.editor.fmt import diff, format_source, in_the_written_style, read_stdin

    if args.files != ["-"]:
        raise UsageError("`-` (standard input) is formatted alone: give it or files, not both")
    source, written = read_stdin(sys.stdin.buffer, args.stdin_filename)
    formatted = in_the_written_style(format_source(source), written)
    if not args.check:
        sys.stdout.write(formatted)
    elif formatted != written:
        sys.stdout.write(diff(source.path, written, formatted))
        _say(f"1 file not formatted: {source.path}")
        return EXIT_NOT_FORMATTED
    return EXIT_OK


def _lsp() -> int:
    try:
        from dslc.editor.lsp import serve
    except ImportError as e:
        raise DataError(f"`dslc lsp` needs the `lsp` extra ({e})", hint="pip install 'dslc[lsp]'") from None
    return serve()


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


def _warn_undefined_areas(program, results: dict) -> None:
    from dslc.runtime.layout import eval_key, train_keys
    from dslc.runtime.metrics import output_specs, undefined_areas, undefined_warning

    graphs = program.manifest["graphs"]
    specs = output_specs([graphs[eval_key(key)] for key in train_keys(program.manifest)])
    for name in undefined_areas(results, specs):
        print(f"warning: {undefined_warning(name)}", file=sys.stderr)


def _evaluate(program, args) -> None:
    from dslc.runtime.progress import format_number

    results = program.evaluate(data_argument(args.data, args), args.weights, batch_size=args.batch_size,
                               device=args.device, threads=args.threads)
    _warn_undefined_areas(program, results)
    if args.json:
        print(standard_json.dumps({"model": program.name, "data": args.data, "weights": args.weights, **results}))
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
    if args.peers and not os.path.isdir(args.peers):  # else every peer column reads "no hand-written peer"
        raise DataError(f"`--peers {args.peers}`: no such folder",
                        hint="give the folder of hand-written peers (default: examples/bench/peers)")
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
        atomic_write_text(args.json, standard_json.dumps(document, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the `dslc` command line; returns the exit code (the console script passes it to sys.exit)."""
    words = sys.argv[1:] if argv is None else argv
    parser, verbs = build_parser(words[0] if words and not words[0].startswith("-") else None)
    try:
        args = parser.parse_args(argv)
        refuse_misuse(args, verbs[args.verb])
    except SystemExit as e:  # argparse: --help/--version (0) or a usage error (2, message already printed)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    try:
        with command_line():
            return _run(args)
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - each kind of failure has its exit code
        code, lines = failure(args, e)
        comm = job_to_stop(args, e)
        said_by_rank_zero = said_once_by_rank_zero(args, comm, e, lines)
        if not said_by_rank_zero:
            try:
                _tell_failure(args, verbs[args.verb], e, lines)
            except BrokenPipeError:  # stderr's reader left (`dslc train ... 2>&1 | head -1`): the code says why
                to_devnull(sys.stderr)
        if lines and args.verb == "train" and args.log_format == "jsonl" and not said_by_rank_zero:
            try:  # a script reading the events
                print(standard_json.dumps({"event": "error", "exit": code, "message": "\n".join(lines)}), flush=True)
            except BrokenPipeError:
                to_devnull(sys.stdout)
        if comm is not None:
            stop_the_other_ranks(comm, code, said_by_rank_zero)
        return code


def _tell_failure(args, verb_parser, e: BaseException, lines: list[str]) -> None:
    if isinstance(e, UsageError):
        verb_parser.print_usage(sys.stderr)
    elif isinstance(e, BrokenPipeError):
        _reader_left(args)
    for line in lines:
        _say(line)


def _reader_left(args) -> None:
    """The output's reader closed the pipe: stop quietly."""
    to_devnull(sys.stdout)
    if checkpoint_saved(args):
        _say("note: the output's reader left, so training stopped; the last completed epoch is saved and "
             "`--resume` continues")


if __name__ == "__main__":
    interrupts.install()
    sys.exit(main())
