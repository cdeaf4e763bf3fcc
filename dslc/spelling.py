"""Options as the caller writes them: a flag on the command line, a keyword argument in Python.

Errors and hints raised below the CLI (the training loop, the compiler) name options through
`option(...)`, so that `dslc train` says "pass `--resume`" and `program.train` says "pass
`resume=True`". The CLI runs its verbs inside `command_line()`; everything else is Python.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

_ON_COMMAND_LINE: ContextVar[bool] = ContextVar("dslc_on_command_line", default=False)

# name -> (command line, Python); `{}` takes the value given to `option`
OPTIONS = {
    "dtype": ("`--dtype {}`", "`dtype=\"{}\"` (of `dslc.compile`)"),
    "batch_size_of": ("`--batch-size {}`", "`batch_size={}`"),
    "device": ("`--device {}`", "`device=\"{}\"`"),
    "dim": ("`--dim {}=N`", "`dims={{\"{}\": N}}`"),
    "resume": ("`--resume`", "`resume=True`"),
    "no_resume": ("without `--resume`", "with `resume=False`"),
    "lr": ("`--lr`", "`lr=...`"),
    "batch_size": ("`--batch-size`", "`batch_size=...`"),
    "weights": ("`--weights RUN` (the `-o` directory of `dslc train`)", "`weights=RUN` (the `out_dir` of `train`)"),
    "no_weights": ("`--weights`", "`weights`"),
    "val": ("`--val`", "`val=...`"),
    "val_split": ("`--val-split`", "`val_split=...`"),
    "early_stopping": ("`--early-stopping`", "`early_stopping=...`"),
    "restore_best": ("`--restore-best`", "`restore_best=True`"),
    "reduce_lr_on_plateau": ("`--reduce-lr-on-plateau`", "`reduce_lr_on_plateau=...`"),
    "init_from": ("`--init-from`", "`init_from=...`"),
    "freeze": ("`--freeze`", "`freeze=...`"),
    "class_weight": ("`--class-weight`", "`class_weight=`"),
    "inputs": ("`--inputs`", "`inputs=...`"),
    "target": ("`--target`", "`target=...`"),
    "defined": ("given with -D", "a keyword argument of `dslc.compile`"),
}


def on_command_line() -> bool:
    return _ON_COMMAND_LINE.get()


def option(name: str, value: object = "") -> str:
    """How the caller writes option `name` (set to `value`): "`--resume`" or "`resume=True`"."""
    cli, python = OPTIONS[name]
    return (cli if on_command_line() else python).format(value)


def define(name: str, value: str) -> str:
    """A model parameter as the caller set it: "`-D hidden=abc`" or "`hidden=abc`"."""
    return f"`-D {name}={value}`" if on_command_line() else f"`{name}={value}`"


@contextmanager
def command_line():
    """Messages raised inside speak the command line's language."""
    token = _ON_COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _ON_COMMAND_LINE.reset(token)
