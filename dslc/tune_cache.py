"""The measurements of `--tune` kept per machine, next to the compile cache (`compile_cache.cache_dir()`,
folder `tune/`), so that tuning a shape measured before costs nothing.

A machine is its CPU model, the onnxruntime version and the intra-op thread count: the choices of one do
not carry over to another (the six conv shapes behind the fixed rule were measured on one machine). One
JSON file per machine maps each shape (`ops.registry.formulation_key` of the concrete shapes) to the
medians measured and the formulation chosen (`shapes`), and each training step checked (a hash of its
graph) to the step's medians with the rule's and with the probe's choice of each shape (`steps`). `DSLC_NO_CACHE=1` turns it off with the compile cache;
like it, it is only an optimization: an unreadable or unwritable file means measuring again.
"""
from __future__ import annotations

import hashlib
import json
import math
import platform
from importlib import metadata
from pathlib import Path

FORMAT = "dslc-tune-cache/1"
KEEP_SHAPES, KEEP_STEPS = 512, 128  # per machine, the most recently measured (a shape's entry is ~0.3 kB)


def machine(threads: int) -> dict:
    """What the measurements hold for: the CPU model, onnxruntime's version and the thread count."""
    try:
        version = metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        version = "none"
    return {"cpu": cpu_model(), "onnxruntime": version, "threads": threads}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _file(setting: dict) -> Path | None:
    from dslc.compile_cache import cache_dir

    root = cache_dir()
    if root is None:
        return None
    digest = hashlib.blake2b(json.dumps(setting, sort_keys=True, allow_nan=False).encode(), digest_size=12).hexdigest()
    return root / "tune" / f"{digest}.json"


def load(setting: dict) -> dict[str, dict]:
    """What was measured on this machine: `shapes` (key -> {"median_ms": {formulation: ms}, "choice":
    name}) and `steps` (step hash -> {shape: {"rule": ms, formulation: ms}})."""
    path = _file(setting)
    try:
        record = json.loads(path.read_text(encoding="utf-8")) if path is not None else {}
        if record.get("format") == FORMAT and record.get("machine") == setting:
            return {"shapes": {k: v for k, v in dict(record["shapes"]).items() if _is_probe(v)},
                    "steps": {k: v for k, v in dict(record["steps"]).items() if _is_step(v)}}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return {"shapes": {}, "steps": {}}


def _is_probe(entry) -> bool:
    """A shape's record as `store` writes it (a damaged or hand-edited one is measured again)."""
    return (isinstance(entry, dict) and isinstance(entry.get("median_ms"), dict) and entry["median_ms"]
            and all(_is_ms(ms) for ms in entry["median_ms"].values()) and entry.get("choice") in entry["median_ms"])


def _is_step(entry) -> bool:
    """A step's record: for each shape, the step's medians with the rule's and the probe's choice."""
    return isinstance(entry, dict) and all(
        isinstance(times, dict) and _is_ms(times.get("rule")) and len(times) >= 2
        and all(_is_ms(ms) for name, ms in times.items() if name != "disturbed") for times in entry.values())


def _is_ms(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def store(setting: dict, shapes: dict[str, dict], steps: dict[str, dict]) -> None:
    """Add `shapes` and `steps` to this machine's file; failures to write are ignored."""
    from dslc.diagnostics import DataError
    from dslc.fsutil import atomic_write_text

    path = _file(setting)
    if path is None or not (shapes or steps):
        return
    known = load(setting)
    record = {"format": FORMAT, "machine": setting, "shapes": _newest(known["shapes"], shapes, KEEP_SHAPES),
              "steps": _newest(known["steps"], steps, KEEP_STEPS)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(record, indent=1, allow_nan=False) + "\n", durable=False)
    except (OSError, DataError):
        pass


def _newest(known: dict, new: dict, keep: int) -> dict:
    """`known` updated with `new`, the entries stored last at the end, the `keep` last ones kept."""
    merged = {k: v for k, v in known.items() if k not in new} | new
    return dict(list(merged.items())[-keep:])


def still_chosen(tuning: dict | None) -> bool:
    """Whether the choices a manifest records (its `tuning` key) are what this machine's measurements
    choose now: a compiled program cached with them is still the one `--tune` would build."""
    if not tuning:
        return False
    known = load(machine(tuning["threads"]))
    return all(known["shapes"].get(c["shape"], {}).get("choice") == c["probe"]
               and ("step" not in c or known["steps"].get(c["step"], {}).get(c["shape"]) == c["step_ms"])
               for c in tuning["choices"] if c["median_ms"])
