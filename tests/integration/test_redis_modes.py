"""Redis modes: TLS with a CA of the test's own (verify and hostname options), a standalone URL pointed
at a cluster node stops start-up with what to write instead, and Redis errors never reach a client."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.errors import ConfigError, StoreUnavailableError
from app.settings import RedisSettings, RedisTLSSettings
from app.state.connect import build, check_mode, connect
from app.state.store import RedisStore, ThreadRecord
from tests.support.servers import free_port


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A redis-server with only a TLS port, its certificate (for 127.0.0.1) signed by a CA made here."""
    server, openssl = shutil.which("redis-server"), shutil.which("openssl")
    if server is None or openssl is None:
        pytest.skip("redis-server and openssl are needed")
    d = tmp_path_factory.mktemp("tls")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        str(d / "ca.key"),
        "-out",
        str(d / "ca.crt"),
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(d / "server.key"),
        "-out",
        str(d / "server.csr"),
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        str(d / "server.csr"),
        "-CA",
        str(d / "ca.crt"),
        "-CAkey",
        str(d / "ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        str(d / "san.ext"),
        "-out",
        str(d / "server.crt"),
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            server,
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--tls-cert-file",
            str(d / "server.crt"),
            "--tls-key-file",
            str(d / "server.key"),
            "--tls-ca-cert-file",
            str(d / "ca.crt"),
            "--tls-auth-clients",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    try:
        yield port, d / "ca.crt"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _works(url: str, settings: RedisSettings, prefix: str) -> None:
    connection = build(url, settings)
    redis = connection.client
    try:
        store = RedisStore(redis, prefix=prefix, commands=connection.commands)
        for _ in range(50):
            try:
                await store.ping()
                break
            except StoreUnavailableError:
                await asyncio.sleep(0.1)
        await store.record_thread(ThreadRecord("thread_tls", "demo", "assistants", "alice", 1.0, 1.0))
        assert await store.get_thread("thread_tls") is not None
        assert await store.probe("tls-test")
    finally:
        await connection.aclose()


async def test_tls_with_the_ca_file_verifies_the_server(tls_redis: tuple[int, Path], redis_prefix: str) -> None:
    port, ca = tls_redis
    await _works(f"rediss://127.0.0.1:{port}/0", RedisSettings(tls=RedisTLSSettings(ca_file=str(ca))), redis_prefix)


async def test_tls_without_the_ca_fails_with_a_message_that_names_no_host(
    tls_redis: tuple[int, Path], redis_prefix: str
) -> None:
    port, _ = tls_redis
    connection = build(f"rediss://127.0.0.1:{port}/0", RedisSettings())
    try:
        store = RedisStore(connection.client, prefix=redis_prefix, commands=connection.commands)
        for check in (store.probe("tls-test"), store.ping()):  # redis-py's connections, then a lean channel
            with pytest.raises(StoreUnavailableError) as caught:
                await check
            text = caught.value.message
            assert "127.0.0.1" not in text and str(port) not in text and "certificate" not in text.lower()
    finally:
        await connection.aclose()


async def test_hostname_check_and_verify_options(tls_redis: tuple[int, Path], redis_prefix: str) -> None:
    port, ca = tls_redis
    # The certificate names 127.0.0.1, not localhost: the hostname check refuses it unless switched off.
    strict = RedisSettings(tls=RedisTLSSettings(ca_file=str(ca)))
    connection = build(f"rediss://localhost:{port}/0", strict)
    try:
        store = RedisStore(connection.client, prefix=redis_prefix, commands=connection.commands)
        with pytest.raises(StoreUnavailableError):
            await store.ping()
        with pytest.raises(StoreUnavailableError):
            await store.probe("tls-test")
    finally:
        await connection.aclose()
    loose = RedisSettings(tls=RedisTLSSettings(ca_file=str(ca), check_hostname=False))
    await _works(f"rediss://localhost:{port}/0", loose, redis_prefix)
    await _works(f"rediss://127.0.0.1:{port}/0", RedisSettings(tls=RedisTLSSettings(verify=False)), redis_prefix)


def test_tls_options_on_a_plain_url_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="rediss://"):
        connect("redis://127.0.0.1:6379/0", RedisSettings(tls=RedisTLSSettings(ca_file="/x.pem")))
    with pytest.raises(ConfigError, match=r"redis\+cluster://"):
        connect("memcached://127.0.0.1:1", RedisSettings())


async def test_a_standalone_url_on_a_cluster_node_stops_start_up(redis_cluster_url: str) -> None:
    plain = redis_cluster_url.replace("redis+cluster://", "redis://")
    redis = connect(plain)
    try:
        with pytest.raises(ConfigError) as caught:
            await check_mode(redis, plain)
        assert f"write {redis_cluster_url}" in str(caught.value)
    finally:
        await redis.aclose()
    cluster = connect(redis_cluster_url)
    try:
        await check_mode(cluster, redis_cluster_url)  # the right client passes
    finally:
        await cluster.aclose()


async def test_cluster_errors_are_store_errors_without_redis_text(redis_cluster_url: str, redis_prefix: str) -> None:
    """A standalone client on a cluster node (if start-up were bypassed) gets MOVED: a 503, not a 500."""
    plain = redis_cluster_url.replace("redis+cluster://", "redis://")
    connection = build(plain)
    redis = connection.client
    try:
        store = RedisStore(redis, prefix=redis_prefix, commands=connection.commands)
        messages: list[str] = []
        for n in range(20):
            try:
                await store.record_thread(ThreadRecord(f"thread_{n}", "demo", "assistants", "alice", 1.0, 1.0))
            except StoreUnavailableError as exc:
                messages.append(exc.message)
        assert messages
        assert not [m for m in messages if "MOVED" in m or "127.0.0.1" in m]
    finally:
        await connection.aclose()
