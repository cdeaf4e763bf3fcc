"""Rebuild corpus.txt from this repository at a git revision: its documentation, grammar, models and
the compiler's own Python source, concatenated.

All of it is text written for this project, so it ships under the project's license. It is read from
a commit (not the working tree), so the same revision always gives the same corpus; the copy in this
folder was made from the commit that added it and is what `train.py` reads.

    python examples/transformer_lm/make_corpus.py [--rev HEAD]
"""
import argparse
import fnmatch
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PATTERNS = ["README.md", "grammar/LANGUAGE.md", "grammar/dl.lark", "models/*.dl", "dslc/*.py"]  # `*` spans `/`


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default="HEAD")
    rev = parser.parse_args().rev
    tracked = git("ls-tree", "-r", "--name-only", rev).splitlines()
    files = []
    for pattern in PATTERNS:
        files += [f for f in tracked if fnmatch.fnmatchcase(f, pattern) and f not in files]
    parts = [f"# ==== {name} ====\n" + git("show", f"{rev}:{name}").strip() + "\n" for name in files]
    out = Path(__file__).with_name("corpus.txt")
    out.write_text("\n".join(parts), encoding="utf-8")
    print(f"{out}: {out.stat().st_size} bytes from {len(files)} files at {git('rev-parse', '--short', rev).strip()}")


if __name__ == "__main__":
    main()
