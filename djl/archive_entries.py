"""Extraction entry by entry: the rules of ``djl.archive`` applied to each name, link,
size and zip header, into a fresh directory (``djl.archive`` renames it into place)."""

from __future__ import annotations

import bz2
import errno
import gzip
import lzma
import os
import posixpath
import re
import stat
import struct
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from djl.errors import SourceError

_CHUNK = 1024 * 1024
#: Largest single read of the tar stream: data is read in _CHUNK pieces, so only a
#: metadata header (pax, GNU long name) could ask for more.
_MAX_TAR_READ = 16 * 1024 * 1024
#: Below this many extracted bytes the ratio limit does not apply: a tiny text archive
#: compressing 500:1 is harmless, and legitimate model weights never compress that well.
_RATIO_GRACE_BYTES = 1024 * 1024
_MAX_LINK_HOPS = 8
_MAX_LINK_TARGET = 4096
_ZIP_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_ZIP_LOCAL_MAGIC = b"PK\x03\x04"
_DRIVE = re.compile(r"[A-Za-z]:(/|$)")  # a Windows drive: absolute there
_SPECIAL = "device files, fifos and other special entries are not supported"

#: What a damaged or hostile archive makes the standard library raise while reading it.
#: Write errors never reach this tuple: they are turned into SourceError where they occur.
CORRUPT = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    tarfile.TarError,
    EOFError,
    OSError,
    zlib.error,
    lzma.LZMAError,
    NotImplementedError,  # zip compression methods the stdlib lacks
    RuntimeError,  # zip: encrypted entry
    ValueError,
    struct.error,
    OverflowError,
)


class Stopped(Exception):
    """The caller asked the extraction (or download) to stop; the partial output is gone."""


@dataclass(frozen=True)
class Budget:
    """What the layers of one model source have extracted so far.

    An archive inside an archive is extracted with the budget its outer layer returned:
    ``written`` counts against ``archive_max_bytes`` and the ratio is measured against
    ``source_bytes``, the size of the outermost archive as downloaded or found, so a small
    download cannot reach the limits anew at every layer.
    """

    source_bytes: int
    written: int


@dataclass(frozen=True)
class Limits:
    """Archive-bomb limits; the defaults live in ``ServerConfig``."""

    max_bytes: int
    max_entries: int
    max_ratio: int


