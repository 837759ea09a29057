"""A real `kubevisor apiserver` subprocess for e2e tests, and helpers to drive kubectl at it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KUBECTL_DIR = Path("/usr/lib/google-cloud-sdk/bin")
KUBECTL_VERSIONS = ["1.29", "1.30", "1.31", "1.32", "1.33"]


def kubectl_binary(version: str) -> Path:
    return KUBECTL_DIR / f"kubectl.{version}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    data_dir: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "admin.kubeconfig"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def token(self) -> str:
        config = yaml.safe_load(self.kubeconfig.read_text())
        return str(config["users"][0]["user"]["token"])

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.data_dir / "pki" / "ca.crt"))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token()}")
        if data is not None:
            req.add_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, context=self.ssl_context(), timeout=30) as resp:
                text = resp.read()
                status, hdrs = resp.status, dict(resp.headers)
        except urllib.error.HTTPError as err:
            text, status, hdrs = err.read(), err.code, dict(err.headers)
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = text.decode(errors="replace")
        return status, parsed, hdrs


def start_server(
    data_dir: Path,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
    module: str = "kubevisor.cli",
    extra_args: list[str] | None = None,
) -> RunningServer:
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "server.log"
    env = dict(os.environ)
    env.update(extra_env or {})
    argv = [
        sys.executable,
        "-m",
        module,
        "apiserver",
        "--data-dir",
        str(data_dir),
        "--listen",
        f"127.0.0.1:{port}",
        *(extra_args or []),
    ]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = RunningServer(data_dir, port, process, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"apiserver exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        if server.kubeconfig.exists():
            with contextlib.suppress(OSError, ValueError):
                status, _, _ = server.request("GET", "/readyz")
                if status == 200:
                    return server
        time.sleep(0.1)
    stop_server(server)
    raise RuntimeError("apiserver did not become ready")


def stop_server(server: RunningServer, kill: bool = False) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@contextlib.contextmanager
def running_server(data_dir: Path, **kwargs: Any) -> Iterator[RunningServer]:
    server = start_server(data_dir, **kwargs)
    try:
        yield server
    finally:
        stop_server(server)


@dataclass
class Kubectl:
    binary: Path
    server: RunningServer
    cache_dir: Path

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            str(self.binary),
            "--kubeconfig",
            str(self.server.kubeconfig),
            "--cache-dir",
            str(self.cache_dir),
            *args,
        ]
        result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}\n{result.stdout}"
            )
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)
