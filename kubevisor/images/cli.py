"""`kubevisor assets`: build and list the cached guest assets (kernel, initramfs, disks)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from kubevisor.images import assets
from kubevisor.images.store import StoreError


def _import_legacy_image() -> str:
    from kubevisor.images.containerdisk import ensure_legacy_image

    record = ensure_legacy_image()
    return f"image store: {record.ref} {record.digest[:19]}"


# Run after a full `assets build`: steps that publish assets elsewhere. Each returns a line to print.
POST_BUILD: list[Callable[[], str]] = [_import_legacy_image]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubevisor assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build every asset (or the named ones) unless cached")
    build.add_argument("names", nargs="*", help="asset names (default: all)")
    sub.add_parser("list", help="list assets, their cache paths and whether they are built")
    path = sub.add_parser("path", help="print the directory of a built asset (building it if needed)")
    path.add_argument("name")
    return parser


def _build(names: list[str], console: Console) -> int:
    wanted = names or list(assets.registered())
    for name in wanted:
        assets.get(name)  # unknown names fail before anything is built
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[asset]:<20}"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        for name in wanted:
            task = progress.add_task("checking", asset=name, total=1)

            def log(msg: str, task_id: TaskID = task) -> None:
                progress.update(task_id, description=msg)

            started = time.monotonic()
            built_before = assets.is_built(name) is not None
            directory = assets.ensure(name, log)
            status = "cached" if built_before else f"built in {time.monotonic() - started:.1f}s"
            progress.update(task, description=f"{status}  {directory}", completed=1)
    if not names:
        for step in POST_BUILD:
            console.print(step(), highlight=False)
    return 0


def _list(console: Console) -> int:
    for name, asset in assets.registered().items():
        directory = assets.is_built(name)
        if directory is None:
            console.print(f"{name:<20} [yellow]not built[/]  {asset.description}")
            continue
        meta = json.loads((directory / assets.MANIFEST).read_text())
        console.print(f"{name:<20} {directory}  (built {meta['built']})", highlight=False)
        for entry in sorted(directory.iterdir()):
            if entry.name != assets.MANIFEST and not entry.name.startswith("."):
                console.print(f"{'':<20}   {entry}", highlight=False)
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    console = Console(stderr=False)
    try:
        if args.command == "build":
            return _build(args.names, console)
        if args.command == "list":
            return _list(console)
        if args.command == "path":
            print(assets.ensure(args.name))
            return 0
    except (assets.AssetError, StoreError, OSError) as exc:
        print(f"kubevisor assets: {exc}", file=sys.stderr)
        return 1
    return 2
