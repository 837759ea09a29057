"""`kubevisor-runtime`: a runc-compatible OCI runtime that runs containers inside VMs.

Flags follow runc's, including those that mean nothing for a VM (accepted and ignored), so that
podman/conmon, containerd's runc shim and CRI-O can call it like runc. Heavy modules are imported
only by the verbs that need them: this runs once per verb.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs every verb ~2 ms
if TYPE_CHECKING:
    from typing import Any, NoReturn

PROG = "kubevisor-runtime"
VERBS = (
    "create", "run", "start", "state", "kill", "delete", "exec", "ps", "list", "features", "spec",
    "pause", "resume", "update", "events", "checkpoint", "restore",
)  # fmt: skip
GLOBAL_FLAGS_WITH_VALUE = ("--root", "--log", "--log-format", "--criu")


def verb_of(argv: list[str]) -> str | None:
    """The verb in argv (skipping global flags), if it is one of ours."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        takes_value = arg in GLOBAL_FLAGS_WITH_VALUE or (
            arg == "--rootless" and i + 1 < len(argv) and argv[i + 1] in ("true", "false", "auto")
        )
        if takes_value:
            i += 2
        elif arg.startswith("-"):
            i += 1
        else:
            return arg if arg in VERBS else None
    return None


class _Unused:
    """Stands in for the parser of a verb that is not being run: building every verb's arguments
    costs each call ~15 ms, and only one verb is ever parsed."""

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        return None


