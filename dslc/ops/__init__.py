"""The op registry: one entry per op holding its shape rule, ONNX lowering and gradient rule.
Importing the package imports every op family module, which registers its ops."""
import importlib
import pkgutil

from dslc.ops.registry import REGISTRY, OpDef, Sample, get_op  # noqa: F401

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
