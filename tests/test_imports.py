"""What `import` (and the model file itself) may read: `.dl` files inside the project root (the model
file's folder) or an `--import-path` folder, regular files of at most `MAX_SOURCE_BYTES`; anything else is
a positioned diagnostic (imports, exit 1) or a file error (the model file, exit 3) — never a read of the
file, never a wait on a FIFO. The fixed-text cases are golden files (tests/diagnostics/import_*.dl)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import dslc
from dslc import cli
from dslc.compiler import compile_file
from dslc.diagnostics import DataError, DslcError
from dslc.source import MAX_SOURCE_BYTES
from golden import ROOT

MODEL = "model m {\n    input x: f32[B, 4]\n    output y = x |> block_of_lib\n}\n"
LIB = "block block_of_lib(x) {\n    return x |> relu\n}\n"


def write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def failure(path, **kw) -> str:
    """`line:col: message` of the one diagnostic compiling `path` gives."""
    with pytest.raises(DslcError) as info:
        compile_file(path, **kw)
    [d] = info.value.diagnostics
    return f"{d.span.line}:{d.span.col}: {d.message}"


def test_imports_in_subfolders_and_up_to_the_root_are_read(tmp_path):
    write(tmp_path / "blocks" / "lib.dl", LIB)
    write(tmp_path / "blocks" / "uses_sibling.dl", 'import "../blocks/lib.dl"\n')
    model = write(tmp_path / "m.dl", 'import "blocks/uses_sibling.dl"\n' + MODEL)
    assert compile_file(model).name == "m"


def test_a_link_out_of_the_project_is_refused_without_reading(tmp_path):
    secret = write(tmp_path / "secret" / "key.dl", "SECRET-TOKEN-123\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "lib.dl").symlink_to(secret)
    model = write(project / "m.dl", 'import "lib.dl"\n' + MODEL)
    assert failure(model) == "1:1: the import path `lib.dl` leads outside the project folder"
    with pytest.raises(DslcError) as info:
        compile_file(model)
    assert "SECRET" not in str(info.value)


def test_import_path_folders_are_searched_after_the_importing_files_folder(tmp_path, capsys):
    lib = write(tmp_path / "shared" / "lib.dl", LIB)
    model = write(tmp_path / "project" / "m.dl", 'import "lib.dl"\n' + MODEL)
    assert failure(model) == "1:1: cannot find the imported file `lib.dl`"
    assert compile_file(model, import_path=[lib.parent]).name == "m"
    assert dslc.compile(model, import_path=lib.parent).name == "m"
    # `..` into an --import-path folder is inside it
    dotted = write(tmp_path / "project" / "dotted.dl", 'import "../shared/lib.dl"\n' + MODEL)
    assert failure(dotted) == "1:1: the import path `../shared/lib.dl` leads outside the project folder"
    assert compile_file(dotted, import_path=[lib.parent]).name == "m"
    assert cli.main(["check", str(model), "--import-path", str(lib.parent)]) == 0
    capsys.readouterr()
    assert cli.main(["check", str(model), "--import-path", str(tmp_path / "nowhere")]) == 3
    assert "is not a folder" in capsys.readouterr().err


def test_an_import_path_that_is_no_folder_is_a_data_error(tmp_path):
    model = write(tmp_path / "m.dl", MODEL.replace("block_of_lib", "relu"))
    with pytest.raises(DataError, match="is not a folder"):
        dslc.compile(model, import_path=[tmp_path / "nowhere"])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_is_refused_at_once_as_import_and_as_model(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.dl")
    model = write(tmp_path / "m.dl", 'import "pipe.dl"\n' + MODEL)
    started = time.monotonic()
    assert failure(model) == "1:1: cannot read the imported file `pipe.dl`: not a regular file (a FIFO)"
    assert cli.main(["check", str(tmp_path / "pipe.dl")]) == 3
    assert "not a regular file (a FIFO)" in capsys.readouterr().err
    with pytest.raises(DataError, match="not a regular file"):
        dslc.compile(tmp_path / "pipe.dl")
    assert time.monotonic() - started < 10


def test_devices_folders_and_large_files_are_refused(tmp_path, capsys):
    if os.path.exists("/dev/zero"):
        assert cli.main(["check", "/dev/zero"]) == 3
        assert "not a regular file (a character device)" in capsys.readouterr().err
    assert cli.main(["check", str(tmp_path)]) == 3
    assert "not a regular file (a folder)" in capsys.readouterr().err
    big = tmp_path / "big.dl"
    with open(big, "wb") as f:  # sparse: no disk used, but a naive read would take 20 GB of memory
        f.truncate(20 * 2**30)
    assert cli.main(["check", str(big)]) == 3
    assert f"a model file has at most {MAX_SOURCE_BYTES:,}" in capsys.readouterr().err
    model = write(tmp_path / "m.dl", 'import "big.dl"\n' + MODEL)
    assert failure(model).startswith("1:1: cannot read the imported file `big.dl`: the file has 21,474,836,480 bytes")


def test_an_import_path_longer_than_the_system_allows_is_a_diagnostic(tmp_path, capsys):
    model = write(tmp_path / "m.dl", 'import "' + "a/" * 3000 + 'x.dl"\n' + MODEL)
    message = failure(model)
    assert message.startswith("1:1: cannot read the imported file `a/a/") and "…" in message
    assert cli.main(["check", str(model)]) == 1
    assert len(capsys.readouterr().err) < 2000


def test_a_control_character_in_an_import_path_is_refused(tmp_path):
    model = write(tmp_path / "m.dl", 'import "lib\x1b[2J.dl"\n' + MODEL)
    assert failure(model) == "1:1: the import path contains a control character"


def test_the_bundled_transformer_imports_its_blocks():
    assert compile_file(ROOT / "models" / "transformer_lm.dl").name == "transformer_lm"


def test_an_environment_file_is_never_echoed(tmp_path):
    """The finding: `import "/proc/self/environ"` printed the environment as a source line."""
    model = write(tmp_path / "m.dl", 'import "/proc/self/environ"\n' + MODEL)
    env = {**os.environ, "DSLC_TEST_SECRET": "hunter2-do-not-print"}
    done = subprocess.run([sys.executable, "-m", "dslc", "check", str(model)], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 1 and "hunter2" not in done.stderr and "is absolute" in done.stderr
