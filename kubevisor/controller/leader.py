"""Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection.

Only the holder of the Lease runs the controllers. The holder renews `spec.renewTime`
every `retry_period`; a candidate takes the Lease over when it has not been renewed for
`leaseDurationSeconds`. Writes carry the Lease's resourceVersion, so two candidates
racing for the same expired Lease cannot both win (one gets 409 Conflict). A leader that
cannot renew within `renew_deadline` stops leading (the process exits, as
kube-controller-manager does), so two leaders never act at once for longer than that.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kubevisor.controller.kube import LEASES, NAMESPACES, ApiError, Kube, Obj

log = logging.getLogger(__name__)


def format_micro_time(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    text = value.replace("Z", "+00:00")
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class LeaseDecision:
    acquire: bool
    transitions: int
    reason: str


def decide(spec: dict[str, object], identity: str, now: dt.datetime, default_duration: int) -> LeaseDecision:
    """May `identity` write itself into a Lease with this spec now?"""
    holder = spec.get("holderIdentity") or ""
    transitions = int(spec.get("leaseTransitions") or 0)  # type: ignore[call-overload]
    if holder == identity:
        return LeaseDecision(True, transitions, "renew")
    if not holder:
        return LeaseDecision(True, transitions + 1, "unheld")
    renew = parse_time(str(spec.get("renewTime") or "")) or parse_time(str(spec.get("acquireTime") or ""))
    duration = int(spec.get("leaseDurationSeconds") or default_duration)  # type: ignore[call-overload]
    if renew is None or now >= renew + dt.timedelta(seconds=duration):
        return LeaseDecision(True, transitions + 1, f"expired lease of {holder}")
    return LeaseDecision(False, transitions, f"held by {holder}")


def lease_spec(
    identity: str, now: dt.datetime, duration: int, transitions: int, acquire_time: str | None
) -> Obj:
    stamp = format_micro_time(now)
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": duration,
        "acquireTime": acquire_time or stamp,
        "renewTime": stamp,
        "leaseTransitions": transitions,
    }


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: int = 15,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.leading = threading.Event()
        self.lost = threading.Event()

    def try_acquire_or_renew(self) -> bool:
        now = dt.datetime.now(dt.UTC)
        try:
            lease = self.kube.get(LEASES, self.namespace, self.name)
        except ApiError as exc:
            if not exc.not_found:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": lease_spec(self.identity, now, self.lease_duration, 0, None),
            }
            try:
                self.kube.create(LEASES, self.namespace, body)
            except ApiError as create_exc:
                if create_exc.not_found:  # the namespace is missing (fresh embedded apiserver)
                    self._ensure_namespace()
                    return False
                if create_exc.conflict:
                    return False
                raise
            return True
        spec = lease.get("spec") or {}
        decision = decide(spec, self.identity, now, self.lease_duration)
        if not decision.acquire:
            return False
        acquire_time = spec.get("acquireTime") if decision.reason == "renew" else None
        lease["spec"] = lease_spec(
            self.identity, now, self.lease_duration, decision.transitions, acquire_time
        )
        try:
            self.kube.replace(LEASES, lease)
        except ApiError as exc:
            if exc.conflict:
                return False
            raise
        if decision.reason != "renew":
            log.info(
                "leader election: %s acquired %s/%s (%s)",
                self.identity,
                self.namespace,
                self.name,
                decision.reason,
            )
        return True

    def _ensure_namespace(self) -> None:
        try:
            self.kube.create(
                NAMESPACES,
                None,
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}},
            )
        except ApiError as exc:
            if not exc.conflict:
                raise

    def run(self, stop: threading.Event, on_started: Callable[[], None]) -> None:
        """Block until leading, call `on_started`, then keep renewing until `stop` or loss."""
        while not stop.is_set():
            try:
                if self.try_acquire_or_renew():
                    break
            except Exception as exc:
                log.warning("leader election: %s", exc)
            stop.wait(self.retry_period)
        if stop.is_set():
            return
        self.leading.set()
        on_started()
        last_renew = time.monotonic()
        while not stop.wait(self.retry_period):
            try:
                if self.try_acquire_or_renew():
                    last_renew = time.monotonic()
                    continue
                log.error("leader election: lease %s/%s taken by another holder", self.namespace, self.name)
                break
            except Exception as exc:
                log.warning("leader election: renew failed: %s", exc)
            if time.monotonic() - last_renew > self.renew_deadline:
                log.error("leader election: could not renew within %.0fs", self.renew_deadline)
                break
        else:
            return
        self.leading.clear()
        self.lost.set()

    def release(self) -> None:
        """Give the Lease up on a clean shutdown so a successor need not wait for expiry."""
        try:
            lease = self.kube.get(LEASES, self.namespace, self.name)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            spec["holderIdentity"] = None
            spec["renewTime"] = format_micro_time(
                dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.lease_duration)
            )
            lease["spec"] = spec
            self.kube.replace(LEASES, lease)
        except Exception as exc:
            log.debug("leader election: release failed: %s", exc)
