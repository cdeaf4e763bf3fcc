"""Compiled programs kept between commands, so that `dslc train`, `predict`, `evaluate`, `export` and
`build` of a model compiled before read its graphs and manifest instead of compiling it again.

Compiling costs what the command waits for before its first step: the ONNX package alone takes 0.15–0.19 s
to import here (0.7–1.4 s with `ml_dtypes` 0.7), the LALR tables ~0.2 s, lowering and emitting the rest. A hit
imports neither onnx nor lark: the entry's files are the program's graphs (bytes) and its manifest (JSON),
and the init graph is read by `dslc.emit.weights.read_init_graph` without onnx.

An entry is keyed by the model file's resolved path, the compile options (`-D`, `--dtype`, `--seed`,
`--freeze`, `--split`, `--dim`, `--tune` with the machine, thread count and batch it tunes for) and the
dslc installation (its version and the size and
modification time of every file of the package and the grammar); it records the text of every `.dl` file
the compile read (the model and its imports) and is used only while each of them still holds that text
and, with `--tune`, while this machine's measurements (`dslc.tune_cache`) still make the choices its
manifest records.
Programs with warnings are not kept (their diagnostics point into the source), nor programs whose graphs
are larger than `MAX_ENTRY_BYTES`, nor compiles with `--import-path` (see `entry_key`). At most `MAX_ENTRIES` entries are kept, the least recently used
dropped first.

Where: `$DSLC_CACHE_DIR`, else `$XDG_CACHE_HOME/dslc`, else `~/.cache/dslc`. `DSLC_NO_CACHE=1` turns the
cache off. It is only ever an optimization: an unreadable, damaged or unwritable cache compiles as usual.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

FORMAT = "dslc-compile-cache/1"
MAX_ENTRIES = 32
MAX_ENTRY_BYTES = 64 << 20
ENTRY_FILE = "entry.json"
MANIFEST_FILE = "manifest.json"


def cache_dir() -> Path | None:
    """The cache folder, or None when the cache is off."""
    if os.environ.get("DSLC_NO_CACHE", "") not in ("", "0"):
        return None
    if os.environ.get("DSLC_CACHE_DIR"):
        return Path(os.environ["DSLC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dslc"


def compile_cached(path: str | os.PathLike, **options):
    """`compiler.compile_file(path, **options)`, or the program an earlier call with the same file
    texts, options and dslc installation compiled."""
    root = cache_dir()
    key = entry_key(path, options) if root is not None else None
    program = _load(root / key, path) if key is not None else None
    if program is not None and options.get("tune") is not None:
        from dslc.tune_cache import still_chosen

        program = program if still_chosen(program.manifest.get("tuning")) else None
    if program is not None:
        program.defines = dict(options.get("defines") or {})  # part of the key, not of the entry
        return program
    from dslc.compiler import compile_file

    program = compile_file(path, **options)
    if key is not None:
        _store(root, key, program)
    return program


def entry_key(path: str | os.PathLike, options: dict) -> str | None:
    """The entry's name: a hash of the resolved model path, the options and the installation; None for
    options that ask for more than graphs and manifest (`text`, `print_ir_after`), and with an
    `import_path`: an import found in one of its folders would be shadowed by a file of that name
    created later in the importing file's folder, which the recorded file texts cannot tell."""
    if options.get("text") is not None or options.get("print_ir_after") or options.get("import_path"):
        return None
    try:
        model = str(Path(path).resolve())
    except OSError:
        return None
    setting = {
        "format": FORMAT, "model": model, "installation": _installation(),
        "defines": sorted((options.get("defines") or {}).items()), "dtype": options.get("dtype", "float32"),
        "seed": options.get("seed", 0), "freeze": list(options.get("freeze", ())),
        "split": bool(options.get("split", False)), "dims": sorted((options.get("dims") or {}).items()),
        "tune": options["tune"].key() if options.get("tune") is not None else None,
    }
    return hashlib.blake2b(json.dumps(setting, allow_nan=False).encode(), digest_size=16).hexdigest()


