"""The README's key tables are the schema's: regenerate them with
``python -m solo_multiview.config.keys`` when a key changes."""

from __future__ import annotations

from pathlib import Path

from solo_multiview.config.keys import readme_tables

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- keys:begin -->", "<!-- keys:end -->"


def test_readme_key_tables_match_the_schema():
    text = README.read_text()
    assert BEGIN in text and END in text, "README.md lost its key-table markers"
    shown = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert shown == readme_tables().strip(), (
        "README.md's key tables differ from the declared schema: paste the output of "
        "`python -m solo_multiview.config.keys` between the keys markers"
    )
