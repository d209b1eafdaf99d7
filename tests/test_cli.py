"""The abo-lake command line: documented as it behaves, and synth for every kind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from abo_lake.cli import main, reference
from abo_lake.synthetic import KINDS

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_cli_reference_is_the_current_help():
    text = README.read_text()
    documented = text.split("<!-- cli-reference:start -->\n")[1].split("\n<!-- cli-reference:end")[
        0
    ]
    assert documented == reference(), (
        "README's CLI reference is stale: regenerate it with "
        "`python -c 'from abo_lake.cli import reference; print(reference())'`"
    )


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_synth_every_kind(kind, tmp_path, capsys):
    assert main(["synth", kind, "--out", str(tmp_path), "--seed", "2", "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written
    for item in written:
        assert Path(item["path"]).is_file()
        assert item["bytes"] == Path(item["path"]).stat().st_size > 0


def test_synth_unknown_kind_is_a_clear_error(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "abo_lake.cli", "synth", "vbo", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "unknown source kind 'vbo'" in out.stderr
    assert "vbo-ophys" in out.stderr
