"""Headless Chromium (Debian ``chromium``) as an interop HTTP/3 client.

QUIC is forced on the server's origin (``--origin-to-force-quic-on``; Chromium never upgrades
through Alt-Svc to a certificate without a public root) and the leaf is trusted by its SPKI hash.
One headless run opens a ``data:`` page whose script ``fetch``es every URL at once (one QUIC
connection, as Chromium pools per origin), base64-encodes each body into the DOM, and
``--dump-dom`` prints it; ``--virtual-time-budget`` keeps the page alive while fetches are
pending. The page's origin is opaque, so ``--disable-web-security`` lifts CORS for those
fetches. Proof of h3: the net log (``--log-net-log``) and the server's own log and qlog.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import sys
from pathlib import Path

from interop.contract import EndpointEnv, unsupported, url_basename
from interop.peers import PeerInfo, keylog_environ, run_step, unsupported_reason
from interop.testcases import BY_NAME

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

_ONE_BROWSER = (
    "a headless run is a fresh browser whose TLS session cache lives in memory, and within a run "
    "Chromium pools one connection per origin: no second, resumed connection can be asked for"
)
INFO = PeerInfo(
    name="chromium",
    description="headless Chromium 156 (Debian 12), fetch() from a data: page, --dump-dom",
    module="interop.peers.chromium",
    roles=("client",),
    alpns=("h3",),
    unsupported={
        "client": {
            "resumption": _ONE_BROWSER,
            "zerortt": _ONE_BROWSER,
            "chacha20": "Chromium has no switch to restrict the TLS 1.3 cipher suites "
            "(BoringSSL's TLS 1.3 suites are fixed)",
            "keyupdate": "Chromium has no command-line switch that makes its QUIC stack "
            "initiate a key update (quiche updates keys on its own only near the AEAD limit)",
        }
    },
    qlog=False,
)

_PAGE = """<html><body><script>
(async () => {
  const urls = %(urls)s;
  const range = %(range)s;
  const out = {};
  const b64 = (buf) => {
    let s = '';
    const a = new Uint8Array(buf);
    for (let i = 0; i < a.length; i += 32768) {
      s += String.fromCharCode.apply(null, a.subarray(i, i + 32768));
    }
    return btoa(s);
  };
  await Promise.all(urls.map(async (u) => {
    try {
      const r = await fetch(u, {cache: 'no-store', headers: range ? {'Range': range} : {}});
      out[u] = {status: r.status, body: b64(await r.arrayBuffer())};
    } catch (e) {
      out[u] = {error: String(e)};
    }
  }));
  const pre = document.createElement('pre');
  pre.id = 'result';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script></body></html>"""


def page_url(urls: list[str], byte_range: str | None) -> str:
    """The ``data:`` URL of the page that fetches ``urls``."""
    page = _PAGE % {"urls": json.dumps(urls), "range": json.dumps(byte_range)}
    return "data:text/html;base64," + base64.b64encode(page.encode()).decode()


def spki_hash(cert_pem: Path) -> str:
    """base64(sha256(SubjectPublicKeyInfo DER)) of the leaf, for Chromium's SPKI allow-list."""
    from quicstore.certs import spki_hash as qs_spki_hash

    return qs_spki_hash(cert_pem.read_bytes())


def _run(env: EndpointEnv, urls: list[str], n: int, budget_s: float) -> int:
    assert env.downloads is not None
    profile = env.logs / f"chromium-profile-{n}"
    shutil.rmtree(profile, ignore_errors=True)
    dom = env.logs / f"dom-{n}.html"
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-quic",
            f"--origin-to-force-quic-on={env.host}:{env.port}",
            f"--ignore-certificate-errors-spki-list={spki_hash(env.cert)}",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--disable-web-security", f"--user-data-dir={profile}",
            f"--log-net-log={env.logs / f'netlog-{n}.json'}",
            f"--virtual-time-budget={int(budget_s * 1000)}"]  # fmt: skip
    if env.testcase == "v2":
        argv.append("--quic-version=RFCv2")
    argv += ["--dump-dom", page_url(urls, env.byte_range)]
    penv = keylog_environ(env)
    with open(dom, "wb") as out:
        done = run_step(argv, env=penv, timeout=budget_s + 15, stdout=out.fileno())
    shutil.rmtree(profile, ignore_errors=True)
    if done.returncode != 0:
        _print_closes(env.logs / f"netlog-{n}.json")
        return done.returncode or 1
    match = re.search(r'<pre id="result">(.*?)</pre>', dom.read_text(errors="replace"), re.S)
    if match is None:
        print(f"no result in the page (see {dom})", file=sys.stderr)
        _print_closes(env.logs / f"netlog-{n}.json")
        return 1
    results = json.loads(html.unescape(match.group(1)))
    want = 206 if env.byte_range else 200
    ok = True
    for url in urls:
        res = results.get(url, {"error": "missing"})
        if "error" in res or res.get("status") != want:
            print(f"{url}: {res.get('error') or res.get('status')}", file=sys.stderr)
            ok = False
            continue
        (env.downloads / url_basename(url)).write_bytes(base64.b64decode(res["body"]))
    if not ok:
        _print_closes(env.logs / f"netlog-{n}.json")
    return 0 if ok else 1


def _print_closes(netlog: Path) -> None:
    """Print why Chromium closed its QUIC sessions (QUIC_SESSION_CLOSED in the net log)."""
    try:
        log = json.loads(netlog.read_text(errors="replace"))
    except (OSError, ValueError):
        return
    names = {v: k for k, v in log.get("constants", {}).get("logEventTypes", {}).items()}
    seen = set()
    for event in log.get("events", []):
        if names.get(event.get("type")) == "QUIC_SESSION_CLOSED":
            params = event.get("params", {})
            line = (
                f"netlog QUIC_SESSION_CLOSED quic_error={params.get('quic_error')} "
                f"from_peer={params.get('from_peer')}: {params.get('details')}"
            )
            if line not in seen:
                seen.add(line)
                print(line, file=sys.stderr)


def main() -> int:
    """Run the endpoint described by the environment (``interop.contract``)."""
    env = EndpointEnv.from_environ()
    reason = unsupported_reason(
        INFO, env, not_h3="Chromium speaks HTTP/3 only over h3 (no hq-interop)"
    )
    if reason is not None:
        return unsupported(reason)
    tc = BY_NAME[env.testcase]
    urls = list(env.requests)
    if tc.connections == "each":
        per = max(5.0, tc.timeout_s / max(1, len(urls)) - 3.0)
        for n, url in enumerate(urls):
            rc = _run(env, [url], n, per)
            if rc != 0:
                return rc
        return 0
    return _run(env, urls, 0, tc.timeout_s - 10)


if __name__ == "__main__":
    sys.exit(main())
