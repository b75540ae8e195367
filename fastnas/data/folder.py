"""The ImageNet folder layout: `<root>/<split>/<wnid>/*.JPEG`, scanned once, checked cheaply.

Class index = position in the sorted list of train wnids (what torchvision's ImageFolder
assigns), and the val split uses the *train* class list, so a label never depends on which
folders val happens to have. An empty class folder keeps its index (dropping it would shift
every later label); it is reported.

Undecodable-file policy: every file is pre-scanned before any decoder sees it, by reading
its header and its tail (no decode, ~20 us a file). Files that cannot be decoded are skipped,
counted and reported (`python -m fastnas.data check PATH` lists each with its reason); they
never reach DALI, whose pipeline dies on the first bad file. Verdicts are cached per file
(`scan_cache`), so a restart rereads only what changed. Measured with DALI 2.4 (CPU)
and torchvision 0.29, both of which decode to RGB:
  decoded and used: grayscale JPEG, CMYK JPEG, progressive JPEG, PNG (also RGBA/palette)
                    under a .JPEG name, tiny (48x31) and large (1024x683) images;
  both fail, so skipped: zero-byte, truncated (no end-of-image marker), header-only,
                    random bytes, other formats under an image name (GIF, BMP, ...).
A file that passes the pre-scan but is corrupt inside its entropy-coded data (whole header,
end marker present) is not caught here: DALI decodes it anyway (libjpeg-turbo fills in the
damage), torchvision refuses it, and the torchvision backend then refills that slot with
another image of the same batch (image and label together) and prints one warning line per
file. `check --decode` decodes every file to list those too. Non-image files (by extension)
and stray files beside the class folders are ignored and listed as warnings.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from fastnas.data.scan_cache import ScanCache
from fastnas.errors import UserError

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
_TAIL = 1024                       # an end-of-image marker may be followed by a little padding


class DataError(UserError):
    """The dataset folder is missing, empty or unusable."""


@dataclass
class Problem:
    path: str
    reason: str


@dataclass
class SplitScan:
    """One split of the dataset: usable files with labels, plus everything that was set aside."""

    root: Path
    split: str
    classes: list[str]                       # sorted train wnids; label = index here
    files: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)      # files skipped, with the reason
    warnings: list[str] = field(default_factory=list)         # usable, but worth saying

    def __len__(self) -> int:
        return len(self.files)

    def counts(self) -> list[int]:
        per_class = [0] * len(self.classes)
        for label in self.labels:
            per_class[label] += 1
        return per_class

    def subset(self, indices) -> SplitScan:
        """These files at `indices` only (a hold-out part); problems and warnings are kept."""
        return SplitScan(self.root, self.split, self.classes, [self.files[i] for i in indices],
                         [self.labels[i] for i in indices], self.problems, self.warnings)

    def summary_line(self) -> str | None:
        """One warning line when files were skipped, None otherwise."""
        if not self.problems:
            return None
        first = self.problems[0]
        return (f"fastnas.data: skipped {len(self.problems)} unusable file(s) in {self.root / self.split} "
                f"(first: {first.path}: {first.reason}); `python -m fastnas.data check {self.root}` lists them")


def list_classes(root: str | os.PathLike) -> list[str]:
    """Sorted class folder names of `<root>/train` (the label order)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    train = root / "train"
    if not train.is_dir():
        raise DataError(f"{root}: no train/ folder (expected the ImageNet layout train/<wnid>/*.JPEG)")
    classes = sorted(e.name for e in os.scandir(train) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"{train}: no class folders (expected train/<wnid>/*.JPEG)")
    return classes


def scan_split(root: str | os.PathLike, split: str, classes: list[str] | None = None,
               cache: bool = True) -> SplitScan:
    """Scan `<root>/<split>`; raise DataError when it has no usable image at all.

    cache: reuse the pre-scan verdicts of files unchanged since the last scan (`scan_cache`);
    False checks every file again."""
    root = Path(root)
    classes = classes if classes is not None else list_classes(root)
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"{root}: no {split}/ folder")
    scan = SplitScan(root=root, split=split, classes=classes)
    verdicts = ScanCache(folder, check_file) if cache else None
    known = set(classes)
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            scan.warnings.append(f"{entry.path}: not a class folder, ignored")
        elif entry.name not in known:
            raise DataError(f"{folder}: class folder {entry.name!r} is not in train/ (labels would be undefined)")
    for label, wnid in enumerate(classes):
        class_dir = folder / wnid
        if not class_dir.is_dir():
            scan.warnings.append(f"{class_dir}: class {wnid} (label {label}) has no folder in {split}/")
            continue
        usable = 0
        for entry in sorted(os.scandir(class_dir), key=lambda e: e.name):
            if entry.name.startswith(".") or entry.is_dir():
                continue
            if not entry.name.lower().endswith(IMAGE_EXTENSIONS):
                scan.warnings.append(f"{entry.path}: not an image file (extension), ignored")
                continue
            reason = verdicts.check(entry, f"{wnid}/{entry.name}") if verdicts else check_file(entry.path)
            if reason:
                scan.problems.append(Problem(entry.path, reason))
                continue
            scan.files.append(entry.path)
            scan.labels.append(label)
            usable += 1
        if usable == 0:
            scan.warnings.append(f"{class_dir}: class {wnid} (label {label}) has no usable image in {split}/")
    if verdicts:
        verdicts.save()
    if not scan.files:
        raise DataError(f"{folder}: no usable images ({len(scan.problems)} unusable file(s))")
    return scan


