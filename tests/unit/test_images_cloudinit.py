"""The guest cloud-init datasource and QGA responder, run on the host from the files the image ships."""

from __future__ import annotations

import base64
import gzip
import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

GUEST_PYTHON = Path(__file__).resolve().parents[2] / "kubevisor" / "images" / "guest" / "legacy" / "python"


@pytest.fixture(scope="module")
def guest() -> Iterator[dict[str, ModuleType]]:
    sys.path.insert(0, str(GUEST_PYTHON))
    try:
        yield {
            n: importlib.import_module(n) for n in ("kubevisor_yaml", "kubevisor_cloudinit", "kubevisor_qga")
        }
    finally:
        sys.path.remove(str(GUEST_PYTHON))


CLOUD_CONFIGS = [
    """#cloud-config
hostname: myvm
fqdn: myvm.example.com
users:
  - default
  - name: alice
    passwd: $6$abc$def
    lock_passwd: false
    groups: [wheel, adm]
    ssh_authorized_keys:
      - ssh-ed25519 AAAAC3Nz alice@host
    sudo: ALL=(ALL) NOPASSWD:ALL
chpasswd: { expire: False }
password: fedora
write_files:
- path: /etc/motd
  content: |
    hello
      indented
    world
  permissions: '0644'
- path: /tmp/x
  content: aGVsbG8=
  encoding: b64
  permissions: 0600
  owner: root:root
runcmd:
  - echo hi > /tmp/hi   # comment
  - [sh, -c, "echo 'quoted' \\"dq\\""]
  - 'single '' quote'
bootcmd:
- echo boot
""",
    """empty:
nul: ~
num: 42
neg: -3
float: 1.5
hex: 0x1F
yes_: yes
off_: off
str: "a: b # not comment"
url: http://example.com:8080/x#frag
folded: >
  one
  two

  three
keep: |+
  a

strip: |-
  a
  b
multi: this is
  continued
nested:
  a:
    b: [1, 2, {c: d}]
  e: {f: [x, y], 'g h': "i"}
unicode: "caf\\u00e9 \\t tab"
""",
    "- a\n- - b\n  - c\n- k: v\n  k2: v2\n-\n  - z\n",
    "key: 'multi\n  line'\n",
    "runcmd:\n - |\n   for i in 1 2; do\n     echo $i\n   done\n - echo end\n",
    "\n---\na: 1\n",
    "list:\n- a\n- b\nnext: 1\n",
    "k: [a,\n  b, c]\n",
    "indent_indicator: |2\n    two extra\n  base\n",
    "ssh_authorized_keys:\n  - ssh-rsa AAAAB3NzaC1yc2E= user@example.com\n",
]


@pytest.mark.parametrize("doc", CLOUD_CONFIGS)
def test_yaml_subset_matches_pyyaml(guest: dict[str, ModuleType], doc: str) -> None:
    assert guest["kubevisor_yaml"].loads(doc) == yaml.safe_load(doc)


def test_yaml_errors_name_the_line(guest: dict[str, ModuleType]) -> None:
    ky = guest["kubevisor_yaml"]
    with pytest.raises(ky.YamlError, match="line"):
        ky.loads("a: [1, 2\n")
    with pytest.raises(ky.YamlError):
        ky.loads("a: &anchor 1\n")


def test_user_data_formats(guest: dict[str, ModuleType]) -> None:
    ci = guest["kubevisor_cloudinit"]
    config, scripts = ci.parse_user_data(b"#cloud-config\nhostname: h\n")
    assert config == {"hostname": "h"} and scripts == []
    config, scripts = ci.parse_user_data(b"#!/bin/sh\necho hi\n")
    assert config == {} and scripts == [b"#!/bin/sh\necho hi\n"]
    config, _ = ci.parse_user_data(gzip.compress(b"#cloud-config\nhostname: z\n"))
    assert config == {"hostname": "z"}
    mime = (
        b'Content-Type: multipart/mixed; boundary="XX"\nMIME-Version: 1.0\n\n'
        b"--XX\nContent-Type: text/cloud-config\n\n#cloud-config\nhostname: m\n"
        b"--XX\nContent-Type: text/x-shellscript\n\n#!/bin/sh\necho part\n--XX--\n"
    )
    config, scripts = ci.parse_user_data(mime)
    assert config == {"hostname": "m"} and scripts == [b"#!/bin/sh\necho part"]
    with pytest.raises(ValueError):
        ci.parse_user_data(b"#cloud-config\n- a list\n")


def test_write_files_content_and_permissions(guest: dict[str, ModuleType]) -> None:
    ci = guest["kubevisor_cloudinit"]
    assert ci.decode_content("hi", None) == b"hi"
    assert ci.decode_content(base64.b64encode(b"x\0y").decode(), "b64") == b"x\0y"
    gz = base64.b64encode(gzip.compress(b"zipped")).decode()
    assert ci.decode_content(gz, "gz+b64") == b"zipped"
    with pytest.raises(ValueError):
        ci.decode_content("x", "rot13")
    assert ci.parse_permissions("0640") == 0o640
    assert ci.parse_permissions(0o600) == 0o600
    assert ci.parse_permissions(None) == 0o644


def test_commands_are_quoted_like_cloud_init(guest: dict[str, ModuleType]) -> None:
    ci = guest["kubevisor_cloudinit"]
    assert ci.command_line("echo $HOME > /x") == "echo $HOME > /x"
    assert ci.command_line(["sh", "-c", "echo 'a b'"]) == "sh -c 'echo '\"'\"'a b'\"'\"''"


