"""Hints for what Keras and PyTorch users write out of habit: their names of layers and losses
(`Conv2D`, `CrossEntropyLoss`), keywords dslc does without (`activation`, `input_shape`), PyTorch's
(in, out) sizes (`linear(20, 10)`) and positional options (`conv1d(1, 25, 5, 2, 1)`). `lower_calls` asks
these when a call goes wrong."""
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
    "reshape": ("Reshape", "view"), "reshape(x, dims...)": ("unsqueeze", "expand_dims"),
    "transpose": ("permute", "Permute"),
    "concat": ("Concatenate", "concatenate", "cat"), "upsample": ("UpSampling2D", "Upsample"),
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


_SAMPLE_WEIGHT = "per-example weights are `sample_weight = w`, `w` a target fed with the data (`target w: f32[B]`)"
_WEIGHTS = {  # a weight keyword the loss does not take -> what it takes
    "cross_entropy": "`cross_entropy` weights classes with `weight = (w_0, w_1, ...)`, one per class (PyTorch's "
                     "`weight`); " + _SAMPLE_WEIGHT,
    "binary_cross_entropy": "`binary_cross_entropy` weights the positive targets with `pos_weight = p` (PyTorch's), "
                            "one number or one per column; " + _SAMPLE_WEIGHT,
}
# Keras and PyTorch keywords of losses -> what dslc's losses do instead
_LOSS_KEYWORDS = {
    "reduction": "a loss is a mean (over the examples, or every position of a sequence); PyTorch's "
                 "`reduction = \"sum\"` is that times their count",
    "from_logits": "the losses take logits (Keras' `from_logits = true`): pass the value before `softmax` or `sigmoid`",
    "ignore_index": "no `ignore_index`: `sample_weight = w` with a 0/1 target `w` of the labels' shape leaves positions "
                    "out of the sum (they still count in the divisor, as Keras' masks with `sum_over_batch_size`)",
    "class_weight": "Keras' `class_weight` is `weight = (w_0, w_1, ...)` here, one per class, a weighted mean "
                    "Σ w_y·loss / Σ w_y (PyTorch's); for Keras' mean over the batch, declare `sample_weight = w` "
                    "(a target) and pass `class_weight=` to `Program.train`",
}


def keyword_hint(fn: str, kw, args: list[Arg], kwargs) -> str:
    """The hint for a Keras or PyTorch keyword with no dslc counterpart (`activation = "relu"`, `input_shape`,
    a loss's `reduction`)."""
    if getattr(BUILTINS.get(fn), "category", "") == "loss":
        if fn == "binary_cross_entropy" and kw.name == "label_smoothing":
            return "smooth the targets as Keras does: `binary_cross_entropy(logits, target * (1 - ε) + ε / 2)`"
        if kw.name in ("weight", "pos_weight", "sample_weight", "weights", "sample_weights"):
            return _WEIGHTS.get(fn, _SAMPLE_WEIGHT if fn == "mse" else "")
        return _LOSS_KEYWORDS.get(kw.name, "")
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


# PyTorch's positional order of the layers whose options dslc takes by name only: (PyTorch's argument,
# dslc's; None for the input size dslc infers)
_CONV = (("in_channels", None), ("out_channels", "filters"), ("kernel_size", "kernel"), ("stride", "stride"),
         ("padding", "padding"), ("dilation", "dilation"), ("groups", "groups"), ("bias", "bias"))
_CONV_TRANSPOSE = _CONV[:5] + (("output_padding", "output_padding"), ("groups", "groups"), ("bias", "bias"),
                               ("dilation", "dilation"))
_POOL = (("kernel_size", "kernel"), ("stride", "stride"), ("padding", "padding"))
_LINEAR = (("in_features", None), ("out_features", "units"), ("bias", "bias"))
_RECURRENT = (("input_size", None), ("hidden_size", "units"), ("num_layers", "layers"))
_TORCH_ORDER = {
    "conv1d": ("Conv1d", _CONV), "conv2d": ("Conv2d", _CONV),
    "conv_transpose1d": ("ConvTranspose1d", _CONV_TRANSPOSE), "conv_transpose2d": ("ConvTranspose2d", _CONV_TRANSPOSE),
    "max_pool1d": ("MaxPool1d", _POOL), "max_pool2d": ("MaxPool2d", _POOL),
    "avg_pool1d": ("AvgPool1d", _POOL), "avg_pool2d": ("AvgPool2d", _POOL),
    "dense": ("Linear", _LINEAR), "linear": ("Linear", _LINEAR),
    "batch_norm": ("BatchNorm1d", (("num_features", None), ("eps", "eps"), ("momentum", "momentum"))),
    "layer_norm": ("LayerNorm", (("normalized_shape", None), ("eps", "eps"))),
    "rnn": ("RNN", _RECURRENT), "gru": ("GRU", _RECURRENT), "lstm": ("LSTM", _RECURRENT),
}


def positional_hint(fn: str, params: list[inspect.Parameter], args: list[Arg]) -> str:
    """For too many positional arguments to a layer whose options are keyword-only (`conv1d(1, 25, 5, 2, 1)`):
    the call with the options named, read in dslc's order and, where it differs, in PyTorch's; or empty."""
    options = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
    positional = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    if not options or not positional:
        return ""
    inputs = next((i for i, p in enumerate(positional) if p.annotation != "Tensor"), len(positional))
    text = lambda arg: arg.span.source.text[arg.span.start:arg.span.end]  # noqa: E731
    shown = [text(a) for a in args[:inputs] if not a.evaluated]  # the piped input is not written
    written = [text(a) for a in args[inputs:]]
    names = [p.name for p in positional[inputs:]]
    extra = written[len(names):]
    if len(extra) > len(options):
        return ""
    kinds = {p.name: p.annotation for p in params}
    ours = f"`{fn}({', '.join(shown + written[:len(names)] + [f'{k} = {v}' for k, v in zip(options, extra)])})`"
    # read in dslc's order only where the extra values land on numeric options (`dense(20, 10)`: not `bias = 10`)
    numeric = all(kinds[k] not in ("bool", "str", "Init") for k in options[:len(extra)])
    hint = f"`{fn}` takes its options by name: {ours}" if numeric else ""
    torch_name, order = _TORCH_ORDER.get(fn, ("", ()))
    if len(written) > len(order):
        return hint
    parts, inferred = list(shown), []
    for (torch_arg, dslc_arg), value, arg in zip(order, written, args[inputs:]):
        if isinstance(arg.expr, ast.Tuple) and kinds.get(dslc_arg) not in ("Size", "Padding", "Stride"):
            return hint  # `dense(10, (3, 3))` is no PyTorch call
        if dslc_arg is None:
            inferred.append(torch_arg)
        else:
            parts.append(value if dslc_arg in names else f"{dslc_arg} = {value}")
    call = f"`{fn}({', '.join(parts)})`"
    if call == ours:
        return hint
    torch_call = f"`{torch_name}({', '.join(t for t, _ in order[:len(written)])})`"
    return (f"{hint or f'`{fn}` takes its options by name'}; in PyTorch's order, {torch_call}, this is {call}"
            + (f" (dslc infers `{inferred[0]}` from the input)" if inferred else ""))