def _installation() -> list:
    """dslc's version and (name, size, mtime) of every file of the package and of the grammar: a changed
    dslc (an editable install being worked on, say) compiles differently."""
    from dslc import __version__

    package = Path(__file__).parent
    folders = [package, package.parent / "grammar"]
    files = []
    for folder in folders:
        for directory, subdirs, names in os.walk(folder):
            subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
            # one `relpath` per folder: one per file was half of the key's 1.3 ms, before the sessions can start
            inside = os.path.relpath(directory, package)
            for name in sorted(names):
                if name.endswith((".py", ".lark")):
                    info = os.stat(os.path.join(directory, name))
                    files.append([name if inside == "." else os.path.join(inside, name), info.st_size,
                                  info.st_mtime_ns])
    return [__version__, files]


def _text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def _file_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _source_hash(path: str) -> str | None:
    """The hash of a `.dl` file's text as the compiler reads it (UTF-8, without a byte-order mark)."""
    from dslc.source import BOM, read_source_bytes

    try:
        return _text_hash(read_source_bytes(path).decode("utf-8").removeprefix(BOM))
    except (OSError, UnicodeDecodeError):
        return None


def _load(entry: Path, path):
    """The cached program, or None (no entry, a source changed, or a damaged entry)."""
    try:
        record = json.loads((entry / ENTRY_FILE).read_text(encoding="utf-8"))
        if record.get("format") != FORMAT:
            return None
        if any(_source_hash(source) != digest for source, digest in record["sources"]):
            return None
        manifest_bytes = (entry / MANIFEST_FILE).read_bytes()
        graphs = {}
        for key, (file, digest) in record["graphs"].items():
            graphs[key] = (entry / file).read_bytes()
            if _file_hash(graphs[key]) != digest:
                return None
        if _file_hash(manifest_bytes) != record["manifest"]:
            return None
        manifest = json.loads(manifest_bytes)
        os.utime(entry / ENTRY_FILE)  # its modification time orders the entries for eviction
    except (OSError, ValueError, KeyError, TypeError):
        return None
    from dslc.program import Program

    return Program(name=manifest["model"], manifest=manifest, graphs=graphs, source_path=str(path))


def _store(root: Path, key: str, program) -> None:
    """Keep `program` under `key` if it may be kept; failures to write are ignored."""
    sources = program.extras.get("sources")
    if program.warnings or not sources or sum(map(len, program.graphs.values())) > MAX_ENTRY_BYTES:
        return
    staging = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        manifest_bytes = json.dumps(program.manifest, allow_nan=False).encode("utf-8")
        graphs = {}
        for key_, data in program.graphs.items():
            file = f"{key_}.onnx"
            (staging / file).write_bytes(data)
            graphs[key_] = [file, _file_hash(data)]
        (staging / MANIFEST_FILE).write_bytes(manifest_bytes)
        record = {"format": FORMAT, "sources": [[p, _text_hash(t)] for p, t in sources], "graphs": graphs,
                  "manifest": _file_hash(manifest_bytes)}
        (staging / ENTRY_FILE).write_text(json.dumps(record, allow_nan=False), encoding="utf-8")  # last: it marks a whole entry
        target = root / key
        if target.exists():  # a stale entry (a source changed since): replaced
            shutil.rmtree(target, ignore_errors=True)
        os.rename(staging, target)
        staging = None
        _evict(root)
    except OSError:
        pass
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _evict(root: Path) -> None:
    """Drop the least recently used entries beyond `MAX_ENTRIES`."""
    entries = []
    for entry in root.iterdir():
        try:
            entries.append(((entry / ENTRY_FILE).stat().st_mtime_ns, entry))
        except OSError:
            continue
    for _, entry in sorted(entries, reverse=True)[MAX_ENTRIES:]:
        shutil.rmtree(entry, ignore_errors=True)
