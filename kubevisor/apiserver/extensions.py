"""Extension points for in-process components (the VM layer, the node agent).

- Admission hooks, per (group, kind): `mutating` hooks may return a replacement object,
  `validating` hooks raise `APIError` to reject. They run on CREATE, UPDATE and DELETE,
  after defaulting and before storage, also for dry runs (`req.dry_run`).
- API groups served in-process: `add_api_group(group, version, resources, handler)`. The
  group appears in discovery; every request under `/apis/<group>/<version>/` goes to
  `handler(request, path)` (an aiohttp handler). `accept_websocket` negotiates the
  subprotocols kubectl and virtctl use (`v5.channel.k8s.io`, `plain.kubevirt.io`).
- Subresources of served resources, in-process: `add_subresource(group, plural, name,
  handler, verbs)` e.g. `("", "pods", "exec")` for the node agent's exec/attach; listed in
  discovery; `handler(request, path)` gets every method on `.../<plural>/<name>/<sub>[/...]`.
- A `LogSource` serves `pods/<name>/log` (the node agent provides it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

if TYPE_CHECKING:
    from kubevisor.apiserver.resources import ResourceType

Obj = dict[str, Any]


@dataclass
class AdmissionRequest:
    operation: str  # CREATE | UPDATE | DELETE
    resource: ResourceType
    subresource: str
    namespace: str
    name: str
    obj: Obj
    old: Obj | None
    dry_run: bool
    user: str


Mutator = Callable[[AdmissionRequest], Awaitable[Obj | None]]
Validator = Callable[[AdmissionRequest], Awaitable[None]]


@dataclass(frozen=True)
class APIPath:
    """A parsed request path inside an in-process API group."""

    group: str
    version: str
    namespace: str
    resource: str
    name: str
    subpath: tuple[str, ...]  # e.g. ("console",) or ("portforward", "22", "tcp")


GroupHandler = Callable[[web.Request, APIPath], Awaitable[web.StreamResponse]]


@dataclass
class APIGroupSpec:
    group: str
    version: str
    resources: list[Obj]  # discovery entries: name, singularName, namespaced, kind, verbs
    handler: GroupHandler


@dataclass
class SubresourceSpec:
    group: str
    plural: str
    name: str
    handler: GroupHandler
    verbs: list[str]
    kind: str = ""


@dataclass(frozen=True)
class LogOptions:
    container: str
    follow: bool = False
    tail_lines: int | None = None
    timestamps: bool = False
    previous: bool = False
    since_seconds: int | None = None
    limit_bytes: int | None = None


class LogSource(Protocol):
    """Produces a container's log as chunks of bytes; ends when the log ends (or never, on follow)."""

    def stream(self, pod: Obj, options: LogOptions) -> AsyncIterator[bytes]: ...


@dataclass
class Extensions:
    mutating: dict[tuple[str, str], list[Mutator]] = field(default_factory=dict)
    validating: dict[tuple[str, str], list[Validator]] = field(default_factory=dict)
    groups: dict[tuple[str, str], APIGroupSpec] = field(default_factory=dict)
    subresources: dict[tuple[str, str, str], SubresourceSpec] = field(default_factory=dict)
    log_source: LogSource | None = None

    def add_mutating(self, group: str, kind: str, hook: Mutator) -> None:
        self.mutating.setdefault((group, kind), []).append(hook)

    def add_validating(self, group: str, kind: str, hook: Validator) -> None:
        self.validating.setdefault((group, kind), []).append(hook)

    def hooks_for(self, group: str, kind: str) -> tuple[list[Mutator], list[Validator]]:
        return self.mutating.get((group, kind), []), self.validating.get((group, kind), [])

    def add_api_group(self, group: str, version: str, resources: list[Obj], handler: GroupHandler) -> None:
        self.groups[(group, version)] = APIGroupSpec(group, version, resources, handler)

    def add_subresource(
        self,
        group: str,
        plural: str,
        name: str,
        handler: GroupHandler,
        verbs: list[str] | None = None,
        kind: str = "",
    ) -> None:
        self.subresources[(group, plural, name)] = SubresourceSpec(
            group, plural, name, handler, verbs or ["get", "create"], kind
        )

    def set_log_source(self, source: LogSource) -> None:
        self.log_source = source


WEBSOCKET_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "plain.kubevirt.io")


async def accept_websocket(
    request: web.Request,
    protocols: tuple[str, ...] = WEBSOCKET_PROTOCOLS,
) -> web.WebSocketResponse:
    """Upgrade to a websocket, choosing the first of `protocols` the client offered."""
    ws = web.WebSocketResponse(protocols=protocols, heartbeat=30.0, max_msg_size=16 * 1024 * 1024)
    await ws.prepare(request)
    return ws
