"""Install the reference peers: ``python -m interop.install [--check]``.

* Debian: ``ngtcp2-client ngtcp2-server chromium`` (apt-get, as root);
* ``interop/.cache/venv-peers``: aioquic 1.7.2, starlette, jinja2, wsproto (the aioquic examples),
  qh3 and hypercorn[h3] (a venv of its own, so the project's venv keeps its pins);
* ``interop/.cache/venv-niquests``: niquests (it swaps urllib3 for urllib3-future);
* the aioquic 1.7.2 sdist's ``examples/``, extracted into ``interop/.cache/aioquic-1.7.2/``
  (``pip download --no-deps --no-binary :all: aioquic==1.7.2``; never copied into the repo).

Each step is skipped when already done. ``--check`` only reports what is missing (exit 1 if
anything is).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from interop.contract import AIOQUIC_VERSION, CACHE_DIR, NIQUESTS_VENV, PEERS_VENV, venv_python

APT_PACKAGES = ("ngtcp2-client", "ngtcp2-server", "chromium")
APT_BINARIES = {"gtlsclient": "/usr/bin/gtlsclient", "gtlsserver": "/usr/sbin/gtlsserver",
                "chromium": "/usr/bin/chromium"}  # fmt: skip
PEERS_PACKAGES = (f"aioquic=={AIOQUIC_VERSION}", "starlette", "jinja2", "wsproto", "qh3",
                  "hypercorn[h3]")  # fmt: skip
PEERS_IMPORTS = ("aioquic", "starlette", "jinja2", "wsproto", "qh3", "hypercorn")
NIQUESTS_PACKAGES = ("niquests",)


def _run(argv: list[str]) -> None:
    print("+ " + " ".join(argv), flush=True)
    subprocess.run(argv, check=True)


def _imports_ok(venv: Path, modules: tuple[str, ...]) -> bool:
    python = venv_python(venv)
    if not python.exists():
        return False
    code = "import " + ", ".join(modules)
    return subprocess.run([str(python), "-c", code], capture_output=True).returncode == 0


def missing() -> list[str]:
    """What is not installed yet (empty when everything is)."""
    from interop.peers.aioquic import examples_dir

    out = [f"apt: {name}" for name, path in APT_BINARIES.items()
           if not (shutil.which(name) or Path(path).exists())]  # fmt: skip
    if not _imports_ok(PEERS_VENV, PEERS_IMPORTS):
        out.append(f"venv {PEERS_VENV.name}")
    if not _imports_ok(NIQUESTS_VENV, ("niquests",)):
        out.append(f"venv {NIQUESTS_VENV.name}")
    if not (examples_dir() / "http3_server.py").is_file():
        out.append(f"aioquic {AIOQUIC_VERSION} examples")
    return out


def _venv(venv: Path, packages: tuple[str, ...]) -> None:
    if not venv_python(venv).exists():
        _run([sys.executable, "-m", "venv", str(venv)])
    _run([str(venv_python(venv)), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    _run([str(venv_python(venv)), "-m", "pip", "install", "--quiet", *packages])


def install() -> None:
    """Install whatever ``missing()`` reports."""
    todo = missing()
    if any(item.startswith("apt:") for item in todo):
        _run(["apt-get", "update", "-q"])
        _run(["apt-get", "install", "-y", "-q", *APT_PACKAGES])
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    if f"venv {PEERS_VENV.name}" in todo:
        _venv(PEERS_VENV, PEERS_PACKAGES)
    if f"venv {NIQUESTS_VENV.name}" in todo:
        _venv(NIQUESTS_VENV, NIQUESTS_PACKAGES)
    if f"aioquic {AIOQUIC_VERSION} examples" in todo:
        from tools.bench.aioquic_examples import examples_dir as fetch_examples

        fetch_examples(CACHE_DIR, AIOQUIC_VERSION)


def main(argv: list[str] | None = None) -> int:
    """Install (or with ``--check`` only report) the peers."""
    parser = argparse.ArgumentParser(
        prog="python -m interop.install",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--check", action="store_true", help="only report what is missing")
    args = parser.parse_args(argv)  # fmt: skip
    if not args.check:
        install()
    left = missing()
    for item in left:
        print(f"missing: {item}")
    if not left:
        print("all peers installed")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
