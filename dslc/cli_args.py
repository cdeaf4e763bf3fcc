"""The `dslc` command line's grammar: the verbs, their flags, and the checks of flag values and combinations that need
nothing but the text (`dslc.cli` runs the verbs)."""
from __future__ import annotations

import argparse
import os

from dslc import cli_values


class _Unread:
    """The parser of a verb the command line does not name: its flags would never be read, so none are made."""

    def add_argument(self, *args, **kwargs) -> None:
        pass

    def add_mutually_exclusive_group(self, **kwargs) -> _Unread:
        return self


def build_parser(named: str | None = None) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser and each verb's. `named`: the verb the command line names, whose flags alone are then made;
    the others stay names for argparse's `invalid choice` message (making every verb's flags was 3.7 ms,
    before `dslc train` could start making its sessions)."""
    from dslc import __version__

    parser = argparse.ArgumentParser(prog="dslc", description="Compile, train and run deep-learning models.")
    parser.add_argument("--version", action="version", version=f"dslc {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    if named is not None:
        add_parser = verbs.add_parser

        def add_named_parser(name: str, **kwargs):
            if name == named:
                return add_parser(name, **kwargs)
            verbs.choices[name] = _Unread()
            return verbs.choices[name]
        verbs.add_parser = add_named_parser

    def verb(name: str, help: str) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help, description=help)
        p.add_argument("model", metavar="MODEL.dl", help="the model source file")
        return p

    def compile_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("-D", dest="defines", metavar="NAME=VALUE", type=cli_values.name_value, action="append",
                       default=[], help="set a model parameter (repeatable)")
        p.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                       help="floating-point type of the graphs (default float32)")
        p.add_argument("--import-path", dest="import_path", metavar="DIR", action="append", default=[],
                       help="a folder `import` may read `.dl` files from besides the model's own (repeatable)")

    def device_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", type=cli_values.device, default="cpu", metavar="{cpu,cuda,cuda:N}",
                       help="where to run (default cpu; `cuda` is GPU 0)")

    def threads_option(p: argparse.ArgumentParser, also: str = "") -> None:
        p.add_argument("--threads", type=cli_values.positive_int,
                       help=f"intra-op threads for ONNX Runtime{also} (default: all cores)")

    def tune_option(p: argparse.ArgumentParser, threads: bool = False) -> None:
        p.add_argument("--tune", action="store_true",
                       help="choose each shape-dependent kernel formulation (float32 conv filter gradients) by "
                            "timing the candidates with ONNX Runtime on this machine instead of the fixed rule; "
                            "cached per machine")
        if threads:
            threads_option(p, " that --tune measures with")

    p = verb("build", "compile a model and write its graphs and manifest")
    compile_options(p)
    tune_option(p, threads=True)
    p.add_argument("-o", dest="out", metavar="DIR", help="output directory (default .)")
    p.add_argument("--emit", choices=["onnx", "ir"], default="onnx",
                   help="`ir` prints the compiled IR to stdout and writes nothing")
    p.add_argument("--print-ir-after", metavar="PASS",
                   help="print the IR after pass PASS to stdout instead (implies --emit ir)")
    p.add_argument("--seed", type=cli_values.non_negative_int, default=0,
                   help="seed of the initial weights (default 0)")
    p.add_argument("--dim", dest="dims", metavar="NAME=N", type=cli_values.dim, action="append", default=[],
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
    p.add_argument("--epochs", required=True, type=cli_values.positive_int, help="total number of epochs")
    p.add_argument("--batch-size", required=True, type=cli_values.positive_int)
    p.add_argument("--seed", type=cli_values.non_negative_int, default=0,
                   help="seed of the initial weights, the shuffling and dropout (default 0)")
    p.add_argument("--lr", type=cli_values.learning_rate, help="override the model's learning rate")
    device_option(p)
    p.add_argument("-o", dest="out", metavar="RUN", required=True, help="run directory")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="STATE",
                   help="continue the run in -o RUN up to --epochs; with STATE (an init graph .onnx or an .npz of "
                        "every parameter, buffer and optimizer state, e.g. from another runtime), start a new run "
                        "in -o RUN from those values")
    threads_option(p)
    tune_option(p)
    training_options(p)
    csv_options(p)
    p.add_argument("--accumulate", type=cli_values.positive_int, default=1, metavar="K",
                   help="compute each batch's gradient in K micro-batches (less memory, same step)")
    p.add_argument("--workers", type=cli_values.positive_int, metavar="N",
                   help="train data-parallel in N local MPI processes (needs `dslc[mpi]`); under `mpiexec -n N` "
                        "the ranks are found by themselves")

    p = verb("predict", "run a trained model on inputs")
    compile_options(p)
    p.add_argument("--weights", metavar="RUN", help="run directory, checkpoint.npz, or an .npz of trained values "
                                                     "(one array per name; models with a loss)")
    p.add_argument("--input", required=True, metavar="X.npz",
                   help="the inputs: .npz, a folder of .npy files, .csv, or one .npy for a model with one input")
    p.add_argument("-o", dest="out", required=True, metavar="Y.npz", help="where to write the outputs")
    p.add_argument("--batch-size", type=cli_values.positive_int, default=256, help="rows per run (default 256)")
    device_option(p)
    threads_option(p)
    csv_options(p, target=False)
    p.add_argument("--dask", nargs="?", const="", metavar="ADDRESS",
                   help="run on a Dask cluster (a local one without ADDRESS) over data larger than memory: --input is "
                        "a .npy, a directory of <input>.npy, an .npz or a directory of .npz files; -o is an .npz or a directory of "
                        "<output>.npy (needs `dslc[dask]`)")

    p = verb("summary", "the layers, parameters, FLOPs and memory of a model")
    compile_options(p)
    p.add_argument("-B", "--batch-size", type=cli_values.positive_int, default=32,
                   help="batch size of the FLOPs and activation-memory figures (default 32)")
    p.add_argument("--dim", dest="dims", metavar="NAME=N", type=cli_values.dim, action="append", default=[],
                   help="size of a symbolic dimension other than the batch `B` (repeatable)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    freeze_option(p, "count the matching parameters as frozen, as `dslc train --freeze` trains them "
                     "(Keras's non-trainable; repeatable)")

    p = verb("evaluate", "loss and metrics of trained weights on labelled data")
    compile_options(p)
    p.add_argument("--weights", required=True, metavar="RUN",
                   help="run directory, checkpoint.npz (or best.npz), or an .npz of trained values (one array per name)")
    p.add_argument("--data", required=True, metavar="TEST.npz", help="inputs and targets")
    p.add_argument("--batch-size", type=cli_values.positive_int, default=256, help="rows per run (default 256)")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    device_option(p)
    threads_option(p)
    csv_options(p)

    p = verb("bench", "time the training step and inference, optionally against PyTorch")
    compile_options(p)
    p.add_argument("--batch-size", type=cli_values.positive_int, default=64, help="training batch size (default 64)")
    p.add_argument("--infer-batch-size", type=cli_values.positive_int,
                   help="inference batch size (default: the training one)")
    p.add_argument("--steps", type=cli_values.positive_int, default=50,
                   help="timed steps per measurement (default 50; rounded up to a multiple of the 5 alternating "
                        "rounds)")
    p.add_argument("--dim", dest="dims", metavar="NAME=N", type=cli_values.dim, action="append", default=[],
                   help="size of a symbolic dimension other than the batch `B` (repeatable)")
    threads_option(p, " and PyTorch")
    tune_option(p)
    p.add_argument("--compare", metavar="LIST", type=cli_values.compare, default=(),
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
    source.add_argument("--weights", metavar="RUN", help="run directory, checkpoint.npz, or an .npz of trained values "
                                                          "(one array per name; models with a loss)")
    source.add_argument("--train-state", metavar="RUN",
                        help="write the graphs, the manifest and an init graph holding the run's parameters, buffers "
                             "and optimizer state to the directory -o, so another runtime continues the run")
    p.add_argument("-o", dest="out", required=True, metavar="MODEL.onnx|DIR")
    freeze_option(p, "with --train-state: the --freeze patterns the run was trained with (repeatable)")
    tune_option(p, threads=True)

    p = verbs.add_parser("fmt", help="rewrite .dl files in the canonical layout",
                         description="rewrite .dl files in the canonical layout (comments are kept)")
    p.add_argument("files", metavar="FILE", nargs="+",
                   help=".dl files, or folders to format every .dl file in; `-` reads the text from stdin and "
                        "writes it formatted to stdout")
    p.add_argument("--check", action="store_true",
                   help="write nothing; print the diff of each file not formatted and exit 1 if there is one")
    p.add_argument("--stdin-filename", metavar="PATH", default=None,
                   help="with `-`: the file name errors and the diff give the text read from stdin")
    verbs.add_parser("lsp", help="run the language server on stdin and stdout (needs `pip install 'dslc[lsp]'`)")
    for name in UNTUNED_VERBS:  # accepted, then refused with the reason (`cli.main`)
        verbs.choices[name].add_argument("--tune", action="store_true", help=argparse.SUPPRESS)
    return parser, verbs.choices


# verbs that compile but write and run no training graph, where `--tune` has nothing to choose
UNTUNED_VERBS = ("check", "predict", "evaluate", "summary")


def csv_options(p: argparse.ArgumentParser, target: bool = True) -> None:
    p.add_argument("--inputs", metavar="COL,COL...",
                   help="CSV data: the columns stacked into the model's input (default: columns named after it)")
    if target:
        p.add_argument("--target", metavar="COL[,COL...]", help="CSV data: the column(s) of the model's target")


def training_options(p: argparse.ArgumentParser) -> None:
    """`dslc train`'s options for validation, stopping, logs and fine-tuning (README "Training")."""
    p.add_argument("--val-split", type=cli_values.fraction, metavar="F",
                   help="hold out this fraction of the training data for validation (chosen by --seed)")
    p.add_argument("--early-stopping", nargs="?", const="", type=cli_values.early_stopping,
                   metavar="monitor=M,patience=N,min_delta=D,mode=min|max|auto|off",
                   help="stop when the monitored value (default val_loss, else loss) stops improving "
                        "(default patience 5); keeps RUN/best.npz. Keys given replace those of the model's "
                        "`callback early_stopping(...)`; `off` drops it")
    p.add_argument("--reduce-lr-on-plateau", nargs="?", const="", type=cli_values.reduce_lr_on_plateau,
                   metavar="monitor=M,factor=F,patience=N,min_delta=D,cooldown=C,min_lr=L,mode=min|max|auto|off",
                   help="multiply the learning rate by factor (default 0.1) when the monitored value (default "
                        "val_loss, else loss) has not improved for patience epochs (default 10). Keys given replace "
                        "those of the model's `callback reduce_lr_on_plateau(...)`; `off` drops it")
    p.add_argument("--class-weight", type=cli_values.class_weights, metavar="CLASS=W,...",
                   help="Keras' class_weight, e.g. 0=1,1=5: fills the weights the loss reads as its `sample_weight` "
                        "with the weight of each example's class (classes not given weigh 1)")
    p.add_argument("--restore-best", action="store_true", default=None,
                   help="at the end, make the best epoch's weights the run's checkpoint (RUN/best.npz)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only warnings and errors")
    p.add_argument("--log-format", choices=["text", "jsonl"], default="text",
                   help="`jsonl`: one JSON object per event on stdout, for scripts")
    p.add_argument("--log-every", type=cli_values.positive_int, metavar="N",
                   help="also log the running means every N steps")
    p.add_argument("--plot", action="store_true", help="at the end, draw RUN/curves.png (needs `dslc[plot]`)")
    p.add_argument("--init-from", metavar="RUN_OR_ONNX",
                   help="start from the parameters of another run, checkpoint or exported .onnx that match by name")
    freeze_option(p, "keep the matching parameters fixed: a layer name, a glob such as `enc*`, `weights`... "
                     "(repeatable)")


