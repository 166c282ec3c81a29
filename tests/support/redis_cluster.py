"""A real 3-master Redis Cluster on loopback, started with redis-server and redis-cli, for one test session."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.servers import free_port


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster-bus port (+10000) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port < 55000 and port not in ports and _bindable(port + 10000):
            ports.append(port)
    return ports


class RedisCluster3:
    def __init__(self) -> None:
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            raise FileNotFoundError("redis-server and redis-cli are needed for the cluster tests")
        self.server, self.cli = server, cli
        self.dir = Path(tempfile.mkdtemp(prefix="ab-cluster-"))
        self.ports = cluster_ports(3)
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self) -> RedisCluster3:
        for port in self.ports:
            args = [
                self.server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.dir / f"nodes-{port}.conf"),
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 15
        while not all(self._answers(p) for p in self.ports):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                self.stop()
                raise RuntimeError("the cluster's redis-servers did not start")
            time.sleep(0.05)
        create = [self.cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports]]
        subprocess.run(
            [*create, "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=30
        )
        while not all(self._state_ok(p) for p in self.ports):
            if time.monotonic() > deadline + 15:
                self.stop()
                raise RuntimeError("the cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        return self

    def _answers(self, port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _state_ok(self, port: int) -> bool:
        out = subprocess.run(
            [self.cli, "-p", str(port), "cluster", "info"], capture_output=True, text=True, timeout=5, check=False
        )
        return "cluster_state:ok" in out.stdout

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
