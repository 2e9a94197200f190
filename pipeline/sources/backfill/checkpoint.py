"""Per-file backfill checkpoints: JSON files under <state_dir>/backfill/, written
atomically after Kafka acknowledged everything up to the recorded line."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.sources.backfill.reader import FileIdentity


@dataclass(frozen=True)
class Checkpoint:
    line: int = 0
    offset: int = 0
    done: bool = False
    published: int = 0
    problem: str | None = None


class CheckpointStore:
    def __init__(self, folder: Path, job: str = "default") -> None:
        self.folder = folder / job
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, identity: FileIdentity) -> Path:
        return self.folder / f"{identity.key}.json"

    def load(self, identity: FileIdentity) -> Checkpoint:
        """The checkpoint of this file, or a fresh one (also when the file at that path
        is not the same file any more)."""
        path = self._path(identity)
        if not path.exists():
            return Checkpoint()
        stored = json.loads(path.read_text())
        if stored.get("identity") != asdict(identity):
            return Checkpoint()
        return Checkpoint(**stored["checkpoint"])

    def save(self, identity: FileIdentity, checkpoint: Checkpoint) -> None:
        path = self._path(identity)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"identity": asdict(identity),
                                   "checkpoint": asdict(checkpoint)}))
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def reset(self) -> int:
        removed = 0
        for path in self.folder.glob("*.json"):
            path.unlink()
            removed += 1
        return removed