class Extractor:
    """One extraction: the rules of ``djl.archive``, applied entry by entry into ``root``."""

    def __init__(
        self,
        root: Path,
        archive: Path,
        limits: Limits,
        label: str,
        stop: threading.Event | None,
        spent: Budget | None,
    ) -> None:
        self.root = str(root)
        self.archive = archive
        #: What the ratio is measured against: the outermost archive's size.
        self.archive_bytes = max(spent.source_bytes if spent else archive.stat().st_size, 1)
        self.limits = limits
        self.label = label
        self.stop = stop
        self.entries = 0
        #: Bytes really written so far, copies of links and outer layers included.
        self.written = spent.written if spent else 0
        self.files: dict[str, str] = {}  # safe name -> absolute path of each regular file
        self.links: dict[str, str] = {}  # safe name -> safe name of its target
        self.exec_bits: dict[str, int] = {}

    # -- formats ------------------------------------------------------------------------

    def extract_zip(self) -> None:
        with zipfile.ZipFile(self.archive) as zf:
            infos = zf.infolist()
            if len(infos) > self.limits.max_entries:
                self._too_many_entries()
            declared = sum(info.file_size for info in infos)
            self.check_size(self.written + declared)
            with open(self.archive, "rb") as raw:
                self._cross_check_zip(raw, infos, zf.start_dir)
            for info in infos:
                self._count_entry()
                name = self._safe_name(info.orig_filename)
                if name is None:
                    continue
                # Unix mode bits mean something only in entries made on Unix.
                mode = info.external_attr >> 16 if info.create_system == 3 else 0
                kind = stat.S_IFMT(mode)
                if info.flag_bits & 0x1:
                    self._refuse(info.filename, "encrypted entries are not supported")
                if info.is_dir() or kind == stat.S_IFDIR:
                    self._mkdir(name, info.filename)
                elif kind == stat.S_IFLNK:
                    with zf.open(info) as src:
                        target = src.read(_MAX_LINK_TARGET + 1)
                    if len(target) > _MAX_LINK_TARGET:
                        self._refuse(info.filename, "link target too long")
                    link = target.decode("utf-8", "surrogateescape")
                    self._add_link(name, info.filename, link, symbolic=True)
                elif kind in (0, stat.S_IFREG):
                    with zf.open(info) as src:
                        self._write_file(name, info.filename, src, mode & 0o111)
                else:
                    self._refuse(info.filename, _SPECIAL)
        self._materialise_links()

    def extract_tar(self) -> None:
        with open(self.archive, "rb") as raw, _decompressed(raw) as stream:
            with tarfile.open(fileobj=_Bounded(stream, self), mode="r:") as tf:
                for member in tf:
                    self._tar_member(tf, member)
        self._materialise_links()

    def _tar_member(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self._count_entry()
        name = self._safe_name(member.name)
        if name is None:
            return
        if member.isdir():
            self._mkdir(name, member.name)
        elif member.issym():
            self._add_link(name, member.name, member.linkname, symbolic=True)
        elif member.islnk():
            self._add_link(name, member.name, member.linkname, symbolic=False)
        elif member.isreg():
            src = tf.extractfile(member)
            assert src is not None  # regular members always have data
            with src:
                self._write_file(name, member.name, src, member.mode & 0o111)
        else:
            self._refuse(member.name, _SPECIAL)

    def _cross_check_zip(self, raw: IO[bytes], infos: list[zipfile.ZipInfo], end: int) -> None:
        """Local headers must agree with the central directory; entries may not overlap."""
        ordered = sorted(infos, key=lambda i: i.header_offset)
        for i, info in enumerate(ordered):
            raw.seek(info.header_offset)
            header = raw.read(_ZIP_LOCAL_HEADER.size)
            if len(header) != _ZIP_LOCAL_HEADER.size:
                self._malicious(info.filename, "truncated local header")
            (magic, _, _, flags, method, _, _, crc, csize, usize, name_len, extra_len) = (
                _ZIP_LOCAL_HEADER.unpack(header)
            )
            if magic != _ZIP_LOCAL_MAGIC:
                self._malicious(info.filename, "bad local header signature")
            if raw.read(name_len) != _zip_raw_name(info):
                self._malicious(info.filename, "local and central names differ")
            if method != info.compress_type:
                self._malicious(info.filename, "local and central compression differ")
            if not flags & 0x08 and csize != 0xFFFFFFFF and usize != 0xFFFFFFFF:
                if (crc, csize, usize) != (info.CRC, info.compress_size, info.file_size):
                    self._malicious(info.filename, "local and central sizes differ")
            data_end = info.header_offset + len(header) + name_len + extra_len
            data_end += info.compress_size
            bound = ordered[i + 1].header_offset if i + 1 < len(ordered) else end
            if data_end > bound:
                self._malicious(info.filename, "entries overlap")

    # -- entries ------------------------------------------------------------------------

    def _safe_name(self, raw: str) -> str | None:
        """The entry's relative path (``/``-separated), or None for the archive root."""
        if "\x00" in raw:
            self._refuse(raw, "NUL byte in entry name")
        name = raw.replace("\\", "/")
        if name.startswith("/") or _DRIVE.match(name):
            self._refuse(raw, "absolute path")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            self._refuse(raw, "path traversal ('..')")
        return "/".join(parts) or None

    def _path(self, name: str) -> str:
        path = os.path.join(self.root, *name.split("/"))
        # Defence in depth: _safe_name already guarantees this.
        if os.path.commonpath([self.root, path]) != self.root:
            self._refuse(name, "path escapes the target directory")
        return path

    def _mkdir(self, name: str, raw: str) -> None:
        if name in self.files or name in self.links:
            self._refuse(raw, "a file and a directory share this name")
        with self._writing(raw):
            os.makedirs(self._path(name), exist_ok=True)

    def _add_link(self, name: str, raw: str, link: str, *, symbolic: bool) -> None:
        if name in self.files or name in self.links:
            self._refuse(raw, "duplicate entry")
        link = link.replace("\\", "/")
        if symbolic:
            if link.startswith("/") or _DRIVE.match(link):
                self._refuse(raw, f"link target {link!r} is outside the archive")
            joined = posixpath.normpath(posixpath.join(posixpath.dirname(name), link))
        else:
            if link.startswith("/"):
                self._refuse(raw, f"link target {link!r} is outside the archive")
            joined = posixpath.normpath(link or ".")
        if joined == ".." or joined.startswith("../") or "\x00" in joined:
            self._refuse(raw, f"link target {link!r} is outside the archive")
        self.links[name] = joined

    def _materialise_links(self) -> None:
        """Turn inside-pointing links into copies, once every regular file is on disk."""
        for name, target in self.links.items():
            seen = {name}
            while target in self.links:
                if target in seen or len(seen) > _MAX_LINK_HOPS:
                    self._refuse(name, "link loop")
                seen.add(target)
                target = self.links[target]
            source = self.files.get(target)
            if source is None:
                self._refuse(name, f"link target {target!r} is not a file in the archive")
            self._count_entry()
            with open(source, "rb") as src:
                self._write_file(name, name, src, self.exec_bits.get(target, 0), link=True)

    def _write_file(
        self, name: str, raw: str, src: IO[bytes], exec_bits: int, *, link: bool = False
    ) -> None:
        if name in self.files or (name in self.links and not link):
            self._refuse(raw, "duplicate entry")
        path = self._path(name)
        with self._writing(raw):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            mode = 0o755 if exec_bits else 0o644
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        self.files[name] = path
        self.exec_bits[name] = exec_bits
        with os.fdopen(fd, "wb") as out:
            while True:
                if self.stop is not None and self.stop.is_set():
                    raise Stopped()
                chunk = src.read(_CHUNK)
                if not chunk:
                    break
                self.written += len(chunk)
                self.check_size(self.written)
                with self._writing(raw):
                    out.write(chunk)

    # -- limits and refusals ----------------------------------------------------------------

    def _count_entry(self) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            self._too_many_entries()

    def _too_many_entries(self) -> None:
        raise SourceError(
            f"Archive {self.label} has more than archive_max_entries "
            f"({self.limits.max_entries}) entries",
            status=413,
        )

    def check_size(self, total: int, *, ratio_only: bool = False) -> None:
        if total > self.limits.max_bytes and not ratio_only:
            raise SourceError(
                f"Archive {self.label} extracts to more than archive_max_bytes "
                f"({self.limits.max_bytes} bytes)",
                status=413,
            )
        if total > _RATIO_GRACE_BYTES and total > self.limits.max_ratio * self.archive_bytes:
            raise SourceError(
                f"Archive {self.label} expands more than archive_max_ratio "
                f"({self.limits.max_ratio}x the {self.archive_bytes} bytes of the archive "
                "as downloaded or found)",
                status=413,
            )

    def _refuse(self, entry: str, why: str) -> None:
        raise SourceError(f"Unsafe archive {self.label}: entry {entry!r}: {why}", status=400)

    def _malicious(self, entry: str, why: str) -> None:
        raise SourceError(f"Malicious zip file, {self.label}: entry {entry!r}: {why}", status=400)

    @contextmanager
    def _writing(self, raw: str) -> Iterator[None]:
        """Turn an OSError while writing into a SourceError.

        Kept apart from read errors so that a full disk is not reported as a corrupt archive.
        """
        try:
            yield
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SourceError(f"No space left to extract {self.label}", status=507) from exc
            raise SourceError(
                f"Cannot extract entry {raw!r} of {self.label}: {exc.strerror or exc}",
                status=400,
            ) from exc


def _decompressed(raw: IO[bytes]) -> IO[bytes]:
    """``raw`` itself, or a decompressing reader chosen by its magic bytes."""
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw)
    return raw


