"""missing_versions: which of the shipped migrations a database lacks, in order."""

from __future__ import annotations

from pipeline.store.migrate import available_migrations, missing_versions


def test_missing_versions_are_the_unapplied_in_order() -> None:
    every = [version for version, _ in available_migrations()]
    assert missing_versions(set()) == every
    assert missing_versions(set(every)) == []
    assert missing_versions(set(every[:-2])) == every[-2:]
