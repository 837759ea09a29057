"""A LogSource reading container logs from files in kubelet's layout.

`<root>/<namespace>_<pod>_<uid>/<container>/<restart>.log`, plain text. The node agent's pod
runner writes there; `follow` keeps reading as the file grows until the pod is gone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from kubevisor.apiserver.extensions import LogOptions

Obj = dict[str, Any]


class PodLogDirectory:
    def __init__(self, root: Path, alive: Callable[[Obj], bool] | None = None, poll: float = 0.2) -> None:
        self.root = root
        self.alive = alive or (lambda pod: True)
        self.poll = poll

    def path_for(self, pod: Obj, container: str, previous: bool = False) -> Path | None:
        meta = pod.get("metadata") or {}
        directory = self.root / f"{meta.get('namespace')}_{meta.get('name')}_{meta.get('uid')}" / container
        logs = sorted(directory.glob("*.log"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)
        if previous:
            return logs[-2] if len(logs) >= 2 else None
        return logs[-1] if logs else None

    async def stream(self, pod: Obj, options: LogOptions) -> AsyncIterator[bytes]:
        path = self.path_for(pod, options.container, options.previous)
        if path is None:
            return
        data = await asyncio.to_thread(path.read_bytes)
        lines = data.splitlines(keepends=True)
        if options.tail_lines is not None:
            lines = lines[-options.tail_lines :] if options.tail_lines > 0 else []
        offset = len(data)
        for line in lines:
            yield self._stamp(line, options)
        if not options.follow:
            return
        pending = b""
        while self.alive(pod):
            await asyncio.sleep(self.poll)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                return
            if size <= offset:
                continue
            with path.open("rb") as fh:
                fh.seek(offset)
                chunk = fh.read(size - offset)
            offset += len(chunk)
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield self._stamp(line + b"\n", options)

    @staticmethod
    def _stamp(line: bytes, options: LogOptions) -> bytes:
        if not options.timestamps:
            return line
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
        return now + b" " + line
