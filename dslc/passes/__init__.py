"""The pass pipeline: named `Graph -> Graph` functions, the IR verified after each."""
from __future__ import annotations

from typing import Callable

from dslc.ir.graph import Graph
from dslc.ir.printer import print_graph
from dslc.ir.verify import verify
from dslc.passes.autodiff import autodiff
from dslc.passes.fold_lookup import fold_lookup
from dslc.passes.fold_norm import fold_norm
from dslc.passes.fuse import fuse
from dslc.passes.infer_shapes import infer_shapes
from dslc.passes.lower_optimizer import lower_optimizer
from dslc.passes.phases import phases
from dslc.passes.reorder import reorder
from dslc.passes.simplify import simplify
from dslc.passes.split import gradient_inputs, name_gradients

Pass = Callable[[Graph], Graph]

# per graph kind, in order; `lower` (AST -> IR) runs before and `emit` (IR -> ONNX) after
PIPELINES: dict[str, tuple[tuple[str, Pass], ...]] = {
    "infer": (("infer_shapes", infer_shapes), ("fold_norm", fold_norm), ("fold_lookup", fold_lookup), ("reorder", reorder), ("simplify", simplify),
              ("fuse", fuse)),
    "eval": (("infer_shapes", infer_shapes), ("fold_norm", fold_norm), ("fold_lookup", fold_lookup), ("reorder", reorder), ("simplify", simplify),
             ("fuse", fuse)),
    "train": (("infer_shapes", infer_shapes), ("fold_norm", fold_norm), ("fold_lookup", fold_lookup), ("reorder", reorder), ("phases", phases),
              ("autodiff", autodiff), ("lower_optimizer", lower_optimizer), ("simplify", simplify), ("fuse", fuse)),
    # `dslc build --split`: the training step cut at the gradients (see passes/split.py)
    "grad": (("infer_shapes", infer_shapes), ("fold_norm", fold_norm), ("fold_lookup", fold_lookup), ("reorder", reorder), ("phases", phases),
             ("autodiff", autodiff), ("name_gradients", name_gradients), ("simplify", simplify), ("fuse", fuse)),
    "apply": (("gradient_inputs", gradient_inputs), ("lower_optimizer", lower_optimizer), ("simplify", simplify),
              ("fuse", fuse)),
}
PASS_NAMES = ("lower", "infer_shapes", "fold_norm", "fold_lookup", "reorder", "phases", "autodiff", "name_gradients",
              "gradient_inputs", "lower_optimizer", "simplify", "fuse")


def run(graph: Graph, kind: str, print_after: str | None = None, printed: list[str] | None = None) -> Graph:
    """Run the pipeline of `kind` over `graph`; with `print_after`, append the IR text after that pass
    to `printed`."""
    verify(graph, after="lower")
    if print_after == "lower" and printed is not None:
        printed.append(print_graph(graph))
    for name, fn in PIPELINES[kind]:
        graph = fn(graph)
        verify(graph, after=name)
        if print_after == name and printed is not None:
            printed.append(print_graph(graph))
    return graph
