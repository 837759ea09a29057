"""Host config.json -> guest config.json."""

import pytest

from kubevisor.sandbox.specconv import SpecError, guest_config, validate


def config():
    return {
        "ociVersion": "1.0.2",
        "process": {
            "args": ["sh"],
            "cwd": "/",
            "env": ["A=1"],
            "apparmorProfile": "x",
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 10, "soft": 10}],
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "h",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro"]},
            {"destination": "/etc/hosts", "source": "/run/x/hosts", "options": ["bind", 'context="x"']},
        ],
        "hooks": {"prestart": [{"path": "/bin/true"}]},
        "annotations": {"a": "b"},
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network", "path": "/run/netns/x"}],
            "cgroupsPath": "machine.slice:libpod:abc",
            "mountLabel": "m",
            "resources": {"memory": {"limit": 1000}, "blockIO": {"weight": 10}},
        },
    }


def test_guest_config_rewrites_host_references():
    cfg, shared = guest_config(config(), "c1")
    assert cfg["root"] == {"path": "/run/kv/shared/c1/rootfs", "readonly": True}
    assert [m["source"] for m in cfg["mounts"]] == [
        "proc",
        "/run/kv/shared/c1/mounts/1",
        "/run/kv/shared/c1/mounts/2",
    ]
    assert cfg["mounts"][2]["options"] == ["bind"]
    assert [(s.source, s.share_rel) for s in shared] == [
        ("/srv/data", "c1/mounts/1"),
        ("/run/x/hosts", "c1/mounts/2"),
    ]
    assert cfg["linux"]["namespaces"] == [{"type": "pid"}, {"type": "network"}]
    assert cfg["linux"]["cgroupsPath"] == "/kubevisor/c1"
    assert cfg["linux"]["resources"] == {"memory": {"limit": 1000}}
    assert "hooks" not in cfg and "annotations" not in cfg and "mountLabel" not in cfg["linux"]
    assert "apparmorProfile" not in cfg["process"]
    assert cfg["process"]["rlimits"] == config()["process"]["rlimits"]
    assert cfg["hostname"] == "h"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda c: c.pop("ociVersion"), "ociVersion"),
        (lambda c: c["root"].pop("path"), "root.path"),
        (lambda c: c["process"].update(args=[]), "process.args"),
        (lambda c: c["process"].update(cwd="rel"), "process.cwd"),
        (lambda c: c["mounts"].append({"destination": "rel"}), "mounts[3].destination"),
    ],
)
def test_validate_names_the_field(mutate, field):
    c = config()
    mutate(c)
    with pytest.raises(SpecError, match=field.replace("[", r"\[").replace("]", r"\]")):
        validate(c)
