"""Storage for the embedded apiserver: a revisioned key-value log plus a watch cache.

The interface (`Storage`) knows only keys, revisions and JSON objects. Keys look like
`<resource-prefix>/<namespace>/<name>`; the revision of the last write to a key is the
object's resourceVersion. `SQLiteStorage` is the default backend (kine design); an etcd
backend implements the same protocol.
"""

from kubevisor.apiserver.storage.base import (
    AlreadyExistsError,
    CompactedError,
    ConflictError,
    NotFoundError,
    Storage,
    StorageError,
    StorageUnavailableError,
    Watcher,
    WatchEvent,
)
from kubevisor.apiserver.storage.sqlite import SQLiteStorage

__all__ = [
    "AlreadyExistsError",
    "CompactedError",
    "ConflictError",
    "NotFoundError",
    "SQLiteStorage",
    "Storage",
    "StorageError",
    "StorageUnavailableError",
    "WatchEvent",
    "Watcher",
]
