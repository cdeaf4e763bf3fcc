"""The size limits of a compiled graph, checked while lowering and before the work they bound, so that
any input compiles or fails within seconds and bounded memory (grammar/LANGUAGE.md, "Limits").

- `MAX_OPERATIONS`: operations in one graph's forward pass (the training graph adds the backward pass
  and the optimizer, about three times as many). A `dense |> relu` is 4; a 1,000-layer MLP is 4,000
  and compiles in about 5 s on one core. Each repetition of `repeat` counts one more, so that a
  repeated body that makes nothing is bounded too.
- `MAX_RECURRENT_STEPS`: time steps of the recurrent layers (`rnn`, `gru`, `lstm`) in one graph,
  counting each layer and direction: T × layers × directions, summed. The recurrence is unrolled into
  ~15 ONNX operations per step forward and ~10 more backward (ONNX defines no gradient of its RNN ops).
"""
from __future__ import annotations

from dslc.diagnostics import error
from dslc.ir.graph import next_node_id
from dslc.source import Span

MAX_OPERATIONS = 10_000
MAX_RECURRENT_STEPS = 2_048


class Budget:
    """What one lowering has spent of the limits: the nodes it made (read from the node ids), the
    repetitions of `repeat` and the recurrent steps."""

    def __init__(self):
        self.first_id = next_node_id()
        self.peeks = 0  # each reading of the node ids uses one up
        self.repetitions = 0
        self.recurrent_steps = 0

    def operations(self) -> int:
        self.peeks += 1
        return next_node_id() - self.first_id - self.peeks + self.repetitions

    def check(self, span: Span, what: str = "this") -> None:
        """Raises at `span` once the graph has more than `MAX_OPERATIONS` operations."""
        if self.operations() > MAX_OPERATIONS:
            raise error(f"the graph has more than {MAX_OPERATIONS:,} operations at {what}", span,
                        hint="the limit keeps compiling fast (a `dense` with an activation is 4 operations): "
                             "make the model smaller")

    def repeat(self, count: int, span: Span) -> None:
        """Before a `repeat(count)`: raises at `span` when it cannot fit in the limit."""
        if count > MAX_OPERATIONS:
            raise error(f"`repeat({count})` repeats more than the {MAX_OPERATIONS:,} operations a graph may have",
                        span, hint="a graph is limited to this many operations so that compiling stays fast")

    def repetition(self, span: Span) -> None:
        self.repetitions += 1
        self.check(span, "this `repeat`")

    def recurrent(self, steps: int, span: Span, cell: str) -> None:
        """Before a recurrent layer unrolls `steps` (T × layers × directions)."""
        self.recurrent_steps += steps
        if self.recurrent_steps > MAX_RECURRENT_STEPS:
            before = self.recurrent_steps - steps
            others = f" ({before:,} before it)" if before else ""
            raise error(f"`{cell}` unrolls {steps:,} time steps (sequence length × layers × directions){others}; "
                        f"a graph may have at most {MAX_RECURRENT_STEPS:,}", span,
                        hint="the recurrence is unrolled step by step: shorten the sequences (split them into "
                             "chunks), or use fewer layers")
