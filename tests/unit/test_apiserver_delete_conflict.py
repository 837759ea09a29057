"""A delete racing with another write is retried on the fresh object, as kube-apiserver does.

A validating hook on DELETE writes the object once (a controller's status update landing
between the delete's read and its write). Without the retry the user's delete failed with
409 Conflict, which kube-apiserver never answers to a delete without preconditions.
"""

from __future__ import annotations

import asyncio
import copy
import tempfile
from pathlib import Path
from typing import Any

import pytest

from kubevisor.apiserver.errors import APIError
from kubevisor.apiserver.extensions import Extensions
from kubevisor.apiserver.registry import Registry, WriteOptions
from kubevisor.apiserver.storage import SQLiteStorage


def run_with_racing_write(finalizer: bool, precondition_rv: bool) -> Any:
    async def main() -> Any:
        with tempfile.TemporaryDirectory() as tmp:
            storage = SQLiteStorage(Path(tmp) / "state.db")
            await storage.start()
            extensions = Extensions()
            registry = Registry(storage, extensions)
            ns = registry.lookup("", "v1", "namespaces")
            cms = registry.lookup("", "v1", "configmaps")
            assert ns is not None and cms is not None
            await registry.create(ns, "", {"metadata": {"name": "default"}}, WriteOptions())
            meta: dict[str, Any] = {"name": "c"}
            if finalizer:
                meta["finalizers"] = ["example.com/keep"]
            created = await registry.create(
                cms, "default", {"metadata": meta, "data": {"a": "1"}}, WriteOptions()
            )
            raced = []

            async def racing_write(req: Any) -> None:
                if req.operation == "DELETE" and not raced:
                    raced.append(True)
                    fresh = copy.deepcopy(registry.get(cms, "default", "c"))
                    fresh["data"] = {"a": "2"}
                    await registry.update(cms, "default", "c", fresh, WriteOptions())

            extensions.add_validating("", "ConfigMap", racing_write)
            options = {"preconditions": {"resourceVersion": created["metadata"]["resourceVersion"]}}
            try:
                return await registry.delete(
                    cms, "default", "c", options if precondition_rv else None, WriteOptions()
                )
            finally:
                await storage.close()

    return asyncio.run(main())


@pytest.mark.parametrize("finalizer", [False, True])
def test_delete_retries_after_a_racing_write(finalizer: bool) -> None:
    obj, gone = run_with_racing_write(finalizer, precondition_rv=False)
    assert gone is (not finalizer)
    if finalizer:
        assert obj["metadata"]["deletionTimestamp"] and obj["data"] == {"a": "2"}


def test_delete_with_a_stale_resource_version_precondition_still_conflicts() -> None:
    with pytest.raises(APIError) as info:
        run_with_racing_write(False, precondition_rv=True)
    assert info.value.code == 409
