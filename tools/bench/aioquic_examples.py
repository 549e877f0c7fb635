"""Fetch aioquic's ``examples/`` (http3_server.py, http3_client.py, demo.py) at run time.

They are not in the wheel; the source distribution on PyPI has them. The sdist is fetched
with ``pip download --no-deps --no-binary :all: aioquic==VERSION`` and only ``examples/`` is
extracted into the cache folder. Nothing of it is copied into the repository.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "1.7.2"


def examples_dir(cache_dir: Path, version: str = VERSION) -> Path:
    """Path of the extracted ``examples/`` folder, downloading the sdist if needed."""
    target = cache_dir / f"aioquic-{version}" / "examples"
    if (target / "http3_server.py").is_file() and (target / "http3_client.py").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--no-binary", ":all:", f"aioquic=={version}", "-d", tmp],
            check=True,
        )  # fmt: skip
        sdists = list(Path(tmp).glob(f"aioquic-{version}.tar.gz"))
        if not sdists:
            raise RuntimeError(f"pip download gave no aioquic-{version}.tar.gz")
        prefix = f"aioquic-{version}/examples/"
        with tarfile.open(sdists[0]) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            tar.extractall(cache_dir, members=members, filter="data")
    if not (target / "http3_server.py").is_file():
        raise RuntimeError(f"examples/ not found in the aioquic {version} sdist")
    return target
