"""`kubevisor images`: the local OCI image store that holds containerDisks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kubevisor.images.reference import InvalidReference
from kubevisor.images.store import ImageStore, StoreError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubevisor images", description=__doc__)
    parser.add_argument("--root", type=Path, help="store directory (default: $KUBEVISOR_DATA/images)")
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="import an OCI archive or a docker-archive tarball")
    imp.add_argument("file", type=Path)
    imp.add_argument("--name", help="reference to store the image under (e.g. example/disk:latest)")
    sub.add_parser("list", help="list images")
    disk = sub.add_parser("disk", help="print the path of a containerDisk image's disk file")
    disk.add_argument("ref")
    rm = sub.add_parser("rm", help="remove an image reference")
    rm.add_argument("ref")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    store = ImageStore(args.root)
    try:
        if args.command == "import":
            if not args.file.is_file():
                raise StoreError(f"file: {args.file} does not exist")
            for record in store.import_archive(args.file, args.name):
                print(f"imported {record.ref} {record.digest}")
        elif args.command == "list":
            print(f"{'REFERENCE':<40} {'DIGEST':<20} SIZE")
            for record in store.list():
                print(f"{record.ref:<40} {record.digest[:19]:<20} {record.size / 1e6:.1f} MB")
        elif args.command == "disk":
            print(store.resolve_disk(args.ref))
        elif args.command == "rm":
            store.remove(args.ref)
            print(f"removed {args.ref}")
    except (StoreError, InvalidReference, OSError) as exc:
        print(f"kubevisor images: {exc}", file=sys.stderr)
        return 1
    return 0
