"""The apiserver's side of the link to node agents: mutual TLS to a node's access server.

A node agent advertises HOST:PORT in its Node's `kubevisor.io/access-endpoint` annotation.
The connection checks that the server's certificate was issued by the node-access CA for that
host, and presents the apiserver's client certificate.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from kubevisor.apiserver.certs import NodeAccessPKI
from kubevisor.apiserver.errors import APIError
from kubevisor.node.node_object import ACCESS_ENDPOINT_ANNOTATION

Obj = dict[str, Any]
CONNECT_TIMEOUT = 10.0


def endpoint_of(node: Obj) -> str:
    """The node's access endpoint; 503 when the node advertises none."""
    meta = node.get("metadata") or {}
    value = str((meta.get("annotations") or {}).get(ACCESS_ENDPOINT_ANNOTATION) or "")
    if not value:
        raise APIError(
            503,
            f'node "{meta.get("name")}" does not serve VM access (its agent runs without the --access-* '
            "certificates)",
            "ServiceUnavailable",
        )
    return value


@dataclass(frozen=True)
class NodeResponse:
    status: int
    body: bytes
    content_type: str


class NodeDialer:
    def __init__(self, pki: NodeAccessPKI) -> None:
        self._pki = pki
        self._session: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self._pki.ca))
        ctx.load_cert_chain(str(self._pki.client_cert), str(self._pki.client_key))
        return ctx

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl()),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
            )
        return self._session

    @staticmethod
    def url(endpoint: str, namespace: str, name: str, sub: str, uid: str) -> str:
        path = (f"/v1/namespaces/{quote(namespace, safe='')}/virtualmachineinstances/"
                f"{quote(name, safe='')}/{sub}")
        return f"https://{endpoint}{path}?{urlencode({'uid': uid})}"

    def _unreachable(self, endpoint: str, err: Exception) -> APIError:
        return APIError(503, f"cannot reach the node agent at {endpoint}: {err}", "ServiceUnavailable")

    async def request(self, method: str, endpoint: str, url: str, timeout: float = 60.0) -> NodeResponse:
        try:
            async with self.session.request(
                method, url, timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=CONNECT_TIMEOUT)
            ) as resp:
                return NodeResponse(resp.status, await resp.read(), resp.content_type)
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as err:
            raise self._unreachable(endpoint, err) from None

    async def websocket(self, endpoint: str, url: str) -> aiohttp.ClientWebSocketResponse:
        """The node's websocket; a refusal becomes the node's Status (status code and message)."""
        try:
            return await self.session.ws_connect(url, protocols=("plain.kubevirt.io",), max_msg_size=0,
                                                 autoping=True, heartbeat=30.0)
        except aiohttp.WSServerHandshakeError as err:
            if err.status >= 400:
                refusal = await self.request("GET", endpoint, url)
                raise node_error(refusal) from None
            raise self._unreachable(endpoint, err) from None
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as err:
            raise self._unreachable(endpoint, err) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def node_error(resp: NodeResponse) -> APIError:
    """The node's refusal as the apiserver's error (its Status message and reason, when it sent one)."""
    message = resp.body.decode(errors="replace").strip() or f"node answered {resp.status}"
    reason = None
    try:
        doc = json.loads(resp.body)
        if isinstance(doc, dict):
            message = str(doc.get("message") or message)
            reason = doc.get("reason")
    except ValueError:
        pass
    return APIError(resp.status, message, reason)
