"""A cache of the per-file pre-scan, so that a start over ImageNet does not reread 1.28M headers.

The pre-scan (`folder.check_file`: a file's header and tail) costs a file open and two reads per
image: minutes per start at ImageNet scale, per rank. Its verdict is cached per file keyed by
(size, mtime in ns), so a changed file is checked again, an added one checked, a removed one
dropped; only the directory listing and one stat per file remain. One JSON file per (dataset
folder, split) under FASTNAS_CACHE_DIR, else $XDG_CACHE_HOME/fastnas, else ~/.cache/fastnas
(the dataset itself may be read-only), written atomically: concurrent ranks cannot corrupt it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from fastnas.atomic import write_json_atomic

FORMAT = 1


def cache_dir() -> Path:
    if os.environ.get("FASTNAS_CACHE_DIR"):
        return Path(os.environ["FASTNAS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastnas"


class ScanCache:
    """Verdicts of `check(path)` for the files of one split folder, kept between runs."""

    def __init__(self, folder: str | os.PathLike, check):
        self.folder = Path(folder).resolve()
        self.check_file = check
        key = hashlib.sha256(str(self.folder).encode()).hexdigest()[:16]
        self.path = cache_dir() / "scan" / f"{self.folder.name}-{key}.json"
        self.entries: dict[str, list] = {}
        self.seen: set[str] = set()
        self.hits = self.misses = 0
        try:
            data = json.loads(self.path.read_text())
            if data.get("format") == FORMAT and data.get("folder") == str(self.folder):
                self.entries = data["files"]
        except (OSError, ValueError, KeyError, AttributeError):
            pass                                       # no cache, or an unreadable one: scan afresh

    def check(self, entry: os.DirEntry, name: str) -> str | None:
        """The pre-scan verdict of a directory entry (`name`: its path relative to the split folder),
        from the cache when its size and mtime match."""
        st = entry.stat()
        self.seen.add(name)
        cached = self.entries.get(name)
        if cached is not None and cached[0] == st.st_size and cached[1] == st.st_mtime_ns:
            self.hits += 1
            return cached[2]
        self.misses += 1
        reason = self.check_file(entry.path)
        self.entries[name] = [st.st_size, st.st_mtime_ns, reason]
        return reason

    def save(self) -> None:
        """Write the cache when anything changed (removed files are dropped); never fails the scan."""
        removed = self.entries.keys() - self.seen
        if not self.misses and not removed:
            return
        for name in removed:
            del self.entries[name]
        try:
            write_json_atomic(self.path, {"format": FORMAT, "folder": str(self.folder), "files": self.entries})
        except OSError:
            pass                                       # a read-only cache folder only costs speed
