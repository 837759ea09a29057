"""The connection to the apiserver, configured exactly as kubectl is: `--kubeconfig`, `KUBECONFIG`
(several files merged), `--context`, `-n/--namespace`, the namespace of the current context.

Configuration is loaded by the official kubernetes client's kubeconfig loader (so exec plugins,
client certificates, tokens and CA data all work); requests and websockets go through aiohttp.
Every failure becomes a `VirtctlError` carrying one line for the user.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

SUBRESOURCES = "/apis/subresources.kubevirt.io/v1"
KUBEVIRT = "/apis/kubevirt.io/v1"
PLAIN_PROTOCOL = "plain.kubevirt.io"
VM, VMI = "virtualmachines", "virtualmachineinstances"

Obj = dict[str, Any]


class VirtctlError(Exception):
    """A failure to report to the user as one line; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFound(VirtctlError):
    pass


@dataclass
class ClientConfig:
    server: str
    namespace: str = "default"
    headers: dict[str, str] = field(default_factory=dict)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True
    kubeconfig: str | None = None
    context: str | None = None

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def kubectl_args(self) -> list[str]:
        """The connection flags to hand to a child virtctl (ssh's ProxyCommand)."""
        args: list[str] = []
        if self.kubeconfig:
            args += ["--kubeconfig", self.kubeconfig]
        if self.context:
            args += ["--context", self.context]
        return args


def load_config(
    kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None
) -> ClientConfig:
    """kubectl's precedence: --kubeconfig, else $KUBECONFIG (merged), else ~/.kube/config."""
    from kubernetes import client as kclient
    from kubernetes.config import ConfigException, kube_config

    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    if not kubeconfig and not os.environ.get("KUBECONFIG") and not os.path.exists(path):
        raise VirtctlError(
            "no configuration has been provided: set --kubeconfig or KUBECONFIG (or write ~/.kube/config)"
        )
    cfg = kclient.Configuration()
    try:
        kube_config.load_kube_config(
            config_file=path, context=context, client_configuration=cfg, persist_config=False
        )
        contexts, active = kube_config.list_kube_config_contexts(config_file=path)
    except ConfigException as err:
        raise VirtctlError(f"invalid configuration: {err}") from err
    except OSError as err:
        raise VirtctlError(f"cannot read kubeconfig {path}: {err.strerror}") from err
    chosen = active
    if context:
        chosen = next((c for c in contexts if c.get("name") == context), active)
    ns = namespace or ((chosen or {}).get("context") or {}).get("namespace") or "default"
    headers: dict[str, str] = {}
    api_key = dict(cfg.api_key or {})
    token = api_key.get("BearerToken") or api_key.get("authorization")
    if token:
        headers["Authorization"] = token if " " in token else f"Bearer {token}"
    elif cfg.username:
        creds = base64.b64encode(f"{cfg.username}:{cfg.password or ''}".encode()).decode()
        headers["Authorization"] = f"Basic {creds}"
    return ClientConfig(
        server=str(cfg.host).rstrip("/"),
        namespace=ns,
        headers=headers,
        ca_file=cfg.ssl_ca_cert,
        cert_file=cfg.cert_file,
        key_file=cfg.key_file,
        verify=bool(cfg.verify_ssl),
        kubeconfig=kubeconfig,
        context=context,
    )


def resource_path(base: str, namespace: str, resource: str, name: str, sub: str = "") -> str:
    path = f"{base}/namespaces/{quote(namespace, safe='')}/{resource}/{quote(name, safe='')}"
    return f"{path}/{sub}" if sub else path


