from pathlib import Path

import pytest

from pipeline.analysis import attack
from pipeline.analysis.runbooks import RunbookFormatError, chunk_runbook, load_chunks, parse_runbook

RUNBOOKS = Path(__file__).parents[2] / "runbooks"


def test_every_runbook_parses_into_sections_with_catalog_attack_ids() -> None:
    paths = sorted(RUNBOOKS.glob("*.md"))
    assert len(paths) >= 8
    for path in paths:
        runbook = parse_runbook(path)
        assert runbook.attack_ids, f"{path.name} has no ATT&CK ids"
        unknown = [t for t in runbook.attack_ids if attack.technique(t) is None]
        assert not unknown, f"{path.name}: ids outside the ATT&CK catalog: {unknown}"
        assert len(chunk_runbook(runbook)) >= 3
    chunk_ids = [c.chunk_id for c in load_chunks(RUNBOOKS)]
    assert len(chunk_ids) == len(set(chunk_ids))


def test_front_matter_is_required(tmp_path: Path) -> None:
    bad = tmp_path / "bad.md"
    bad.write_text("# no front matter\n")
    with pytest.raises(RunbookFormatError, match="front matter"):
        parse_runbook(bad)


def test_chunks_split_on_second_level_headings(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("---\ntitle: X\nattack: [T1110]\n---\n# X\n\n## One\nfirst\n\n## Two\nsecond\n")
    chunks = chunk_runbook(parse_runbook(doc))
    assert [(c.heading, c.content) for c in chunks] == [("One", "first"), ("Two", "second")]
    assert chunks[0].chunk_id == "x#one"
