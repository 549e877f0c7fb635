"""An HTTP/3 client on niquests (urllib3-future over qh3), run by niquests' own venv.

HTTP/1.1 and HTTP/2 are disabled so the first request goes straight over QUIC; every response
must report ``http_version == 30``. ``--mode each`` uses a fresh Session (connection) per URL.
Exit 0 when every URL was answered with 200 (206 with ``--range``) over HTTP/3 and saved.
"""

from __future__ import annotations

import argparse
import os
import sys
from urllib.parse import urlparse

import niquests


def session() -> niquests.Session:
    """A multiplexing session that only speaks HTTP/3."""
    return niquests.Session(disable_http1=True, disable_http2=True, multiplexed=True)


def fetch(args: argparse.Namespace, urls: list[str]) -> None:
    """GET ``urls`` concurrently over one session's connection and save the bodies."""
    headers = {"Range": args.range} if args.range else {}
    want = 206 if args.range else 200
    with session() as s:
        responses = [s.get(u, verify=args.ca, headers=headers, timeout=args.timeout) for u in urls]
        s.gather()
        for url, r in zip(urls, responses, strict=True):
            if r.status_code != want or r.http_version != 30:
                raise SystemExit(f"{url}: status {r.status_code}, http_version {r.http_version}")
            name = os.path.basename(urlparse(url).path) or "index.html"
            with open(os.path.join(args.out, name), "wb") as f:
                f.write(r.content or b"")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ca", required=True, help="CA certificate (PEM)")
    parser.add_argument("--out", required=True, help="download folder")
    parser.add_argument("--mode", choices=("one", "each"), default="one")
    parser.add_argument("--range", help="Range header value, e.g. bytes=0-99")
    parser.add_argument("--timeout", type=float, default=60.0, help="per request bound (s)")
    parser.add_argument("urls", nargs="+")
    ns = parser.parse_args()
    if ns.mode == "each":
        for u in ns.urls:
            fetch(ns, [u])
    else:
        fetch(ns, ns.urls)
    print(f"niquests: {len(ns.urls)} responses over HTTP/3", file=sys.stderr)
