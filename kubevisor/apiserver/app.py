"""The embedded apiserver assembled: storage, registry, controllers, HTTPS listener.

Other components embed it (`kubevisor up`) through `EmbeddedAPIServer`:

    server = EmbeddedAPIServer(data_dir)
    server.extensions.add_validating("kubevirt.io", "VirtualMachine", hook)
    server.extensions.add_api_group("subresources.kubevirt.io", "v1", resources, handler)
    server.extensions.set_log_source(source)
    await server.start("127.0.0.1", 6443)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from pathlib import Path

from aiohttp import web

from kubevisor.apiserver.certs import add_token, ensure_pki, ensure_tokens, write_kubeconfig
from kubevisor.apiserver.controllers import Controllers
from kubevisor.apiserver.extensions import Extensions
from kubevisor.apiserver.metrics import RequestMetrics
from kubevisor.apiserver.registry import SYSTEM_NAMESPACES, Registry, WriteOptions
from kubevisor.apiserver.server import APIServer
from kubevisor.apiserver.storage import SQLiteStorage

log = logging.getLogger(__name__)
COMPACT_INTERVAL = 300.0
COMPACT_KEEP = 10000


class EmbeddedAPIServer:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.extensions = Extensions()
        self.storage = SQLiteStorage(data_dir / "state.db")
        self.registry = Registry(self.storage, self.extensions)
        self.controllers = Controllers(self.storage, self.registry)
        self.kubeconfig_path = data_dir / "admin.kubeconfig"
        self.metrics = RequestMetrics()  # /metrics; in-process API groups add their own series
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._compactor: asyncio.Task[None] | None = None
        self.api: APIServer | None = None
        self._server_url = ""
        self._ca_crt: Path | None = None

    async def start(self, host: str, port: int) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        ca_crt, srv_crt, srv_key = await asyncio.to_thread(ensure_pki, self.data_dir / "pki", [host])
        admin_token, tokens = ensure_tokens(self.data_dir / "tokens.csv")
        await self.storage.start()
        for crd_key, crd in self.storage.scan("/apiextensions.k8s.io/customresourcedefinitions/")[0]:
            del crd_key
            self.registry.register_crd(crd)
        await self._seed()
        self.api = APIServer(self.storage, self.registry, tokens, f"{host}:{port}", self.metrics)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(srv_crt), str(srv_key))
        ctx.set_alpn_protocols(["http/1.1"])
        self._runner = web.AppRunner(
            self.api.app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ctx, backlog=1024)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        self.api.address = f"{host}:{self.port}"
        shown = f"[{host}]" if ":" in host else host
        self._server_url, self._ca_crt = f"https://{shown}:{self.port}", ca_crt
        write_kubeconfig(self.kubeconfig_path, self._server_url, ca_crt, admin_token)
        await self.controllers.start()
        self._compactor = asyncio.create_task(self._compact_loop())
        self.api.ready = True

    def kubeconfig_for(self, user: str, path: Path | None = None) -> Path:
        """A kubeconfig for `user` (token created on first use), e.g. "system:kubevisor-controller".

        Admission hooks see the user as `AdmissionRequest.user`; every user may do everything
        (there is no RBAC). Written to DATA/<user>.kubeconfig unless `path` is given.
        """
        if not re.fullmatch(r"[A-Za-z0-9:._@-]{1,128}", user):
            raise ValueError(f"user: invalid name {user!r}")
        if self.api is None or self._ca_crt is None:
            raise RuntimeError("kubeconfig_for: the server is not started")
        token = add_token(self.data_dir / "tokens.csv", user)
        self.api.tokens[token] = user
        target = path or self.data_dir / f"{user.replace(':', '_')}.kubeconfig"
        write_kubeconfig(target, self._server_url, self._ca_crt, token, user)
        return target

    def pod_alive(self, pod: dict[str, object]) -> bool:
        """Whether a followed pod log should go on: the same pod exists and is not finished."""
        meta = pod.get("metadata")
        if not isinstance(meta, dict):
            return False
        current = self.storage.get(f"/core/pods/{meta.get('namespace')}/{meta.get('name')}")
        if current is None or current["metadata"].get("uid") != meta.get("uid"):
            return False
        return (current.get("status") or {}).get("phase") not in ("Succeeded", "Failed")

    async def _seed(self) -> None:
        rt = self.registry.lookup("", "v1", "namespaces")
        assert rt is not None
        for name in SYSTEM_NAMESPACES:
            if self.storage.get(rt.key("", name)) is None:
                await self.registry.create(
                    rt, "", {"metadata": {"name": name}}, WriteOptions(field_manager="kubevisor-apiserver")
                )

    async def _compact_loop(self) -> None:
        while True:
            await asyncio.sleep(COMPACT_INTERVAL)
            try:
                await self.storage.compact(COMPACT_KEEP)
            except Exception:
                log.exception("compaction failed")

    async def stop(self) -> None:
        if self._compactor is not None:
            self._compactor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._compactor
        await self.controllers.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.storage.close()
