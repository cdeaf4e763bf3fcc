"""`dslc VERB ...` makes the flags of VERB alone (`cli_args.build_parser(named=VERB)`): the same parse, help
and errors as the parser of every verb."""
from __future__ import annotations

import pytest

from dslc.cli import main
from dslc.cli_args import build_parser

COMMANDS = [
    ["train", "m.dl", "--data", "d.npz", "--epochs", "3", "--batch-size", "8", "-o", "run", "--val-split", "0.1",
     "--early-stopping", "patience=2", "-D", "hidden=4", "--threads", "1"],
    ["build", "m.dl", "-o", "out", "--dim", "B=4", "--split"],
    ["check", "m.dl"],
    ["predict", "m.dl", "--weights", "run", "--input", "x.npz", "-o", "y.npz"],
    ["export", "m.dl", "--weights", "run", "-o", "m.onnx"],
    ["plot", "run"],
    ["fmt", "--check", "a.dl"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda argv: argv[0])
def test_a_verbs_own_parser_reads_its_command_as_the_whole_parser_does(argv):
    full, full_verbs = build_parser()
    named, named_verbs = build_parser(argv[0])
    assert vars(named.parse_args(argv)) == vars(full.parse_args(argv))
    assert named_verbs[argv[0]].format_help() == full_verbs[argv[0]].format_help()
    assert list(named_verbs) == list(full_verbs)  # every verb still a choice


def test_unknown_verbs_and_bad_flags_are_refused_as_before(capsys):
    assert main(["trian", "m.dl"]) == 2
    assert "invalid choice: 'trian' (choose from 'build', 'check', 'train'" in capsys.readouterr().err
    assert main(["train", "m.dl", "--epochs", "0"]) == 2
    assert "dslc train: error:" in capsys.readouterr().err
    assert main(["--help"]) == 0  # no verb named: every verb's line in the help
    out = capsys.readouterr().out
    assert all(f"    {verb}" in out for verb in build_parser()[1])
