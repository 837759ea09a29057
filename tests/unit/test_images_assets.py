"""The asset registry: cache keys follow inputs; builds are atomic and cached."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubevisor.images import assets, debs, kernel


def test_key_changes_with_each_input() -> None:
    base = assets.compute_key("k", "1", "src", {"f": "aa"}, {"pkg": "1.0"})
    assert base == assets.compute_key("k", "1", "src", {"f": "aa"}, {"pkg": "1.0"})
    assert base != assets.compute_key("k", "2", "src", {"f": "aa"}, {"pkg": "1.0"})
    assert base != assets.compute_key("k", "1", "src2", {"f": "aa"}, {"pkg": "1.0"})
    assert base != assets.compute_key("k", "1", "src", {"f": "ab"}, {"pkg": "1.0"})
    assert base != assets.compute_key("k", "1", "src", {"f": "aa"}, {"pkg": "1.1"})


def test_ensure_builds_once_and_rebuilds_when_a_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBEVISOR_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "input.txt"
    source.write_text("one")
    calls: list[str] = []

    def build(out: Path, log: assets.Log) -> None:
        calls.append(source.read_text())
        (out / "result").write_text(source.read_text().upper())

    assets.register("test-asset", build, description="test", files=(source,), inputs=lambda: {"v": 1})
    try:
        first = assets.ensure("test-asset")
        assert (first / "result").read_text() == "ONE"
        assert assets.ensure("test-asset") == first
        assert calls == ["one"]
        source.write_text("two")
        second = assets.ensure("test-asset")
        assert second != first and (second / "result").read_text() == "TWO"
        assert calls == ["one", "two"]
    finally:
        assets._REGISTRY.pop("test-asset")


def test_failed_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEVISOR_CACHE", str(tmp_path / "cache"))

    def build(out: Path, log: assets.Log) -> None:
        (out / "partial").write_text("x")
        raise RuntimeError("boom")

    assets.register("test-broken", build, description="test")
    try:
        with pytest.raises(RuntimeError, match="boom"):
            assets.ensure("test-broken")
        leftovers = [p.name for p in (tmp_path / "cache" / "assets").iterdir() if p.name != ".locks"]
        assert leftovers == []
    finally:
        assets._REGISTRY.pop("test-broken")


def test_asset_names_are_validated() -> None:
    with pytest.raises(assets.AssetError):
        assets.validate_name("../evil")
    with pytest.raises(assets.AssetError, match="unknown asset"):
        assets.get("no-such-asset")


def test_depends_parsing_takes_first_alternative() -> None:
    value = "kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.1) | linux-initramfs-tool"
    assert debs.parse_depends(value) == (
        "kmod",
        "linux-base",
        "initramfs-tools",
    )
    assert debs.parse_depends("libc6:any (>= 2), python3") == ("libc6", "python3")
    with pytest.raises(debs.DebError):
        debs.validate_package_name("foo; rm -rf /")


def test_control_stanza_parsing() -> None:
    text = "Package: a\nVersion: 1:2.0-1\nDescription: x\n more\n\nPackage: b\n"
    fields = debs.parse_control_stanza(text)
    assert fields["Package"] == "a" and fields["Version"] == "1:2.0-1"
    assert fields["Description"] == "x\nmore"


def test_lz4_payload_locator() -> None:
    assert kernel.find_lz4_payload(b"MZ....\x02\x21\x4c\x18rest") == 6
    assert kernel.find_lz4_payload(b"no payload") == -1
