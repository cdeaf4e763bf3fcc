"""Hints for what Keras and PyTorch users write out of habit: their names of layers and losses
(`Conv2D`, `CrossEntropyLoss`), keywords dslc does without (`activation`, `input_shape`), and PyTorch's
(in, out) sizes (`linear(20, 10)`). `lower_calls` asks these when a call goes wrong."""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from dslc.builtins import BUILTINS
from dslc.frontend import ast

if TYPE_CHECKING:
    from dslc.lower_calls import Arg


# Keras and PyTorch names of layers and losses -> dslc's (the first word of the text is the builtin)
_RENAMED = {
    "batch_norm": ("BatchNormalization", "BatchNorm1d", "BatchNorm2d"),
    "max_pool1d": ("MaxPooling1D", "MaxPool1d"), "max_pool2d": ("MaxPooling2D", "MaxPool2d"),
    "avg_pool1d": ("AveragePooling1D", "AvgPool1d"), "avg_pool2d": ("AveragePooling2D", "AvgPool2d"),
    "global_avg_pool": ("GlobalAveragePooling1D", "GlobalAveragePooling2D", "AdaptiveAvgPool2d"),
    "global_max_pool": ("GlobalMaxPooling1D", "GlobalMaxPooling2D", "AdaptiveMaxPool2d"),
    "conv1d": ("Conv1D", "Conv1d"), "conv2d": ("Conv2D", "Conv2d"),
    "conv_transpose1d": ("Conv1DTranspose", "ConvTranspose1d"),
    "conv_transpose2d": ("Conv2DTranspose", "ConvTranspose2d"),
    "dense": ("Dense",), "linear": ("Linear",), "dropout": ("Dropout",), "flatten": ("Flatten",),
    "reshape": ("Reshape",), "concat": ("Concatenate", "concatenate", "cat"), "upsample": ("UpSampling2D", "Upsample"),
    "embedding": ("Embedding",), "lstm": ("LSTM",), "gru": ("GRU",), "rnn": ("SimpleRNN", "RNN"),
    "layer_norm": ("LayerNormalization", "LayerNorm"), "attention": ("MultiHeadAttention", "MultiheadAttention"),
    "relu": ("ReLU",), "sigmoid": ("Sigmoid",), "tanh": ("Tanh",), "gelu": ("GELU",), "softmax": ("Softmax",),
    "log_softmax": ("LogSoftmax",), "leaky_relu": ("LeakyReLU",),
    "cross_entropy(logits, labels)": ("categorical_crossentropy", "sparse_categorical_crossentropy",
                                      "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "CrossEntropyLoss"),
    "binary_cross_entropy(logits, labels)": ("binary_crossentropy", "BinaryCrossentropy", "BCEWithLogitsLoss",
                                             "BCELoss"),
    "mse(prediction, target)": ("mean_squared_error", "MeanSquaredError", "MSELoss", "mse_loss"),
}
FOREIGN_NAMES = {foreign: ours for ours, names in _RENAMED.items() for foreign in names}
_ORDER = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}


def foreign_hint(func: str, names) -> str:
    """The hint for a Keras or PyTorch name of a dslc builtin (`Conv2D`, `CrossEntropyLoss`), or empty."""
    ours = FOREIGN_NAMES.get(func)
    if ours is None or ours.split("(")[0] not in names:
        return ""
    name = ours.split("(")[0]
    if name in _ORDER:
        return (f"dslc's name for it is `{ours}`: the logits (the values before `{_ORDER[name]}`) come first, "
                "then the labels")
    return f"dslc's name for it is `{ours}`"


_SHAPE_KEYWORDS = ("input_shape", "input_dim", "batch_input_shape", "input_size", "in_features", "in_channels")


def keyword_hint(fn: str, kw, args: list[Arg], kwargs) -> str:
    """The hint for a Keras or PyTorch keyword with no dslc counterpart (`activation = "relu"`, `input_shape`)."""
    if kw.name in _SHAPE_KEYWORDS:
        return "shapes come from the `input` declaration and are inferred from there"
    if kw.name == "activation":
        text = lambda span: span.source.text[span.start:span.end]
        rest = [text(a.span) for a in args if not a.evaluated] + [text(k.span) for k in kwargs if k is not kw]
        step = kw.value.value if isinstance(kw.value, ast.String) else ""
        if step == "linear":
            return "a layer has no activation unless one follows it as a step: drop `activation`"
        known = getattr(BUILTINS.get(step), "category", "") == "activation"
        pipe = "|> " if args and args[0].evaluated else ""
        return f"activations are separate steps: `{pipe}{fn}({', '.join(rest)}) |> {step if known else 'relu'}`"
    return ""


def inferred_size_hint(fn: str, params: list[inspect.Parameter], p: inspect.Parameter, bound: dict, args: list[Arg],
                       env) -> str:
    """`linear(20, 10)`, PyTorch's (in, out): a number given positionally for a flag or a string that follows
    a size argument (itself positional, the first after the input) is the output size, the input size is inferred."""
    arg = bound.get(p.name)
    if p.annotation not in ("bool", "str") or arg not in args:  # given positionally
        return ""
    index = params.index(p)
    size = params[index - 1] if index >= 2 else None
    if size is None or size.annotation != "int" or params[index - 2].annotation != "Tensor" or bound.get(size.name) not in args:
        return ""
    if isinstance(arg.expr, ast.Number):
        value = arg.expr.value
    elif isinstance(arg.expr, ast.Name):
        value = env.get(arg.expr.id)
    else:
        return ""
    if isinstance(value, bool) or not isinstance(value, int):
        return ""
    return f"the input size is inferred from the input: write `{fn}({value})`"
