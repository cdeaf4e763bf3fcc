"""Layers and functions callable from `.dl` files, one module per family; importing the package
registers every builtin in `dslc.builtins.BUILTINS`."""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
