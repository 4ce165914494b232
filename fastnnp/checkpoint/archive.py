"""A checkpoint file's integrity, checked before anything in it is unpickled.

``torch.save`` writes a zip archive whose entries (the pickle ``data.pkl``, one entry per tensor
storage, ``version``, ...) each carry a CRC-32 checksum, which ``torch.load`` never verifies:
a file damaged on disk or in a copy would load with wrong weights. :func:`verified_archive`
reads the whole file, checks every entry's checksum with :mod:`zipfile`, and refuses anything
else (truncated archives, other formats) with a :class:`CheckpointError` saying what the file is.
"""

import io
import os
import struct
import zipfile
import zlib

ZIP_MAGIC = b"PK\x03\x04"  # a local file header: what torch.load itself takes for a zip checkpoint
# Leading bytes of files that are not torch.save archives -> what they are.
FOREIGN_FORMATS = {
    b"\x80\x02\x8a\x0a": "a legacy torch.save file (torch < 1.6, no checksums); load it with torch.load and "
                         "save it again with a current torch",
    b"\x89HDF\r\n\x1a\n": "an HDF5 file",
    b"\x93NUMPY": "a NumPy .npy array",
    b"\x1f\x8b": "a gzip file",
    b"version https://git-lfs": "a Git LFS pointer, not the file itself (fetch it with git lfs pull)",
}
# What zipfile raises on a damaged archive (its own errors, and those of the structures it parses).
ARCHIVE_ERRORS = (zipfile.BadZipFile, zlib.error, struct.error, EOFError, OSError, ValueError, RuntimeError,
                  NotImplementedError, OverflowError)
_CHUNK = 1 << 22  # bytes per read when checksumming an entry


class CheckpointError(ValueError):
    """A file that is not a loadable TorchMD-Net checkpoint."""


def verified_archive(path: str | os.PathLike) -> bytes:
    """The bytes of ``path``, a ``torch.save`` zip archive whose every entry matches its CRC-32.

    Raises FileNotFoundError for a missing file (IsADirectoryError for a directory) and
    :class:`CheckpointError` naming the reason otherwise: empty, another format, truncated (no
    readable zip directory), an entry whose checksum fails (named), or a zip archive without
    ``data.pkl``. The whole file is read into memory once: checked and unpickled from the same bytes.
    """
    if os.path.isdir(path):
        raise IsADirectoryError(f"checkpoint path {path} is a directory, not a checkpoint file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise CheckpointError(f"{path} is empty (0 bytes)")
    if not data.startswith(ZIP_MAGIC):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (a torch.save zip archive): it is {_what(data)}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except ARCHIVE_ERRORS as error:
        raise CheckpointError(
            f"{path} is truncated or damaged: its zip directory cannot be read ({error}); a file cut short by an "
            f"interrupted copy or download looks like this ({len(data)} bytes)"
        ) from error
    with archive:
        names = archive.namelist()
        for info in archive.infolist():
            _check_entry(archive, info, path)
    if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise CheckpointError(f"{path} is a zip archive but not a PyTorch checkpoint: it has no data.pkl (it holds {shown})")
    return data


def _check_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path) -> None:
    """Read one entry to its end, which makes zipfile compare its CRC-32."""
    try:
        with archive.open(info) as entry:
            while entry.read(_CHUNK):
                pass
    except ARCHIVE_ERRORS as error:
        reason = "fails its CRC-32 checksum" if "CRC" in str(error) else f"cannot be read ({error})"
        raise CheckpointError(
            f"{path} is damaged: its entry {info.filename!r} {reason}; the file was corrupted after it was written "
            "(copy it again)"
        ) from error


def _what(data: bytes) -> str:
    """What a file that is not a zip archive looks like, from its first bytes."""
    for magic, description in FOREIGN_FORMATS.items():
        if data.startswith(magic):
            return description
    head = data[:1024]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:  # a character cut at the end of the head is still text
        text = head[:error.start].decode("utf-8") if error.start >= len(head) - 3 else None
    if text and "\x00" not in text:
        return f"a text file (starting {text[:40]!r})"
    return f"no format fastnnp knows (first bytes {data[:8].hex(' ')})"
