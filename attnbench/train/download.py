"""Download-once file cache with a SHA-256 check (Tiny Shakespeare).

A file is fetched to a temporary name in the cache directory, checked, and only
then renamed into place, so the cache never holds a partial or corrupt file. A
lock file serialises concurrent jobs of a sweep, so the file is fetched once.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Optional

from ..errors import ConfigError

log = logging.getLogger(__name__)

TIMEOUT_S = 30.0


class DownloadError(ConfigError):
    """The data could not be fetched or failed its checksum; the message says what to do."""


def cache_dir(configured: Optional[str] = None) -> Path:
    """`data.cache_dir`, else $ATTNBENCH_CACHE, else $XDG_CACHE_HOME/attnbench (~/.cache/attnbench)."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("ATTNBENCH_CACHE"):
        return Path(os.environ["ATTNBENCH_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "attnbench"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX); elsewhere a no-op."""
    try:
        import fcntl
    except ImportError:  # Windows: concurrent first downloads may both fetch; the rename stays atomic
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _cached_ok(dest: Path, sha256: Optional[str]) -> bool:
    if not dest.is_file():
        return False
    if sha256 and sha256_of(dest) != sha256:
        log.warning("cached %s fails its SHA-256 check; fetching it again", dest)
        return False
    return True


def fetch(url: str, sha256: Optional[str], directory: Path, filename: str, timeout: float = TIMEOUT_S) -> Path:
    """Path of `filename` in `directory`, downloading `url` there first if it is not cached."""
    dest = Path(directory) / filename
    if _cached_ok(dest, sha256):
        return dest
    if not url:
        raise DownloadError("data.url=null: nothing to download; pass a local copy with data.path=/path/to/file.txt")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest.with_name(dest.name + ".lock")):
        if _cached_ok(dest, sha256):  # another job fetched it while we waited for the lock
            return dest
        _download(url, sha256, dest, timeout)
    return dest


def _download(url: str, sha256: Optional[str], dest: Path, timeout: float) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        log.info("downloading %s -> %s", url, dest)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                shutil.copyfileobj(resp, out)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = " ".join(str(getattr(exc, "reason", exc)).split())
            raise DownloadError(
                f"data.url={url}: download failed ({type(exc).__name__}: {reason}); "
                "without network, pass a local copy with data.path=/path/to/file.txt"
            ) from None
        got = sha256_of(Path(tmp))
        if sha256 and got != sha256:
            size = Path(tmp).stat().st_size
            raise DownloadError(
                f"data.sha256: downloaded {url} ({size} bytes) has SHA-256 {got[:12]}…, expected {sha256[:12]}…; "
                "nothing was cached; retry, or pass a verified local copy with data.path=/path/to/file.txt"
            )
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
