"""docs/telemetry.md reproduces the metric table of buttress.telemetry.names."""

from __future__ import annotations

from pathlib import Path

from buttress.telemetry.names import METRICS

DOC = Path(__file__).resolve().parents[2] / "docs" / "telemetry.md"


def test_doc_table_matches_code() -> None:
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("| `buttress.")]
    parsed = []
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        parsed.append(
            (
                cells[0].strip("`"),
                cells[1].strip("`"),
                cells[2],
                cells[3].strip("`"),
                tuple(a.strip().strip("`") for a in cells[4].split(",")),
            )
        )
    expected = [(m.name, m.prometheus, m.kind, m.unit, m.attributes) for m in METRICS]
    assert parsed == expected