def status_message(body: bytes, status: int, reason: str) -> str:
    """The `message` of a metav1.Status body, else the body's first line, else the HTTP reason."""
    text = body.decode(errors="replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("message"):
        return str(doc["message"])
    if text:
        return text.splitlines()[0]
    return f"{status} {reason}".strip()


def http_error(status: int, message: str) -> VirtctlError:
    if status == 401:
        return VirtctlError(f"Unauthorized: the server rejected the credentials ({message})", status)
    if status == 403:
        return VirtctlError(f"Forbidden: {message}", status)
    if status == 404:
        return NotFound(message, status)
    return VirtctlError(message, status)


class Client:
    """An aiohttp session bound to one cluster; use as `async with Client(config) as client`."""

    def __init__(self, config: ClientConfig, timeout: float = 30.0) -> None:
        self.config = config
        self.namespace = config.namespace
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        try:
            ssl_ctx = self.config.ssl_context()
        except (OSError, ssl.SSLError) as err:
            raise VirtctlError(f"cannot set up TLS: {err}") from err
        connector = aiohttp.TCPConnector(ssl=ssl_ctx)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self.config.headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use Client as an async context manager"
        return self._session

    def _url(self, path: str, query: dict[str, str] | None = None) -> str:
        url = self.config.server + path
        return f"{url}?{urlencode(query)}" if query else url

    def _unreachable(self, err: Exception) -> VirtctlError:
        return VirtctlError(f"cannot reach the server at {self.config.server}: {err}")

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        raw: bool = False,
    ) -> Any:
        """One REST call. Returns the decoded JSON body (or bytes when `raw`); raises VirtctlError."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        try:
            async with self.session.request(
                method,
                self._url(path, query),
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout * 4, sock_connect=self._timeout),
            ) as resp:
                content = await resp.read()
                if resp.status >= 400:
                    raise http_error(resp.status, status_message(content, resp.status, resp.reason or ""))
        except aiohttp.ClientConnectionError as err:
            raise self._unreachable(err) from err
        except TimeoutError as err:
            raise VirtctlError(f"the server at {self.config.server} did not answer in time") from err
        if raw:
            return content
        if not content:
            return None
        try:
            return json.loads(content)
        except ValueError:
            return content.decode(errors="replace")

    async def get(self, resource: str, name: str, namespace: str | None = None) -> Obj:
        result = await self.request(
            "GET", resource_path(KUBEVIRT, namespace or self.namespace, resource, name)
        )
        return dict(result or {})

    async def get_or_none(self, resource: str, name: str, namespace: str | None = None) -> Obj | None:
        try:
            return await self.get(resource, name, namespace)
        except NotFound:
            return None

    async def subresource(
        self,
        method: str,
        resource: str,
        name: str,
        sub: str,
        body: Any = None,
        namespace: str | None = None,
        query: dict[str, str] | None = None,
        raw: bool = False,
    ) -> Any:
        path = resource_path(SUBRESOURCES, namespace or self.namespace, resource, name, sub)
        return await self.request(method, path, body=body, query=query, raw=raw)

    async def websocket(
        self, resource: str, name: str, sub: str, namespace: str | None = None
    ) -> aiohttp.ClientWebSocketResponse:
        """Open a `plain.kubevirt.io` websocket; a refused upgrade becomes the server's Status message."""
        path = resource_path(SUBRESOURCES, namespace or self.namespace, resource, name, sub)
        url = self._url(path)
        try:
            return await self.session.ws_connect(
                url, protocols=(PLAIN_PROTOCOL,), autoping=True, heartbeat=None, max_msg_size=0
            )
        except aiohttp.WSServerHandshakeError as err:
            if err.status < 400:
                raise VirtctlError(f"websocket upgrade refused: {err.status} {err.message}") from err
            message = await self._refusal_message(url, err.status)
            raise http_error(err.status, message) from err
        except aiohttp.ClientConnectionError as err:
            raise self._unreachable(err) from err

    async def _refusal_message(self, url: str, status: int) -> str:
        """aiohttp drops the body of a refused upgrade; ask again to read the Status it carries."""
        headers = {
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Protocol": PLAIN_PROTOCOL,
        }
        try:
            async with self.session.get(url, headers=headers) as resp:
                if resp.status == 101:
                    resp.close()
                    return f"{status} (the upgrade was refused once)"
                return status_message(await resp.read(), resp.status, resp.reason or "")
        except aiohttp.ClientError:
            return str(status)