class Log:
    """runc-style logging: errors to stderr and, with --log, to the log file (text or JSON lines)."""

    def __init__(self, path: str | None, fmt: str, debug: bool) -> None:
        self.path = path
        self.fmt = fmt
        self.debug_enabled = debug

    def line(self, level: str, msg: str) -> str:
        import time

        t = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.fmt == "json":
            return json.dumps({"level": level, "msg": msg, "time": t})
        return f'time="{t}" level={level} msg="{msg}"'

    def write(self, level: str, msg: str) -> None:
        if not self.path:
            return
        try:
            with open(self.path, "a") as f:
                f.write(self.line(level, msg) + "\n")
        except OSError:
            pass

    def error(self, msg: str) -> None:
        """The one-line error: plain on stderr (runc too prints the bare message when it logs to a
        file); without --log, --log-format json makes stderr's line JSON, as runc's is."""
        self.write("error", msg)
        if self.fmt == "json" and not self.path:
            print(self.line("error", msg), file=sys.stderr)
        else:
            print(f"{PROG}: {msg}", file=sys.stderr)

    def debug(self, msg: str) -> None:
        if self.debug_enabled:
            self.write("debug", msg)


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter asks shutil for the terminal width; importing shutil (with bz2 and
    lzma) costs every verb ~3 ms although only --help formats anything."""

    def __init__(self, prog: str) -> None:
        columns = os.environ.get("COLUMNS", "")
        super().__init__(prog, width=(int(columns) if columns.isdigit() else 80) - 2)


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"{PROG}: {message}", file=sys.stderr)
        sys.exit(2)


class _Version(argparse.Action):
    """Prints the version text as it is: argparse's own action reflows it into one line, and
    callers (like runc's) read `spec: ...` from a line of its own."""

    def __init__(self, option_strings: list[str], version: str, dest: str = argparse.SUPPRESS,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(option_strings, dest=dest, nargs=0, **kwargs)
        self.version = version

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(self.version)
        parser.exit()


def build_parser(only: str | None = None) -> Parser:
    """The CLI; with `only`, just that verb gets its arguments (the others are not registered)."""
    from kubevisor import __version__

    p = Parser(prog=PROG, description="Run OCI containers inside lightweight VMs (runc-compatible CLI).")
    p.add_argument("--version", "-v", action=_Version, version=f"{PROG} version {__version__}\nspec: 1.1.0")
    p.add_argument("--root", default=None, help="state directory (default /run/kubevisor-runtime)")
    p.add_argument("--log", default=None, help="log file (default: stderr only)")
    p.add_argument("--log-format", default="text", choices=["text", "json"])
    p.add_argument("--debug", action="store_true")
    p.add_argument("--systemd-cgroup", action="store_true", help="accepted; cgroups live in the guest")
    p.add_argument("--rootless", nargs="?", const="true", default="auto", choices=["true", "false", "auto"])
    p.add_argument("--criu", default=None, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="verb", metavar="COMMAND", parser_class=Parser)

    def verb(name: str, help_: str) -> Any:
        if only is not None and name != only:
            return _Unused()
        return sub.add_parser(name, help=help_)

    def create_flags(sp: Parser) -> None:
        sp.add_argument("--bundle", "-b", default=".")
        sp.add_argument("--console-socket", default=None)
        sp.add_argument("--pidfd-socket", default=None, help="accepted; a VM process has no host pidfd")
        sp.add_argument("--pid-file", default=None)
        sp.add_argument("--no-pivot", action="store_true", help="accepted; the guest always uses it")
        sp.add_argument("--no-new-keyring", action="store_true", help="accepted")
        sp.add_argument("--preserve-fds", type=int, default=0, help="accepted; fds cannot cross into a VM")
        sp.add_argument("id")

    create_flags(verb("create", "create a container (boots its VM)"))
    run = verb("run", "create and start a container, wait for it unless --detach")
    run.add_argument("--detach", "-d", action="store_true")
    run.add_argument("--keep", action="store_true")
    run.add_argument("--no-subreaper", action="store_true")
    create_flags(run)
    verb("start", "start a created container").add_argument("id")
    verb("state", "print a container's state as JSON").add_argument("id")
    k = verb("kill", "send a signal to a container's init process")
    k.add_argument("--all", "-a", action="store_true")
    k.add_argument("id")
    k.add_argument("signal", nargs="?", default="TERM")
    d = verb("delete", "delete a container and, with its last container, its VM")
    d.add_argument("--force", "-f", action="store_true")
    d.add_argument("id")
    e = verb("exec", "run a new process in a running container")
    e.add_argument("--console-socket", default=None)
    e.add_argument("--pidfd-socket", default=None)
    e.add_argument("--cwd", default=None)
    e.add_argument("--env", "-e", action="append", default=[])
    e.add_argument("--tty", "-t", action="store_true")
    e.add_argument("--user", "-u", default=None)
    e.add_argument("--additional-gids", "-g", action="append", type=int, default=[])
    e.add_argument("--process", "-p", default=None)
    e.add_argument("--detach", "-d", action="store_true")
    e.add_argument("--pid-file", default=None)
    e.add_argument("--process-label", default=None)
    e.add_argument("--apparmor", default=None)
    e.add_argument("--no-new-privs", action="store_true")
    e.add_argument("--cap", "-c", action="append", default=[])
    e.add_argument("--preserve-fds", type=int, default=0)
    e.add_argument("--cgroup", action="append", default=[])
    e.add_argument("--ignore-paused", action="store_true")
    e.add_argument("id")
    e.add_argument("command", nargs=argparse.REMAINDER)
    ps = verb("ps", "list a container's processes")
    ps.add_argument("--format", "-f", default="table", choices=["table", "json"])
    ps.add_argument("id")
    ps.add_argument("ps_args", nargs=argparse.REMAINDER)
    ls = verb("list", "list containers")
    ls.add_argument("--format", "-f", default="table", choices=["table", "json"])
    ls.add_argument("--quiet", "-q", action="store_true")
    verb("features", "print the features this runtime supports (JSON)")
    sp = verb("spec", "write a default config.json")
    sp.add_argument("--bundle", "-b", default=".")
    sp.add_argument("--rootless", action="store_true")
    verb("pause", "freeze a container's processes").add_argument("id")
    verb("resume", "thaw a paused container").add_argument("id")
    u = verb("update", "update a container's resource limits (inside its VM)")
    u.add_argument("--resources", "-r", default=None)
    for flag in (
        "--memory",
        "--memory-reservation",
        "--memory-swap",
        "--kernel-memory",
        "--kernel-memory-tcp",
        "--cpu-period",
        "--cpu-quota",
        "--cpu-share",
        "--cpu-rt-period",
        "--cpu-rt-runtime",
        "--cpuset-cpus",
        "--cpuset-mems",
        "--pids-limit",
        "--blkio-weight",
        "--l3-cache-schema",
        "--mem-bw-schema",
    ):
        u.add_argument(flag, default=None)
    u.add_argument("id")
    ev = verb("events", "print container stats (JSON)")
    ev.add_argument("--interval", default="5s")
    ev.add_argument("--stats", action="store_true")
    ev.add_argument("id")
    for name in ("checkpoint", "restore"):
        cp = verb(name, "not supported")
        cp.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def features() -> dict[str, Any]:
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": [],
        "mountOptions": [
            "bind",
            "rbind",
            "ro",
            "rw",
            "nosuid",
            "nodev",
            "noexec",
            "private",
            "rprivate",
            "slave",
            "rslave",
            "shared",
            "rshared",
            "relatime",
            "strictatime",
            "mode",
            "size",
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "uts", "user"],
            "capabilities": [],
            "cgroup": {"v1": False, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": {"enabled": True},
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
        },
        "annotations": {"io.kubevisor.runtime.vm": "true"},
    }


def default_spec(rootless: bool) -> dict[str, Any]:
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    return {
        "ociVersion": "1.1.0",
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "kubevisor",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]
            + ([{"type": "user"}] if rootless else []),
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }


def _read_resources(args: argparse.Namespace) -> dict[str, Any]:
    from kubevisor.oci.runtime import RuntimeFailure

    resources: dict[str, Any] = {}
    if args.resources:
        text = sys.stdin.read() if args.resources == "-" else Path(args.resources).read_text()
        try:
            resources = json.loads(text)
        except ValueError as exc:
            raise RuntimeFailure(f"--resources: invalid JSON: {exc}") from None
    mem, cpu, pids = resources.get("memory") or {}, resources.get("cpu") or {}, resources.get("pids") or {}
    for flag, section, key in (
        ("memory", mem, "limit"),
        ("memory_reservation", mem, "reservation"),
        ("memory_swap", mem, "swap"),
        ("cpu_period", cpu, "period"),
        ("cpu_quota", cpu, "quota"),
        ("cpu_share", cpu, "shares"),
        ("cpuset_cpus", cpu, "cpus"),
        ("cpuset_mems", cpu, "mems"),
        ("pids_limit", pids, "limit"),
    ):
        value = getattr(args, flag)
        if value is not None:
            section[key] = value if key in ("cpus", "mems") else int(value)
    refused = [k for k in ("blockIO", "hugepageLimits", "network", "rdma") if resources.get(k)]
    if args.blkio_weight or args.l3_cache_schema or args.mem_bw_schema or args.kernel_memory:
        refused.append("blkio/intelRdt/kernel memory")
    if refused:
        raise RuntimeFailure(
            f"update: {', '.join(refused)} cannot be changed inside a VM sandbox; memory, cpu and pids can"
        )
    out = {k: v for k, v in (("memory", mem), ("cpu", cpu), ("pids", pids)) if v}
    if not out:
        raise RuntimeFailure("update: no resources given")
    return out