def test_users_default_user_password_and_chpasswd(guest: dict[str, ModuleType]) -> None:
    ci = guest["kubevisor_cloudinit"]
    users = ci.resolve_users({"password": "fedora", "ssh_authorized_keys": ["k1"]})
    assert users[0]["name"] == "kubevisor"
    assert users[0]["plain_text_passwd"] == "fedora" and users[0]["lock_passwd"] is False
    assert users[0]["ssh_authorized_keys"] == ["k1"]
    users = ci.resolve_users({"users": [{"name": "bob"}, "carol,dave"]})
    assert [u["name"] for u in users] == ["bob", "carol", "dave"]
    with pytest.raises(ValueError):
        ci.resolve_users({"users": [{"passwd": "x"}]})
    pairs = ci.chpasswd_pairs(
        {"chpasswd": {"list": "a:pw1\nb:$6$s$h\n", "users": [{"name": "c", "password": "p"}]}}
    )
    assert pairs == [("a", "pw1"), ("b", "$6$s$h"), ("c", "p")]
    assert ci.is_hash("$6$salt$hash") and not ci.is_hash("plain")


def test_finished_marker_format(guest: dict[str, ModuleType]) -> None:
    ci = guest["kubevisor_cloudinit"]
    line = ci.finished_line("NoCloud", "/dev/vdb", 7.123, now=0)
    assert line == (
        "Cloud-init v. 0.0-kubevisor finished at Thu, 01 Jan 1970 00:00:00 +0000. "
        "Datasource DataSourceNoCloud [seed=/dev/vdb].  Up 7.12 seconds"
    )


def test_static_network_plan_v1_and_v2(guest: dict[str, ModuleType]) -> None:
    ci = guest["kubevisor_cloudinit"]
    v2 = {
        "version": 2,
        "ethernets": {
            "eth0": {
                "addresses": ["10.0.0.5/24"],
                "gateway4": "10.0.0.1",
                "nameservers": {"addresses": ["10.0.0.2"]},
            },
            "eth1": {"dhcp4": True},
        },
    }
    assert ci.static_network_plan(v2) == {
        "eth0": {"addresses": ["10.0.0.5/24"], "gateway": "10.0.0.1", "dns": ["10.0.0.2"]}
    }
    v1 = {
        "version": 1,
        "config": [
            {
                "type": "physical",
                "name": "eth0",
                "subnets": [
                    {
                        "type": "static",
                        "address": "192.168.1.9",
                        "netmask": "255.255.255.0",
                        "gateway": "192.168.1.1",
                    }
                ],
            }
        ],
    }
    assert ci.static_network_plan(v1)["eth0"]["addresses"] == ["192.168.1.9/24"]
    assert ci.static_network_plan({"version": 2, "ethernets": {"eth0": {"dhcp4": True}}}) == {}


def _responses(qga: ModuleType, raw: bytes) -> list[Any]:
    requests, rest = qga.split_requests(raw)
    assert rest == b""
    out = []
    for request in requests:
        response = qga.handle(request)
        out.append(None if response is None else response)
    return out


def test_qga_protocol(guest: dict[str, ModuleType]) -> None:
    qga = guest["kubevisor_qga"]
    raw = b'{"execute":"guest-ping"}\xff{"execute":"guest-sync-delimited","arguments":{"id":42}}'
    ping, sync = _responses(qga, raw)
    assert json.loads(ping) == {"return": {}}
    assert sync.startswith(b"\xff") and json.loads(sync[1:]) == {"return": 42}
    (info,) = _responses(qga, b'{"execute": "guest-info"}')
    listed = [c["name"] for c in json.loads(info)["return"]["supported_commands"]]
    assert len(listed) == len(set(listed)), listed
    names = set(listed)
    assert {"guest-ping", "guest-info", "guest-get-osinfo", "guest-get-host-name", "guest-shutdown"} <= names
    (missing,) = _responses(qga, b'{"execute": "guest-nope", "id": 7}')
    assert json.loads(missing) == {
        "error": {"class": "CommandNotFound", "desc": "The command guest-nope has not been found"},
        "id": 7,
    }
    (hostname,) = _responses(qga, b'{"execute": "guest-get-host-name"}')
    assert "host-name" in json.loads(hostname)["return"]
    # an incomplete request waits for more bytes
    requests, rest = qga.split_requests(b'{"execute": "guest-pi')
    assert requests == [] and rest == b'{"execute": "guest-pi'


def test_run_command_status_output_env_and_timeout(guest: dict[str, ModuleType], tmp_path: Path) -> None:
    ci = guest["kubevisor_cloudinit"]
    assert ci.run_command(["sh", "-c", "echo out; echo err >&2; exit 3"], capture=True) == (3, "out\nerr\n")
    assert ci.run_command(["sh", "-c", "read x || echo no-stdin"], capture=True) == (0, "no-stdin\n")
    code, out = ci.run_command(
        ["sh", "-c", "echo $KV"], capture=True, env={"KV": "v", "PATH": "/bin:/usr/bin"}
    )
    assert (code, out) == (0, "v\n")
    assert ci.run_command(["sleep", "30"], capture=True, timeout=0.2)[0] == -1
    assert ci.run_command([str(tmp_path / "missing")], capture=True)[0] == -1
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\nexit 7\n")
    script.chmod(0o755)
    assert ci.run_script(script) == 7


def test_seed_round_trips_through_its_saved_form(
    guest: dict[str, ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ci = guest["kubevisor_cloudinit"]
    monkeypatch.setattr(ci, "RUN_DIR", tmp_path)
    seed = ci.Seed("NoCloud", "/dev/vdb", {"instance-id": "a/b"}, b"#cloud-config\n\x00\xff", {"version": 2})
    ci.save_seed(seed)
    assert ci.load_seed() == seed
    assert seed.instance_id == "a_b"
    assert ci.Seed("None", "none").meta == {}
