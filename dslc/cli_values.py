"""What the text of each `dslc` flag's value means: the converters `dslc.cli_args` gives argparse as
`type=`, each raising `argparse.ArgumentTypeError` with what it expected (`positive_int` also serves
the example scripts' counts, examples/bench)."""
from __future__ import annotations

import argparse

from dslc.diagnostics import DataError


def name_value(text: str) -> tuple[str, str]:
    name, eq, value = text.partition("=")
    if not eq or not name.strip():
        raise argparse.ArgumentTypeError(f"expected `name=value`, got `{text}`")
    return name.strip(), value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got `{text}`") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got `{text}`")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got `{text}`")
    return value


def device(text: str) -> str:
    kind, colon, index = text.partition(":")
    if text == "cpu" or (kind == "cuda" and (not colon or index.isdigit())):
        return text
    raise argparse.ArgumentTypeError(f"expected `cpu`, `cuda` or `cuda:N`, got `{text}`")


def dim(text: str) -> tuple[str, int]:
    name, value = name_value(text)
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected `NAME=N` with a positive integer N, got `{text}`")
    return name, int(value)


def compare(text: str) -> tuple[str, ...]:
    from dslc.peers import parse_compare

    try:
        return parse_compare(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def learning_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got `{text}`")
    return value


def early_stopping(text: str) -> str:
    """`--early-stopping`'s settings, checked as the command line is read (the monitored name is checked
    against the run's logs when it starts)."""
    from dslc.runtime.callbacks import EarlyStopping

    return callback_settings(EarlyStopping, text)


def reduce_lr_on_plateau(text: str) -> str:
    """`--reduce-lr-on-plateau`'s settings, checked as `--early-stopping`'s are."""
    from dslc.runtime.plateau import ReduceLROnPlateau

    return callback_settings(ReduceLROnPlateau, text)


def callback_settings(kind, text: str) -> str:
    from dslc.runtime.callbacks import OFF

    if text.strip().lower() in OFF:
        return text
    try:
        kind.parse(text)
    except DataError as e:
        message = e.message.removeprefix(f"{kind.WHAT}: ")
        raise argparse.ArgumentTypeError(message + (f" ({e.hint})" if e.hint else "")) from None
    return text


def class_weights(text: str) -> dict[int, float]:
    """`--class-weight 0=1,1=5` as Keras' `class_weight` dict (checked against the labels when training starts)."""
    weights = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        try:
            weights[int(key)] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected CLASS=WEIGHT pairs separated by commas, such as `0=1,1=5`, "
                                             f"got `{item.strip()}`") from None
    return weights


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got `{text}`")
    return value
