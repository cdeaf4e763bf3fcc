"""The op registry: one entry per op holding its shape rule, ONNX lowering and gradient rule."""
from dslc.ops import elementwise, linalg, loss, nn, random, reduce, shape, sources  # noqa: F401  (registers the ops)
from dslc.ops.registry import REGISTRY, OpDef, Sample, get_op  # noqa: F401
