"""Image references (`[registry/]path[:tag][@sha256:hex]`): parsing and validation (pure).

Follows the distribution reference grammar closely enough that anything accepted here is safe to
store and display; references never become file names (blobs are named by validated digests).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_HOST_PART = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = rf"(?:{_HOST_PART}(?:\.{_HOST_PART})*(?::[0-9]+)?)"
_NAME = re.compile(rf"^(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
MAX_NAME = 255
DEFAULT_TAG = "latest"


class InvalidReference(ValueError):
    """An image reference or digest is malformed."""


@dataclass(frozen=True)
class Reference:
    name: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def tagged(self) -> str:
        """name:tag (the key images are stored under)."""
        return f"{self.name}:{self.tag or DEFAULT_TAG}"


def validate_digest(digest: str) -> str:
    if not _DIGEST.match(digest):
        raise InvalidReference(f"invalid digest {digest!r}: expected sha256:<64 lowercase hex>")
    return digest


def parse(ref: str) -> Reference:
    """Parse and validate; a missing tag (and digest) means `latest`."""
    if not ref or len(ref) > MAX_NAME + 200 or any(c.isspace() for c in ref):
        raise InvalidReference(f"invalid image reference {ref!r}")
    digest = None
    if "@" in ref:
        ref, _, digest = ref.partition("@")
        validate_digest(digest)
    tag = None
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        ref, _, tag = ref.rpartition(":")
        if not _TAG.match(tag):
            raise InvalidReference(f"invalid tag {tag!r} in image reference")
    if len(ref) > MAX_NAME or not _NAME.match(ref):
        raise InvalidReference(
            f"invalid image name {ref!r}: lowercase letters, digits, '.', '_', '-' separated by '/'"
        )
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(ref, tag, digest)
