"""Optional: fetch MNIST-format IDX files (e.g. Fashion-MNIST) from a base URL the user gives.

Never called at run time: frugalml reads local files only. The base URL is a required argument
(no host is built in), so where data comes from is always the user's explicit choice.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from frugalml._io import atomic_write_bytes
from frugalml.data.idx import IDX_FILES, IMAGES_MAGIC, LABELS_MAGIC, parse_idx
from frugalml.errors import DataError

FASHION_MNIST_FILES = [f"{stem}.gz" for stem in IDX_FILES.values()]


def download_idx_files(
    base_url: str,
    dest: str | Path,
    files: list[str] | None = None,
    *,
    sha256: dict[str, str] | None = None,
    overwrite: bool = False,
    timeout: float = 60.0,
) -> list[Path]:
    """Download `files` (default: the four gzipped IDX files) from `base_url/<file>` into `dest`.

    Each file is checked before it is written (atomically): the sha256 when given, and that it parses
    as IDX with the right magic number and size. Existing files are left alone unless `overwrite`.
    """
    if not base_url:
        raise DataError("download needs a base URL (the folder holding the IDX files)")
    dest = Path(dest).expanduser()
    written = []
    for name in files or FASHION_MNIST_FILES:
        target = dest / name
        if target.exists() and not overwrite:
            written.append(target)
            continue
        url = f"{base_url.rstrip('/')}/{name}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                payload = response.read()
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise DataError(f"{url}: download failed ({e})") from None
        if sha256 and name in sha256:
            digest = hashlib.sha256(payload).hexdigest()
            if digest != sha256[name]:
                raise DataError(f"{url}: sha256 {digest} does not match expected {sha256[name]}")
        _check_idx(payload, url)
        atomic_write_bytes(target, payload)
        written.append(target)
    return written


def download_fashion_mnist(base_url: str, dest: str | Path, **kwargs) -> list[Path]:
    """The four Fashion-MNIST `.gz` files into `dest`; then use `fashion-mnist` with `root: dest`."""
    return download_idx_files(base_url, dest, FASHION_MNIST_FILES, **kwargs)


def _check_idx(payload: bytes, url: str) -> None:
    """Reject a download that is not a valid IDX file (e.g. an HTML error page) before it is kept."""
    name = url.rsplit("/", 1)[-1]
    magic = IMAGES_MAGIC if "images" in name else LABELS_MAGIC if "labels" in name else None
    if magic is not None:
        parse_idx(payload, magic, url)