def dispatch(args: argparse.Namespace, log: Log) -> int:
    from kubevisor.oci.state import DEFAULT_ROOT, Store

    store = Store(args.root or DEFAULT_ROOT)
    verb = args.verb
    if verb == "state":
        rec = store.load(args.id)
        print(json.dumps(store.oci_state(rec), indent=2))
        return 0
    if verb == "list":
        states = [store.oci_state(store.load(cid)) for cid in store.ids()]
        if args.quiet:
            print("\n".join(s["id"] for s in states))
        elif args.format == "json":
            print(json.dumps(states))
        else:
            print(f"{'ID':<20} {'PID':<8} {'STATUS':<10} {'BUNDLE':<40} {'CREATED':<31} OWNER")
            for s in states:
                print(
                    f"{s['id']:<20} {s['pid']:<8} {s['status']:<10} {s['bundle']:<40} {s['created']:<31} "
                    f"{s['owner']}"
                )
        return 0
    if verb == "features":
        print(json.dumps(features(), indent=2))
        return 0
    if verb == "spec":
        target = Path(args.bundle) / "config.json"
        if target.exists():
            log.error(f"File {target} exists. Remove it first or use another bundle")
            return 1
        target.write_text(json.dumps(default_spec(args.rootless), indent=2) + "\n")
        return 0
    if verb in ("checkpoint", "restore"):
        log.error(f"{verb} is not supported: the container runs inside a VM")
        return 1

    from kubevisor.oci import runtime as rt

    if verb == "create":
        rt.create(
            store,
            args.id,
            Path(args.bundle),
            args.pid_file,
            args.console_socket,
            Path(args.log) if args.log else None,
        )
        return 0
    if verb == "run":
        rt.create(store, args.id, Path(args.bundle), args.pid_file, args.console_socket, None)
        rt.start(store, args.id)
        if args.detach:
            return 0
        rec = store.load(args.id)
        shim = rec.shim_record
        code = rt.wait_for_exit(shim) if shim else 0
        if not args.keep:
            rt.delete(store, args.id, force=True)
        return code
    if verb == "start":
        rt.start(store, args.id)
        return 0
    if verb == "kill":
        rt.kill(store, args.id, rt.parse_signal(args.signal), args.all)
        return 0
    if verb == "delete":
        rt.delete(store, args.id, args.force)
        return 0
    if verb == "exec":
        if args.process:
            try:
                process = json.loads(Path(args.process).read_text())
            except (OSError, ValueError) as exc:
                raise rt.RuntimeFailure(f"--process {args.process}: {exc}") from None
        else:
            command = args.command[1:] if args.command[:1] == ["--"] else args.command
            if not command:
                raise rt.RuntimeFailure("exec: no command given (args or --process)")
            process = rt.exec_spec_from_args(
                store,
                args.id,
                command,
                args.tty,
                args.cwd,
                args.env,
                args.user,
                args.additional_gids,
                args.cap,
                args.no_new_privs,
            )
        return rt.exec_process(store, args.id, process, args.detach, args.pid_file, args.console_socket)
    if verb == "ps":
        host, guest = rt.ps_pids(store, args.id)
        if args.format == "json":
            print(json.dumps(host))
        else:
            print("PID (guest)")
            print("\n".join(str(pid) for pid in guest))
        return 0
    if verb in ("pause", "resume"):
        rt.simple_op(store, args.id, verb, new_status="paused" if verb == "pause" else "running")
        return 0
    if verb == "update":
        rt.simple_op(store, args.id, "update", resources=_read_resources(args))
        return 0
    if verb == "events":
        import time

        interval = float(args.interval.rstrip("s") or 5)
        while True:
            print(json.dumps(rt.stats_event(store, args.id)), flush=True)
            if args.stats:
                return 0
            time.sleep(interval)
            if store.status(store.load(args.id)) == "stopped":
                return 0
    raise AssertionError(verb)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verb = verb_of(argv)
    parser = build_parser(verb)
    if verb in ("checkpoint", "restore"):  # refused below, whatever CRIU options come with it
        args, _ = parser.parse_known_args(argv)
    else:
        args = parser.parse_args(argv)
    if not args.verb:
        parser.print_help()
        return 2
    log = Log(args.log, args.log_format, args.debug)
    log.debug(f"{args.verb} {' '.join(sys.argv[1:])}")
    try:
        return dispatch(args, log)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # every failure is one clear line, on stderr and in --log
        from kubevisor.oci.state import StateError

        known = type(exc).__name__ in (
            "RuntimeFailure",
            "AgentError",
            "AgentGone",
            "SandboxError",
        ) or isinstance(exc, StateError | OSError)
        msg = str(exc) if known else f"internal error: {type(exc).__name__}: {exc}"
        log.error(msg)
        if os.environ.get("KUBEVISOR_RUNTIME_TRACEBACK"):
            import traceback

            traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
