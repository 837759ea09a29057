"""A NoCloud / ConfigDrive datasource applying a cloud-config subset (stdlib only, runs in the guest).

Stages, run by /etc/init.d/rcS:
  init   find and read the seed, run bootcmd, set the hostname, configure static networking,
         create users (passwords, ssh keys), write_files (not deferred)
  final  deferred write_files, runcmd, `#!` user-data scripts, then the "finished" marker

Seeds: an ISO9660 (or vfat) filesystem labelled `cidata` (NoCloud: user-data, meta-data,
network-config) or `config-2` (ConfigDrive: openstack/latest/user_data, meta_data.json).
Per-instance work (users, write_files, runcmd, scripts) runs once per instance-id.
"""

from __future__ import annotations

import binascii
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import kubevisor_yaml

VERSION = "0.0-kubevisor"
SEED_LABELS = ("cidata", "CIDATA", "config-2", "CONFIG-2")
CLOUD_DIR = Path("/var/lib/cloud")
RUN_DIR = Path("/run/kubevisor-cloudinit")
DEFAULT_USER = {"name": "kubevisor", "lock_passwd": True, "gecos": "Kubevisor default user"}


# Imports are few and late on purpose: under TCG every module costs the boot time (subprocess
# and dataclasses alone took ~0.6 s of the guest's CPU, twice per boot: init and final).


class Seed:
    def __init__(
        self,
        kind: str,  # "NoCloud" | "ConfigDrive" | "None"
        source: str,  # device or directory
        meta: dict[str, Any] | None = None,
        user_data: bytes = b"",
        network_config: Any = None,
    ) -> None:
        self.kind = kind
        self.source = source
        self.meta = meta if meta is not None else {}
        self.user_data = user_data
        self.network_config = network_config

    def __repr__(self) -> str:
        fields = (self.kind, self.source, self.meta, self.user_data, self.network_config)
        return f"Seed{fields!r}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Seed) and vars(self) == vars(other)

    @property
    def instance_id(self) -> str:
        iid = self.meta.get("instance-id") or self.meta.get("uuid") or "iid-kubevisor-nocloud"
        return str(iid).replace("/", "_")


# ---------------------------------------------------------------- pure parts


