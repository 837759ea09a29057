"""Work queue, expectations, informer store, leader-election decisions, quantities, selectors."""

import datetime as dt
import threading

import pytest

from kubevisor.controller.expectations import Expectations
from kubevisor.controller.informer import Store, by_controller_uid
from kubevisor.controller.leader import decide, lease_spec
from kubevisor.controller.quantity import format_bytes, parse_quantity, to_bytes, to_millis
from kubevisor.controller.selectors import label_selector_matches, label_selector_string
from kubevisor.controller.workqueue import ExponentialBackoff, WorkQueue


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_queue_dedups_and_never_hands_a_key_to_two_workers():
    q = WorkQueue("t")
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    assert q.get(0) == "a"
    q.add("a")  # while processing: re-queued only at done()
    assert q.get(0) == "b"
    assert q.get(0) is None
    q.done("a")
    assert q.get(0) == "a"


def test_add_after_and_rate_limit_backoff():
    clock = FakeClock()
    q = WorkQueue("t", ExponentialBackoff(base=1.0, cap=8.0), clock=clock)
    q.add_after("x", 5)
    assert q.get(0) is None
    clock.t = 5.0
    assert q.get(0) == "x"
    q.done("x")
    delays = [q.backoff.when("y") for _ in range(5)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0]
    q.forget("y")
    assert q.num_requeues("y") == 0


def test_queue_get_blocks_until_add_and_shutdown_releases():
    q = WorkQueue("t")
    got = []
    t = threading.Thread(target=lambda: got.append(q.get()))
    t.start()
    q.add("k")
    t.join(5)
    assert got == ["k"]
    t2 = threading.Thread(target=lambda: got.append(q.get()))
    t2.start()
    q.shutdown()
    t2.join(5)
    assert got == ["k", None]


def test_expectations_creations_deletions_and_timeout():
    clock = FakeClock()
    e = Expectations(timeout=10, clock=clock)
    assert e.satisfied("vm")
    e.expect_creations("vm", 2)
    e.creation_observed("vm")
    assert not e.satisfied("vm")
    e.creation_observed("vm")
    assert e.satisfied("vm")
    e.expect_deletions("vm", ["ns/a"])
    assert e.pending("vm") == (0, 1) and not e.satisfied("vm")
    clock.t = 11
    assert e.satisfied("vm")  # expired: the deletion may never be observed
    e.deletion_observed("vm", "ns/a")
    assert e.pending("vm") == (0, 0)


def test_store_replace_reports_changes_and_indexes():
    s = Store({"owner": by_controller_uid})

    def pod(name, rv, owner):
        return {
            "metadata": {
                "name": name,
                "namespace": "ns",
                "resourceVersion": rv,
                "ownerReferences": [{"uid": owner, "controller": True}],
            }
        }

    s.put(pod("a", "1", "o1"))
    s.put(pod("b", "1", "o1"))
    changes = s.replace([pod("a", "1", "o1"), pod("c", "2", "o2")])
    kinds = sorted(("add" if o is None else "del" if n is None else "upd") for o, n in changes)
    assert kinds == ["add", "del"]
    assert [p["metadata"]["name"] for p in s.by_index("owner", "o1")] == ["a"]
    got = s.get("ns/a")
    got["metadata"]["name"] = "mutated"
    assert s.get("ns/a")["metadata"]["name"] == "a"  # callers get copies


NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def test_leader_decisions():
    held = lease_spec("other", NOW - dt.timedelta(seconds=5), 15, 3, None)
    assert not decide(held, "me", NOW, 15).acquire
    expired = lease_spec("other", NOW - dt.timedelta(seconds=16), 15, 3, None)
    d = decide(expired, "me", NOW, 15)
    assert d.acquire and d.transitions == 4
    mine = decide(held | {"holderIdentity": "me"}, "me", NOW, 15)
    assert mine.acquire and mine.reason == "renew" and mine.transitions == 3
    assert decide({}, "me", NOW, 15).acquire


@pytest.mark.parametrize(
    ("text", "value"), [("128Mi", 128 * 2**20), ("1G", 10**9), ("0.5Gi", 2**29), ("1500", 1500)]
)
def test_quantities(text, value):
    assert to_bytes(text) == value


def test_cpu_and_format():
    assert to_millis("100m") == 100 and to_millis("2") == 2000 and to_millis(1.5) == 1500
    assert format_bytes(290 * 2**20) == "290Mi" and format_bytes(1000) == "1000"
    with pytest.raises(ValueError, match="invalid quantity"):
        parse_quantity("12Qi")


def test_label_selectors():
    sel = {
        "matchLabels": {"app": "x"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["web", "db"]},
            {"key": "legacy", "operator": "DoesNotExist"},
        ],
    }
    assert label_selector_matches(sel, {"app": "x", "tier": "db"})
    assert not label_selector_matches(sel, {"app": "x", "tier": "db", "legacy": "1"})
    assert label_selector_matches({}, {"any": "thing"})
    assert not label_selector_matches(None, {})
    assert label_selector_string(sel) == "app=x,tier in (db,web),!legacy"