class _Bounded:
    """The decompressed tar stream, refusing to go past the archive limits.

    ``tarfile`` reads a pax or GNU long-name header's whole declared size into memory, and
    skips unused data by seeking (decompressing it): neither passes through the bytes
    counted by ``_write_file``. Bounding the stream position (and any single read) keeps
    a few kilobytes of gzip from costing gigabytes of memory or CPU.
    """

    def __init__(self, stream: IO[bytes], extractor: Extractor) -> None:
        self.stream = stream
        self.extractor = extractor
        #: What outer layers wrote: this stream's positions count on top of it.
        self.base = extractor.written
        limits = extractor.limits
        # Headers and padding: at most ~2 KiB per entry on top of the data.
        self.limit = limits.max_bytes - self.base + 2048 * (limits.max_entries + 8)

    def _check(self, end: int) -> None:
        if end > self.limit:
            self.extractor.check_size(self.extractor.limits.max_bytes + 1)
        self.extractor.check_size(self.base + end, ratio_only=True)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > _MAX_TAR_READ:
            raise SourceError(
                f"Corrupt archive {self.extractor.label}: a tar header declares "
                f"{size} bytes of metadata",
                status=400,
            )
        self._check(self.stream.tell() + size)
        return self.stream.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self._check(offset)
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        return self.stream.tell()


def _zip_raw_name(info: zipfile.ZipInfo) -> bytes:
    """The name bytes as the central directory stored them."""
    if info.flag_bits & 0x800:
        return info.orig_filename.encode("utf-8")
    try:
        return info.orig_filename.encode("cp437")
    except UnicodeEncodeError:
        return info.orig_filename.encode("utf-8")
