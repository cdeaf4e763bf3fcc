"""The `Context` builtins are called with (`ctx`, made by `dslc.lower.Lowering`): the IR builder, the
mode, parameter and buffer creation, and errors and warnings at the call's arguments."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from dslc.diagnostics import Diagnostic, DslcError, warning
from dslc.initializers import Initializer
from dslc.ir.graph import Builder, Node
from dslc.source import Span


class Context:
    """What builtins see: the builder, the mode, parameter creation, and errors at their arguments."""

    def __init__(self, lowering):
        self._l = lowering
        self.b = Builder()
        self._arg_spans: dict = {}
        self._call_span: Span | None = None
        self._made: dict[str, dict[str, str]] = {}  # layer -> {parameter: initializer} made by this call
        self.warnings: list[Diagnostic] = []  # of this lowering, in the order found (`warn`)
        self._multi_label: dict[int, str] = {}  # targets `binary_cross_entropy` scores column by column
        self._one_class_rows: list[tuple] = []  # (target, metric, span, scores' text): an arg-max of float rows

    @property
    def mode(self) -> str:
        return self._l.mode

    @property
    def float_dtype(self) -> str:
        return self._l.float_dtype

    @property
    def pinned_sizes(self) -> set[int]:
        """The sizes `--dim` pinned symbolic dimensions to (`{64}` for `--dim B=64`): an axis of such a size
        is taken as the symbol it replaced, so that a static build means what the symbolic one does."""
        return set(self._l.dims.values())

    @property
    def params(self) -> list[Node]:
        return self._l.result.params

    def param_kind(self, p: Node) -> str:
        return self._l.result.param_kinds[p.name]

    def fail(self, message: str, arg=None, label: str = "", hint: str = ""):
        span = self._arg_spans.get(arg, self._call_span) if arg is not None else self._call_span
        raise DslcError(Diagnostic(message, span, label, hint))

    def arg_span(self, arg) -> Span | None:
        """The span of argument `arg` (its name or index), or the call's."""
        return self._arg_spans.get(arg, self._call_span)

    def arg_text(self, arg) -> str:
        """The source text of argument `arg` (its name or index), as written."""
        span = self.arg_span(arg)
        return span.source.text[span.start:span.end]

    def written(self, arg) -> str | None:
        """The source text of argument `arg` when the call gives it so (by that name or index), else None."""
        span = self._arg_spans.get(arg)
        return None if span is None else span.source.text[span.start:span.end]

    def warn(self, message: str, arg=None, label: str = "", hint: str = "", notes=()) -> None:
        """Report a likely mistake that still compiles (`Program.warnings`), at `arg` like `fail`."""
        span = self.arg_span(arg) if arg is not None else self._call_span
        self.warnings.append(replace(warning(message, span, label, hint), notes=tuple(notes)))

    def new_layer(self, kind: str, name: str | None = None) -> str:
        layer = self._l.new_layer(kind, name, self._call_span, self._arg_spans.get("name"))
        self._made[layer] = {}
        return layer

    def param(self, layer: str, local: str, shape, init: Initializer, kind: str, fan_in: int, fan_out: int) -> Node:
        self._made.setdefault(layer, {})[local] = str(init)
        return self._l.new_param(f"{layer}.{local}", tuple(shape), init, kind, fan_in, fan_out, self._call_span)

    def buffer(self, layer: str, local: str, value: np.ndarray) -> Node:
        """A non-trainable tensor carried between steps (e.g. batch-norm running statistics)."""
        return self._l.new_buffer(f"{layer}.{local}", np.asarray(value), self._call_span)

    def update_buffer(self, buffer: Node, next_value: Node) -> None:
        """In training, the step's new value of `buffer` (ignored in evaluation and inference)."""
        if self.mode == "train":
            self._l.result.buffer_updates[buffer.name] = next_value

    def seed_input(self) -> Node:
        return self._l.seed_input()

    def recurrent_steps(self, steps: int, cell: str) -> None:
        """Before a recurrent layer unrolls `steps` time steps (T × layers × directions): `dslc.limits`."""
        self._l.budget.recurrent(steps, self._call_span, cell)

    def next_salt(self) -> int:
        self._l.salt += 1
        return self._l.salt

    def note_classes(self, value: Node, classes) -> None:
        """Record that integer input or target `value` holds indices below `classes` (class labels,
        token ids), so that the data loader rejects values out of range with a clear message."""
        if value.op == "input" and value.role in ("target", "data") and isinstance(classes, int):
            self._l.result.target_classes[value.name] = classes

    def note_metric(self, value: Node, /, **aggregate) -> Node:
        """Record how a driver aggregates metric `value` over batches (`reduce = "sum"`: add the batch
        values, then compute `value` from the sum); returns `value`. Scalar metrics without a note are
        batch means."""
        self._l.result.metric_aggregates[value.id] = aggregate
        return value

    def note_multi_label(self, target: Node) -> None:
        """`target` is scored as independent 0/1 labels (a sigmoid per column)."""
        if target.type.rank >= 2 and target.type.shape[-1] != 1:
            self._multi_label[target.id] = self.arg_text("target")

    def note_one_class_per_row(self, target: Node, fn: str, reads: str = "takes the arg-max of each row of",
                               hint: str = "") -> None:
        """Metric `fn` takes the arg-max of each row of float `target` (one class per example); `reads`
        and `hint` say so in the warning when the loss scores its columns as labels."""
        self._one_class_rows.append((target, fn, self.arg_span("target"), self.arg_text("scores"), reads, hint))

    def scored_as_labels(self, target: Node) -> bool:
        """Whether `binary_cross_entropy` (written before) scores the columns of `target` as labels."""
        return target.id in self._multi_label

    def warn_multi_label_argmax(self) -> None:
        """After the training statements: a metric that reads one class per row from the target that
        `binary_cross_entropy` scores label by label counts a multi-label example right when its highest
        score is its first positive label — Keras's `accuracy` with that loss compares every label."""
        for target, fn, span, scores, reads, own_hint in self._one_class_rows:
            if target.id not in self._multi_label:
                continue
            labels, k = self._multi_label[target.id], target.type.shape[-1]
            hint = "with one class per example, train with `cross_entropy`"
            if own_hint:
                hint = f"{own_hint}; {hint}"
            elif target.type.rank == 2:
                hint = (f"to score every label on its own (Keras's `binary_accuracy`), give one label per row: "
                        f"`{fn}(reshape({scores}, {k}, 1), reshape({labels}, {k}, 1))`; " + hint)
            self.warnings.append(warning(
                f"`{fn}` {reads} `{labels}` (one class per example), but the loss "
                f"`binary_cross_entropy` scores its {k} columns as labels of their own", span,
                "read as one class per row", hint))

    def note_sample_weight(self, value: Node, target: Node | None) -> None:
        """Record that input or target `value` holds the per-example weights of a loss of `target` (its
        labels), so that the loader rejects negative weights and `class_weight=` knows the labels."""
        if value.op == "input" and value.role in ("target", "data"):
            labels = target.name if target is not None and target.op == "input" else None
            self._l.result.sample_weights[value.name] = labels

    def note_range(self, value: Node, lo: float, hi: float) -> None:
        """Record that input or target `value` holds values in [lo, hi] (probabilities), so that the
        data loader rejects values outside it with a clear message."""
        if value.op == "input" and value.role in ("target", "data"):
            self._l.result.target_ranges[value.name] = (lo, hi)


# functions that, given only numbers, are computed when the model is built: `uniform(low = -1 / sqrt(40))`