# ----------------------------------------------------------------------------- one file

def check_file(path: str | os.PathLike) -> str | None:
    """Why the file cannot be decoded, or None when its structure looks whole."""
    try:
        with open(path, "rb") as f:
            head = f.read(64 * 1024)
            if not head:
                return "empty file (0 bytes)"
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL))
            tail = f.read()
            if head[:3] == b"\xff\xd8\xff":
                return _check_jpeg(f, head, tail)
            if head[:8] == b"\x89PNG\r\n\x1a\n":
                return _check_png(head, tail)
    except OSError as e:
        return f"unreadable ({e.strerror})"
    kind = _sniff(head)
    return f"not a JPEG or PNG ({kind})" if kind else "not an image (unknown content)"


def _check_jpeg(f, head: bytes, tail: bytes) -> str | None:
    if b"\xff\xd9" not in tail:
        return "truncated JPEG (no end-of-image marker)"
    frame = _jpeg_frame(lambda pos, n: (f.seek(pos), f.read(n))[1])
    if isinstance(frame, str):
        return frame
    precision, height, width, components = frame
    if precision != 8:
        return f"{precision}-bit JPEG (only 8-bit is decoded)"
    if height == 0 or width == 0:
        return f"JPEG with a zero dimension ({width}x{height})"
    if components not in (1, 3, 4):
        return f"JPEG with {components} colour components"
    return None


def _jpeg_frame(read) -> tuple[int, int, int, int] | str:
    """(precision, height, width, components) of the JPEG's frame header, or why there is none.

    `read(pos, n)` returns up to n bytes at pos; the marker segments are walked up to start-of-scan."""
    pos = 2
    while True:
        marker = read(pos, 4)
        if len(marker) < 4 or marker[0] != 0xFF:
            return "corrupt JPEG header"
        code = marker[1]
        if code == 0xFF:                            # fill byte
            pos += 1
            continue
        length = struct.unpack(">H", marker[2:4])[0]
        if code == 0xDA:
            return "corrupt JPEG (no frame header before scan)"
        if code in (0xC0, 0xC1, 0xC2):              # baseline, extended, progressive Huffman
            frame = read(pos + 4, 6)
            if len(frame) < 6:
                return "truncated JPEG header"
            return struct.unpack(">BHHB", frame)
        if 0xC3 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC):
            return "lossless or arithmetic-coded JPEG (not supported by the decoders)"
        if length < 2:
            return "corrupt JPEG header"
        pos += 2 + length


def image_size(data, name: str = "image") -> tuple[int, int]:
    """(height, width) of an encoded JPEG or PNG (any bytes-like object) from its header, without
    decoding; `name` (its path) goes into the error."""
    data = memoryview(data).cast("B")
    if bytes(data[:8]) == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return height, width
    if bytes(data[:2]) == b"\xff\xd8":
        frame = _jpeg_frame(lambda pos, n: bytes(data[pos:pos + n]))
        if not isinstance(frame, str):
            return frame[1], frame[2]
    raise DataError(f"{name}: cannot read the image size from its header")


def _check_png(head: bytes, tail: bytes) -> str | None:
    if len(head) < 33 or head[12:16] != b"IHDR":
        return "corrupt PNG header"
    width, height = struct.unpack(">II", head[16:24])
    if width == 0 or height == 0:
        return "PNG with a zero dimension"
    if b"IEND" not in tail[-16:]:
        return "truncated PNG (no IEND chunk)"
    return None


def _sniff(head: bytes) -> str | None:
    signatures = {b"GIF8": "GIF", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"%PDF": "PDF"}
    for sig, name in signatures.items():
        if head.startswith(sig):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None