def parse_user_data(raw: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """User-data -> (merged cloud-config, scripts). Handles gzip, MIME multipart, #cloud-config, #!."""
    if raw[:2] == b"\x1f\x8b":
        import gzip

        raw = gzip.decompress(raw)
    config: dict[str, Any] = {}
    scripts: list[bytes] = []
    stripped = raw.lstrip()
    if stripped.startswith(b"Content-Type:") or stripped.startswith(b"MIME-Version:"):
        import email

        message = email.message_from_bytes(raw)
        for part in message.walk():
            if part.is_multipart():
                continue
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            ctype = part.get_content_type()
            if ctype == "text/cloud-config" or payload.lstrip().startswith(b"#cloud-config"):
                config.update(parse_cloud_config(payload.decode()))
            elif ctype == "text/x-shellscript" or payload.startswith(b"#!"):
                scripts.append(payload)
        return config, scripts
    if stripped.startswith(b"#cloud-config"):
        return parse_cloud_config(raw.decode()), []
    if raw.startswith(b"#!"):
        return {}, [raw]
    return {}, []


def parse_cloud_config(text: str) -> dict[str, Any]:
    value = kubevisor_yaml.loads(text)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("cloud-config must be a mapping at the top level")
    return value


def decode_content(content: Any, encoding: str | None) -> bytes:
    """write_files content with its encoding (b64, gzip, gz+b64, text)."""
    import base64
    import gzip

    enc = (encoding or "text/plain").lower()
    if content is None:
        data = b""
    elif isinstance(content, bytes):
        data = content
    else:
        data = str(content).encode()
    if enc in ("b64", "base64"):
        return base64.b64decode(data)
    if enc in ("gz+b64", "gzip+b64", "gz+base64", "gzip+base64"):
        return gzip.decompress(base64.b64decode(data))
    if enc in ("gz", "gzip"):
        return gzip.decompress(data)
    if enc in ("text/plain", "text", "plain"):
        return data
    raise ValueError(f"write_files: unknown encoding {encoding!r}")


def parse_permissions(value: Any) -> int:
    if value is None:
        return 0o644
    if isinstance(value, int):
        return value  # YAML 1.1 already read 0644 as octal
    text = str(value).strip()
    return int(text, 8)


def command_line(cmd: Any) -> str:
    """One runcmd/bootcmd entry as a shell line: strings verbatim, lists shell-quoted (cloud-init's rule)."""
    if isinstance(cmd, list):
        import shlex

        return " ".join(shlex.quote(str(part)) for part in cmd)
    return str(cmd)


def resolve_users(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The users to create: `users` entries, 'default' meaning the image's default user."""
    entries = config.get("users")
    if entries is None:
        entries = ["default"]
    if isinstance(entries, (str, dict)):
        entries = [entries]
    users: list[dict[str, Any]] = []
    for entry in entries:
        if entry == "default":
            user = dict(DEFAULT_USER)
            if config.get("password") is not None:
                user["plain_text_passwd"] = str(config["password"])
                user["lock_passwd"] = False
            keys = config.get("ssh_authorized_keys") or []
            user["ssh_authorized_keys"] = list(keys)
            users.append(user)
        elif isinstance(entry, str):
            for name in entry.split(","):
                if name.strip():
                    users.append({"name": name.strip()})
        elif isinstance(entry, dict) and entry.get("name"):
            users.append(dict(entry))
        else:
            raise ValueError(f"users: entry without a name: {entry!r}")
    return users


def chpasswd_pairs(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(user, password-or-hash) from chpasswd.list (text or list) and chpasswd.users."""
    spec = config.get("chpasswd") or {}
    if not isinstance(spec, dict):
        return []
    pairs: list[tuple[str, str]] = []
    listing = spec.get("list")
    if isinstance(listing, str):
        listing = listing.splitlines()
    for line in listing or []:
        name, sep, password = str(line).partition(":")
        if sep:
            pairs.append((name.strip(), password.strip()))
    for entry in spec.get("users") or []:
        if isinstance(entry, dict) and "name" in entry and "password" in entry:
            pairs.append((str(entry["name"]), str(entry["password"])))
    return pairs


def is_hash(password: str) -> bool:
    return password.startswith("$") and password.count("$") >= 3


def finished_line(datasource: str, seed: str, uptime: float, now: float | None = None) -> str:
    stamp = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(now))
    return (
        f"Cloud-init v. {VERSION} finished at {stamp}. Datasource DataSource{datasource} "
        f"[seed={seed}].  Up {uptime:.2f} seconds"
    )


# ---------------------------------------------------------------- guest I/O


def log(msg: str) -> None:
    print(msg, flush=True)


def uptime() -> float:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError):
        return 0.0


def iso_volume_id(device: str) -> str | None:
    """The ISO9660 primary volume descriptor's volume identifier, read directly."""
    try:
        with open(device, "rb") as f:
            f.seek(16 * 2048)
            pvd = f.read(2048)
    except OSError:
        return None
    if pvd[1:6] != b"CD001" or pvd[0] != 1:
        return None
    return pvd[40:72].decode("ascii", "replace").strip()


def run_command(
    argv: list[str], *, capture: bool = False, env: dict[str, str] | None = None, timeout: float | None = None
) -> tuple[int, str]:
    """Run argv with stdin from /dev/null: (exit status, stdout+stderr if capture else "").

    Without capture the command's output goes where ours goes. -1 if it could not be started or
    ran past timeout (it is then killed). posix_spawn rather than subprocess: see the imports.
    """
    devnull = os.open(os.devnull, os.O_RDWR)
    read_fd = write_fd = -1
    actions = [(os.POSIX_SPAWN_DUP2, devnull, 0)]
    if capture:
        read_fd, write_fd = os.pipe()
        actions += [(os.POSIX_SPAWN_DUP2, write_fd, 1), (os.POSIX_SPAWN_DUP2, write_fd, 2)]
    try:
        pid = os.posix_spawnp(argv[0], argv, dict(os.environ) if env is None else env, file_actions=actions)
    except OSError as exc:
        if capture:
            os.close(read_fd)
        return -1, str(exc)
    finally:
        os.close(devnull)
        if capture:
            os.close(write_fd)
    chunks: list[bytes] = []
    timed_out = False
    if capture:
        import select

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([read_fd], [], [], wait)
            if not ready:
                timed_out = True
                os.kill(pid, 9)
                break
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    code = -1 if timed_out else os.waitstatus_to_exitcode(status)
    return code, b"".join(chunks).decode(errors="replace")


def blkid_label(device: str) -> tuple[str | None, str | None]:
    import shlex

    code, out = run_command(["blkid", device], capture=True, timeout=10)
    if code != 0:
        return None, None
    fields = dict(part.split("=", 1) for part in shlex.split(out.partition(":")[2]) if "=" in part)
    return fields.get("LABEL"), fields.get("TYPE")


def find_seed_device() -> tuple[str, str] | None:
    """(device, fstype) of a block device labelled cidata/config-2."""
    for name in sorted(os.listdir("/sys/class/block")):
        device = f"/dev/{name}"
        if not os.path.exists(device):
            continue
        label = iso_volume_id(device)
        if label in SEED_LABELS:
            return device, "iso9660"
        if label is None and not name.startswith(("loop", "ram")):
            blabel, fstype = blkid_label(device)
            if blabel in SEED_LABELS and fstype:
                return device, fstype
    return None


def read_seed_dir(root: Path, source: str) -> Seed | None:
    if (root / "meta-data").exists() or (root / "user-data").exists():
        meta_text = (root / "meta-data").read_text() if (root / "meta-data").exists() else ""
        meta = kubevisor_yaml.loads(meta_text) or {}
        if not isinstance(meta, dict):
            meta = {}
        net = None
        if (root / "network-config").exists():
            net = kubevisor_yaml.loads((root / "network-config").read_text())
        user = (root / "user-data").read_bytes() if (root / "user-data").exists() else b""
        return Seed("NoCloud", source, meta, user, net)
    latest = root / "openstack" / "latest"
    if latest.is_dir():
        meta = {}
        if (latest / "meta_data.json").exists():
            meta = json.loads((latest / "meta_data.json").read_text())
        user = (latest / "user_data").read_bytes() if (latest / "user_data").exists() else b""
        net = None
        if (latest / "network_data.json").exists():
            net = json.loads((latest / "network_data.json").read_text())
        return Seed("ConfigDrive", source, meta, user, net)
    return None


def discover_seed() -> Seed:
    local = CLOUD_DIR / "seed" / "nocloud"
    if local.is_dir():
        seed = read_seed_dir(local, str(local))
        if seed:
            return seed
    found = find_seed_device()
    if found is None:
        time.sleep(1.0)  # slow (IDE/SCSI) CD-ROMs may still be probing
        found = find_seed_device()
    if found is None:
        return Seed("None", "none")
    device, fstype = found
    mountpoint = RUN_DIR / "seed"
    mountpoint.mkdir(parents=True, exist_ok=True)
    code, out = run_command(["mount", "-t", fstype, "-o", "ro", device, str(mountpoint)], capture=True)
    if code != 0:
        log(f"kubevisor-cloudinit: cannot mount seed {device}: {out.strip()}")
        return Seed("None", "none")
    try:
        seed = read_seed_dir(mountpoint, device)
    finally:
        run_command(["umount", str(mountpoint)], capture=True)
    return seed or Seed("None", "none")


class Instance:
    """The current instance's directory, semaphores and saved seed."""

    def __init__(self, seed: Seed) -> None:
        self.seed = seed
        self.dir = CLOUD_DIR / "instances" / seed.instance_id
        (self.dir / "sem").mkdir(parents=True, exist_ok=True)
        (self.dir / "scripts").mkdir(parents=True, exist_ok=True)
        link = CLOUD_DIR / "instance"
        if link.is_symlink() and os.readlink(link) != str(self.dir):
            link.unlink()
        elif link.exists() and not link.is_symlink():
            import shutil

            shutil.rmtree(link)
        if not link.is_symlink():
            link.symlink_to(self.dir)

    def once(self, name: str) -> bool:
        """True the first time `name` is asked for on this instance (then marks it done)."""
        sem = self.dir / "sem" / name
        if sem.exists():
            return False
        sem.write_text(f"{time.time()}\n")
        return True


def save_seed(seed: Seed) -> None:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    doc = {
        "kind": seed.kind,
        "source": seed.source,
        "meta": seed.meta,
        "user_data": binascii.b2a_base64(seed.user_data, newline=False).decode(),
        "network_config": seed.network_config,
    }
    (RUN_DIR / "seed.json").write_text(json.dumps(doc))


def load_seed() -> Seed:
    doc = json.loads((RUN_DIR / "seed.json").read_text())
    return Seed(
        doc["kind"], doc["source"], doc["meta"], binascii.a2b_base64(doc["user_data"]), doc["network_config"]
    )


def run_script(path: Path, env_extra: dict[str, str] | None = None) -> int:
    env = dict(os.environ, PATH="/usr/sbin:/usr/bin:/sbin:/bin", HOME="/root")
    env.update(env_extra or {})
    code, error = run_command([str(path)], env=env)
    if code != 0:
        log(f"kubevisor-cloudinit: {path.name} exited with status {code}{': ' + error if error else ''}")
    return code


def run_commands(name: str, commands: Any, instance: Instance) -> None:
    if not commands:
        return
    if not isinstance(commands, list):
        commands = [commands]
    script = instance.dir / "scripts" / name
    script.write_text("#!/bin/sh\n" + "".join(command_line(c) + "\n" for c in commands))
    script.chmod(0o700)
    run_script(script, {"INSTANCE_ID": instance.seed.instance_id})


def set_hostname(config: dict[str, Any], seed: Seed) -> None:
    if config.get("preserve_hostname"):
        return
    fqdn = config.get("fqdn")
    hostname = config.get("hostname")
    if not hostname:
        hostname = seed.meta.get("local-hostname") or seed.meta.get("hostname") or seed.meta.get("name")
    if not hostname and fqdn:
        hostname = str(fqdn)
    if not hostname:
        return
    hostname = str(hostname)
    if not config.get("prefer_fqdn_over_hostname"):
        short = hostname.split(".")[0]
        fqdn = fqdn or (hostname if "." in hostname else None)
        hostname = short
    Path("/etc/hostname").write_text(hostname + "\n")
    Path("/proc/sys/kernel/hostname").write_text(hostname)
    names = f"{fqdn} {hostname}" if fqdn and fqdn != hostname else hostname
    hosts = Path("/etc/hosts")
    lines = (
        [ln for ln in hosts.read_text().splitlines() if not ln.startswith("127.0.1.1")]
        if hosts.exists()
        else []
    )
    lines.append(f"127.0.1.1 {names}")
    hosts.write_text("\n".join(lines) + "\n")


def _read_table(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split(":") for line in path.read_text().splitlines() if line.strip()]


def _write_table(path: Path, rows: list[list[str]], mode: int) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_text("".join(":".join(r) + "\n" for r in rows))
    tmp.chmod(mode)
    os.replace(tmp, path)


def hash_password(password: str) -> str:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import crypt

    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))


def set_shadow(name: str, field_value: str) -> None:
    path = Path("/etc/shadow")
    rows = _read_table(path)
    for row in rows:
        if row[0] == name:
            row[1] = field_value
            break
    else:
        rows.append([name, field_value, str(int(time.time() // 86400)), "0", "99999", "7", "", "", ""])
    _write_table(path, rows, 0o600)


def shadow_field(name: str) -> str:
    for row in _read_table(Path("/etc/shadow")):
        if row[0] == name:
            return row[1]
    return "!"


def ensure_group(name: str, gid: int | None = None, member: str | None = None) -> int:
    path = Path("/etc/group")
    rows = _read_table(path)
    for row in rows:
        if row[0] == name:
            if member:
                members = [m for m in row[3].split(",") if m] if len(row) > 3 else []
                if member not in members:
                    members.append(member)
                while len(row) < 4:
                    row.append("")
                row[3] = ",".join(members)
                _write_table(path, rows, 0o644)
            return int(row[2])
    used = {int(r[2]) for r in rows if len(r) > 2 and r[2].isdigit()}
    if gid is None or gid in used:
        gid = 1000
        while gid in used:
            gid += 1
    rows.append([name, "x", str(gid), member or ""])
    _write_table(path, rows, 0o644)
    return gid


def create_user(user: dict[str, Any]) -> None:
    name = str(user["name"])
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum() or name.startswith("-"):
        log(f"kubevisor-cloudinit: users: invalid name {name!r}, skipped")
        return
    passwd = _read_table(Path("/etc/passwd"))
    existing = next((r for r in passwd if r[0] == name), None)
    if existing is None:
        used = {int(r[2]) for r in passwd if len(r) > 2 and r[2].isdigit()}
        uid = int(user["uid"]) if user.get("uid") is not None else 1000
        while uid in used:
            uid += 1
        gid = ensure_group(name, uid)
        home = str(user.get("homedir") or f"/home/{name}")
        shell = str(user.get("shell") or "/bin/sh")
        gecos = str(user.get("gecos") or name).replace(":", " ")
        passwd.append([name, "x", str(uid), str(gid), gecos, home, shell])
        _write_table(Path("/etc/passwd"), passwd, 0o644)
        set_shadow(name, "!")
        Path(home).mkdir(parents=True, exist_ok=True)
        os.chown(home, uid, gid)
        os.chmod(home, 0o755)
        log(f"kubevisor-cloudinit: created user {name} (uid {uid})")
    else:
        uid, gid, home = int(existing[2]), int(existing[3]), existing[5]
    groups = user.get("groups") or []
    if isinstance(groups, str):
        groups = [g.strip() for g in groups.split(",")]
    for group in groups:
        if group:
            ensure_group(str(group), member=name)
    hashed = user.get("passwd") or user.get("hashed_passwd")
    if user.get("plain_text_passwd") is not None:
        hashed = hash_password(str(user["plain_text_passwd"]))
    lock = user.get("lock_passwd", True)
    if hashed:
        set_shadow(name, ("!" if lock else "") + str(hashed))
    elif lock:
        current = shadow_field(name)
        if not current.startswith("!"):
            set_shadow(name, "!" + current)
    keys = user.get("ssh_authorized_keys") or []
    if isinstance(keys, str):
        keys = [keys]
    if keys:
        ssh_dir = Path(home) / ".ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        auth = ssh_dir / "authorized_keys"
        present = auth.read_text().splitlines() if auth.exists() else []
        lines = present + [str(k).strip() for k in keys if str(k).strip() not in present]
        auth.write_text("\n".join(lines) + "\n")
        for p in (ssh_dir, auth):
            os.chown(p, uid, gid)
        auth.chmod(0o600)


def apply_chpasswd(config: dict[str, Any]) -> None:
    for name, password in chpasswd_pairs(config):
        if password.upper() == "R" or password.upper() == "RANDOM":
            continue  # random passwords would have to be reported; not supported
        set_shadow(name, password if is_hash(password) else hash_password(password))


def owner_ids(owner: Any) -> tuple[int, int]:
    user, _, group = str(owner or "root:root").partition(":")
    uid = gid = 0
    for row in _read_table(Path("/etc/passwd")):
        if row[0] == user:
            uid, gid = int(row[2]), int(row[3])
    for row in _read_table(Path("/etc/group")):
        if group and row[0] == group:
            gid = int(row[2])
    return uid, gid


def write_files(config: dict[str, Any], deferred: bool) -> None:
    for entry in config.get("write_files") or []:
        if not isinstance(entry, dict) or not entry.get("path"):
            log("kubevisor-cloudinit: write_files: entry without a path, skipped")
            continue
        if bool(entry.get("defer", False)) != deferred:
            continue
        path = Path(str(entry["path"]))
        try:
            data = decode_content(entry.get("content"), entry.get("encoding"))
            mode = parse_permissions(entry.get("permissions"))
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("ab" if entry.get("append") else "wb") as f:
                f.write(data)
            path.chmod(mode)
            uid, gid = owner_ids(entry.get("owner"))
            os.chown(path, uid, gid)
        except (OSError, ValueError) as exc:
            log(f"kubevisor-cloudinit: write_files {path}: {exc}")


def configure_network(seed: Seed) -> None:
    """Record which interfaces use DHCP (rcS runs udhcpc for them) and apply static addresses."""
    plan = static_network_plan(seed.network_config)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    (RUN_DIR / "static-interfaces").write_text("".join(f"{name}\n" for name in plan))
    for name, cfg in plan.items():
        run_command(["ip", "link", "set", name, "up"], capture=True)
        for address in cfg["addresses"]:
            run_command(["ip", "addr", "add", address, "dev", name], capture=True)
        if cfg.get("gateway"):
            run_command(["ip", "route", "add", "default", "via", cfg["gateway"], "dev", name], capture=True)
        if cfg.get("dns"):
            Path("/etc/resolv.conf").write_text("".join(f"nameserver {d}\n" for d in cfg["dns"]))


def _iface_by_mac(mac: str) -> str | None:
    for name in os.listdir("/sys/class/net"):
        try:
            if Path(f"/sys/class/net/{name}/address").read_text().strip().lower() == mac.lower():
                return name
        except OSError:
            continue
    return None


def static_network_plan(network: Any) -> dict[str, dict[str, Any]]:
    """Interfaces with static addresses from network-config v1/v2 or ConfigDrive network_data."""
    plan: dict[str, dict[str, Any]] = {}
    if not isinstance(network, dict):
        return plan
    if "network" in network and isinstance(network["network"], dict):
        network = network["network"]
    if network.get("version") == 2:
        for key, eth in (network.get("ethernets") or {}).items():
            if not isinstance(eth, dict) or not eth.get("addresses"):
                continue
            mac = (eth.get("match") or {}).get("macaddress")
            name = (_iface_by_mac(mac) if mac else None) or eth.get("set-name") or key
            gateway = eth.get("gateway4")
            for route in eth.get("routes") or []:
                if isinstance(route, dict) and route.get("to") in ("default", "0.0.0.0/0"):
                    gateway = route.get("via")
            dns = (eth.get("nameservers") or {}).get("addresses") or []
            plan[str(name)] = {
                "addresses": [str(a) for a in eth["addresses"]],
                "gateway": gateway,
                "dns": dns,
            }
    elif network.get("version") == 1:
        for entry in network.get("config") or []:
            if not isinstance(entry, dict) or entry.get("type") != "physical":
                continue
            name = (_iface_by_mac(entry["mac_address"]) if entry.get("mac_address") else None) or entry.get(
                "name"
            )
            for subnet in entry.get("subnets") or []:
                if subnet.get("type") not in ("static", "static6"):
                    continue
                address = str(subnet["address"])
                if "/" not in address and subnet.get("netmask"):
                    bits = sum(bin(int(o)).count("1") for o in str(subnet["netmask"]).split("."))
                    address = f"{address}/{bits}"
                cfg = plan.setdefault(str(name), {"addresses": [], "gateway": None, "dns": []})
                cfg["addresses"].append(address)
                cfg["gateway"] = cfg["gateway"] or subnet.get("gateway")
                cfg["dns"] += subnet.get("dns_nameservers") or []
    return plan


def stage_init() -> int:
    started = time.time()
    now = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    log(f"Cloud-init v. {VERSION} running 'init' at {now}. Up {uptime():.2f} seconds.")
    seed = discover_seed()
    save_seed(seed)
    if seed.kind == "None":
        log("kubevisor-cloudinit: no NoCloud/ConfigDrive seed found")
        return 0
    instance = Instance(seed)
    try:
        config, _scripts = parse_user_data(seed.user_data)
    except ValueError as exc:
        log(f"kubevisor-cloudinit: user-data is not valid cloud-config: {exc}")
        config = {}
    run_commands("bootcmd", config.get("bootcmd"), instance)
    set_hostname(config, seed)
    configure_network(seed)
    if instance.once("config_users"):
        for user in resolve_users(config):
            try:
                create_user(user)
            except (OSError, ValueError) as exc:
                log(f"kubevisor-cloudinit: users {user.get('name')}: {exc}")
        apply_chpasswd(config)
    if instance.once("config_write_files"):
        write_files(config, deferred=False)
    elapsed = time.time() - started
    log(f"kubevisor-cloudinit: init done in {elapsed:.2f}s (datasource {seed.kind} {seed.source})")
    return 0


def stage_final() -> int:
    seed = load_seed() if (RUN_DIR / "seed.json").exists() else Seed("None", "none")
    if seed.kind != "None":
        instance = Instance(seed)
        try:
            config, scripts = parse_user_data(seed.user_data)
        except ValueError:
            config, scripts = {}, []
        if instance.once("config_write_files_deferred"):
            write_files(config, deferred=True)
        if instance.once("config_runcmd"):
            run_commands("runcmd", config.get("runcmd"), instance)
        if instance.once("config_scripts_user"):
            for n, script in enumerate(scripts):
                path = instance.dir / "scripts" / f"part-{n:03d}"
                path.write_bytes(script)
                path.chmod(0o700)
                run_script(path)
    line = finished_line(seed.kind if seed.kind != "None" else "None", seed.source, uptime())
    finished = CLOUD_DIR / "instance" / "boot-finished"
    finished.parent.mkdir(parents=True, exist_ok=True)
    finished.write_text(
        f"{uptime():.2f} - {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())} - v. {VERSION}\n"
    )
    log(line)
    return 0


def main(argv: list[str]) -> int:
    stage = argv[0] if argv else ""
    if stage == "init":
        return stage_init()
    if stage == "final":
        return stage_final()
    print("usage: kubevisor_cloudinit init|final", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
