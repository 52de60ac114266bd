"""A bounded spool for files that must be whole before they are sent (email needs the size
first): a private folder per use under the configured directory, removed afterwards."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class SpoolFullError(Exception):
    """The file is larger than the spool may hold."""


@dataclass(frozen=True)
class Spooled:
    """A spooled file: where, how many bytes, their SHA-256."""

    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Spool:
    """Where spooled files go (an emptyDir in Kubernetes) and how large one may be."""

    directory: str = ""  # empty: the system's temporary directory
    max_bytes: int = 2 * 1024**3

    @contextmanager
    def folder(self) -> Iterator[Path]:
        """A private folder, removed with everything in it when the block ends."""
        made = Path(tempfile.mkdtemp(prefix="handoff-spool-", dir=self.directory or None))
        try:
            yield made
        finally:
            shutil.rmtree(made, ignore_errors=True)

    async def write(self, path: Path, chunks: AsyncIterator[bytes]) -> Spooled:
        """Write `chunks` to `path`, refusing more than max_bytes (SpoolFullError)."""
        digest, size = hashlib.sha256(), 0
        with path.open("wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > self.max_bytes:
                    raise SpoolFullError(
                        f"the file is larger than the spool's {self.max_bytes} bytes "
                        "(HANDOFF_EMAIL_SPOOL_MAX_BYTES)"
                    )
                digest.update(chunk)
                out.write(chunk)
        return Spooled(path, size, digest.hexdigest())


def gzipped(source: Path, target: Path) -> int:
    """Compress `source` into `target` block by block; the compressed size."""
    with source.open("rb") as raw, gzip.open(target, "wb", compresslevel=6) as packed:
        shutil.copyfileobj(raw, packed, 1024 * 1024)
    return target.stat().st_size