def freeze_option(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--freeze", metavar="PATTERN", action="append", default=[], help=help)


def refuse_misuse(args, parser: argparse.ArgumentParser) -> None:
    """Usage errors (exit 2, as argparse's own) that argparse cannot express: flags that contradict each other
    or the verb, empty paths, a dimension given twice, an unknown pass."""
    if getattr(args, "print_ir_after", None):
        from dslc.passes import PASS_NAMES

        if args.print_ir_after not in PASS_NAMES:
            parser.error(f"argument --print-ir-after: no pass `{args.print_ir_after}`; passes: {', '.join(PASS_NAMES)}")
    _refuse_empty_paths(args, parser)
    _refuse_repeated_dims(args, parser)
    _refuse_tune_misuse(args, parser)
    suffix = os.path.splitext(getattr(args, "out", None) or "")[1].lower()
    if args.verb == "predict" and suffix not in ("", ".npz"):  # was an `.npz` archive named `.npy`, `.csv`, ...
        where = "an `.npz` file or a directory" if args.dask is not None else "an `.npz` file"
        why = "an `.npy` holds one array" if suffix == ".npy" else "dslc writes the outputs as an `.npz` archive"
        parser.error(f"argument -o: the outputs go to {where}, not `{args.out}` ({why})")
    if args.verb == "export" and not args.train_state and suffix not in ("", ".onnx"):  # an ONNX model named `.npz`
        parser.error(f"argument -o: the model goes to an `.onnx` file, not `{args.out}`")
    if args.verb == "build" and args.out is not None and (args.emit == "ir" or args.print_ir_after):
        flag = "--print-ir-after" if args.print_ir_after else "--emit ir"
        parser.error(f"argument -o: `{flag}` prints the IR and writes nothing; drop `-o`")


def _refuse_tune_misuse(args, parser: argparse.ArgumentParser) -> None:
    """`--tune` where it has nothing to choose, and `--threads` on a build without it."""
    if getattr(args, "tune", False) and args.verb in UNTUNED_VERBS:
        parser.error(f"argument --tune: `dslc {args.verb}` writes and runs no training graph, so there is nothing to "
                     "tune; use it with `build`, `train`, `bench` or `export`")
    if args.verb in ("build", "export") and args.threads and not args.tune:
        parser.error(f"argument --threads: `dslc {args.verb}` runs nothing; `--threads` sets what `--tune` measures "
                     "with")
    if args.verb == "build" and args.tune and (args.emit == "ir" or args.print_ir_after):
        parser.error("argument --tune: it chooses how the ONNX graphs are written; `--emit ir` writes none")
    if args.verb == "train" and args.tune and args.device != "cpu":
        parser.error("argument --tune: it measures with ONNX Runtime on the CPU; drop it with `--device cuda`")


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
