"""Atomic file writes: a crash, or a second writer, leaves the old file or the new one, never a mix.

Every file fastnas must not lose (checkpoints, search state, history, exports, latency tables) is
written through here: to a unique temporary file beside the target (two writers never share one),
fsynced, renamed over the target, and the rename made durable by fsyncing the folder.

    with atomic_write(path, "w") as f:     # a file object
        f.write(text)
    with atomic_file(path) as tmp:         # a path, for writers that take a file name (ONNX)
        export(tmp)
    write_json_atomic(path, obj)
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, keep_previous: str | os.PathLike | None = None) -> Iterator[Path]:
    """A unique temporary path beside `path`; when the block ends without error it is fsynced and
    renamed over `path` (the file it replaces moved to `keep_previous` first, if given)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_UMASK)                 # mkstemp's 0600 would survive the rename
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", *, newline: str | None = None,
                 keep_previous: str | os.PathLike | None = None) -> Iterator[IO]:
    """`open(path, mode)` that only replaces `path` once the block has finished writing."""
    with atomic_file(path, keep_previous) as tmp:
        with open(tmp, mode, newline=newline) as f:
            yield f


def write_json_atomic(path: str | os.PathLike, obj, indent: int | None = None) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=indent)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename durable (POSIX); not possible on every platform, so failures are ignored."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
