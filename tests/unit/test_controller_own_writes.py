"""OwnWrites: a reconcile waits while the cache is older than the controller's own last write."""

from __future__ import annotations

from kubevisor.controller.own_writes import OwnWrites


def obj(rv: str) -> dict[str, object]:
    return {"metadata": {"name": "a", "namespace": "ns", "resourceVersion": rv}}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_waits_until_the_event_of_our_write_arrives() -> None:
    clock = Clock()
    w = OwnWrites(timeout=5.0, clock=clock)
    w.observed("ns/a", obj("10"))
    w.wrote("ns/a", obj("12"))
    assert w.behind("ns/a", obj("10")) == 5.0
    w.observed("ns/a", obj("11"))  # someone else's earlier write: still behind
    clock.now += 1
    assert w.behind("ns/a", obj("11")) == 4.0
    w.observed("ns/a", obj("12"))
    assert w.behind("ns/a", obj("12")) is None
    assert w.behind("ns/a", obj("13")) is None  # later changes by others: current


def test_event_before_response_and_deletion_and_timeout() -> None:
    clock = Clock()
    w = OwnWrites(timeout=5.0, clock=clock)
    w.observed("ns/a", obj("7"))
    w.wrote("ns/a", obj("7"))  # the watch event beat the response
    assert w.behind("ns/a", obj("7")) is None
    w.wrote("ns/a", obj("8"))
    w.observed("ns/a", None)  # deleted
    assert w.behind("ns/a", obj("7")) is None
    w.wrote("ns/a", obj("9"))
    clock.now += 6  # a relist skipped our version: trust the cache again
    assert w.behind("ns/a", obj("20")) is None
    assert w.behind("ns/a", obj("8")) is None
