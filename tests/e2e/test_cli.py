"""The ``quicstore`` command as a user runs it: a subprocess against a gateway process."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from quicstore.cli.main import (
    EXIT_AUTH,
    EXIT_INTEGRITY,
    EXIT_NETWORK,
    EXIT_NOT_FOUND,
    EXIT_PRECONDITION,
    EXIT_USAGE,
)

from .serverproc import QUICSTORE, GatewayProcess


def run(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*QUICSTORE, *args],
        capture_output=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        input=stdin,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path_factory.mktemp("gw"), extra=["--open"]).start()
    yield gw
    assert gw.stop() == 0


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def test_put_get_stat_ls_rm(server: GatewayProcess, tmp_path: Path) -> None:
    src = tmp_path / "shard.bin"
    body = os.urandom(3_000_001)
    src.write_bytes(body)
    ca = ["--ca", str(server.ca)]
    url = f"{server.url}/data/cli/shard.bin"
    put = json.loads(ok(run("put", str(src), url, "--json", "--meta", "split=train", *ca)))
    assert put["size"] == len(body) and put["sha256"] == hashlib.sha256(body).hexdigest()
    stat = json.loads(ok(run("stat", url, "--json", *ca)))
    assert stat["etag"] == put["etag"] and stat["meta"] == {"split": "train"}
    dest = tmp_path / "back.bin"
    ok(run("get", url, str(dest), *ca))
    assert dest.read_bytes() == body
    part = tmp_path / "part.bin"
    ok(run("get", url, str(part), "--range", "100-199", *ca))
    assert part.read_bytes() == body[100:200]
    tail = run("get", url, "-", "--range", "-10", *ca)
    assert tail.returncode == 0 and tail.stdout == body[-10:]
    listing = ok(run("ls", f"{server.url}/data/cli/", *ca))
    assert "shard.bin" in listing and str(len(body)) in listing
    lines = ok(run("ls", f"{server.url}/data/", "--json", *ca)).splitlines()
    assert {"prefix": "cli/"} in [json.loads(line) for line in lines]
    assert run("put", str(src), url, "--if-none-match", "*", *ca).returncode == EXIT_PRECONDITION
    ok(run("rm", url, *ca))
    missing = run("get", url, str(tmp_path / "x"), *ca)
    assert missing.returncode == EXIT_NOT_FOUND
    assert missing.stderr.decode().count("\n") == 1 and "Traceback" not in missing.stderr.decode()
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.part").exists()


def test_recursive_put_and_get(server: GatewayProcess, tmp_path: Path) -> None:
    src = tmp_path / "dataset"
    files = {f"train/{i}.bin": os.urandom(1000 * i + 1) for i in range(5)}
    files["val/0.bin"] = b"v"
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    ca = ["--ca", str(server.ca)]
    out = json.loads(ok(run("put", "-r", str(src), f"{server.url}/data/ds/", "--json", *ca)))
    assert out["objects"] == 6
    dest = tmp_path / "back"
    ok(run("get", "-r", f"{server.url}/data/ds/", str(dest), *ca))
    assert {
        p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()
    } == files
    ok(run("rm", "-r", f"{server.url}/data/ds/", *ca))
    assert ok(run("ls", "-R", f"{server.url}/data/ds/", *ca)).strip() == ""


def test_stdin_put_and_env_trust(server: GatewayProcess) -> None:
    env = {"QUICSTORE_CA": str(server.ca)}
    ok(run("put", "-", f"{server.url}/data/stdin", stdin=b"from stdin", env=env))
    assert run("get", f"{server.url}/data/stdin", "-", env=env).stdout == b"from stdin"
    pinned = run("stat", f"{server.url}/data/stdin", "--pin", "ab" * 32)
    assert pinned.returncode == EXIT_NETWORK and "pinned" in pinned.stderr.decode()


def test_usage_errors_and_help(server: GatewayProcess) -> None:
    for command in ("serve", "token", "get", "put", "ls", "stat", "rm", "demo"):
        result = run(command, "--help")
        assert result.returncode == 0 and b"usage" in result.stdout
    no_trust = run("stat", f"{server.url}/data/k")
    assert no_trust.returncode == EXIT_USAGE and b"--ca" in no_trust.stderr
    assert run("stat", "http://x/y/z", "--insecure").returncode == EXIT_USAGE
    assert run("get", f"{server.url}/data/k", "--range", "9-1", "--insecure").returncode == (
        EXIT_USAGE
    )
    insecure = run("stat", f"{server.url}/data/nothing", "--insecure")
    assert insecure.returncode == EXIT_NOT_FOUND and b"warning" in insecure.stderr


def test_bad_ca_file_is_a_usage_error_named_at_once(server: GatewayProcess, tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("not a certificate\n")
    for ca, reason in ((tmp_path / "missing.pem", b"No such file"), (not_pem, b"PEM")):
        result = run("stat", f"{server.url}/data/k", "--ca", str(ca))
        assert result.returncode == EXIT_USAGE, result.stderr
        assert str(ca).encode() in result.stderr and reason in result.stderr
        assert b"Traceback" not in result.stderr and b"OpenSSL" not in result.stderr


def test_unreachable_gateway_is_a_network_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run("stat", f"quicstore://127.0.0.1:{port}/data/k", "--insecure")
    assert result.returncode == EXIT_NETWORK
    assert b"Traceback" not in result.stderr


def test_tokens_and_auth_exit_code(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path).start()
    try:
        ca = ["--ca", str(gw.ca)]
        denied = run("stat", f"{gw.url}/data/k", *ca)
        assert denied.returncode == EXIT_AUTH
        token = ok(
            run(
                "token",
                "create",
                "--root",
                str(tmp_path),
                "--scope",
                "data/x/",
                "--ops",
                "read,write",
                "--ttl",
                "10m",
            )
        ).strip()
        env = {"QUICSTORE_TOKEN": token}
        ok(run("put", "-", f"{gw.url}/data/x/1", *ca, env=env, stdin=b"ok"))
        assert (
            run("put", "-", f"{gw.url}/data/y/1", *ca, env=env, stdin=b"no").returncode == EXIT_AUTH
        )
        assert run("rm", f"{gw.url}/data/x/1", *ca, env=env).returncode == EXIT_AUTH
        bad_ops = run("token", "create", "--root", str(tmp_path), "--scope", "data", "--ops", "fly")
        assert bad_ops.returncode == EXIT_USAGE
    finally:
        gw.stop()


@pytest.mark.parametrize("server_verifies", [True, False])
def test_corrupted_block_on_disk_is_detected_and_named(
    tmp_path: Path, server_verifies: bool
) -> None:
    extra = ["--open"] + ([] if server_verifies else ["--no-verify-reads"])
    gw = GatewayProcess(tmp_path, extra=extra).start()
    try:
        ca = ["--ca", str(gw.ca)]
        src = tmp_path / "src.bin"
        src.write_bytes(os.urandom(1_000_000))
        ok(run("put", str(src), f"{gw.url}/data/victim", *ca))
        (data_file,) = (tmp_path / "store" / "data").rglob("*.obj")
        with data_file.open("r+b") as f:  # flip one bit in block 2 (bytes 131072-196607)
            f.seek(150_000)
            byte = f.read(1)
            f.seek(150_000)
            f.write(bytes([byte[0] ^ 0x10]))
        result = run("get", f"{gw.url}/data/victim", str(tmp_path / "out.bin"), *ca)
        assert result.returncode == EXIT_INTEGRITY
        message = result.stderr.decode()
        assert "block 2" in message and "131072-196607" in message, message
        assert not (tmp_path / "out.bin").exists()
        # A range that avoids the bad block still reads fine.
        ok(
            run(
                "get",
                f"{gw.url}/data/victim",
                str(tmp_path / "head.bin"),
                "--range",
                "0-131071",
                *ca,
            )
        )
    finally:
        gw.stop()
