"""Before anything starts: is every port the services need free, and if not, who has it?"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


@dataclass(frozen=True)
class Listener:
    """One address a service will listen on, and the variable that moves it."""

    service: str
    kind: str  # "gRPC" or "HTTP"
    host: str
    port: int
    variable: str  # e.g. HANDOFF_INGEST_PORT


@dataclass(frozen=True)
class PortClash:
    """A listener whose address cannot be bound, and what we could find out about why."""

    listener: Listener
    reason: str  # the operating system's words
    holder: str  # "pid 123 (python -m services.ingest)", or "" when we cannot tell

    def describe(self) -> str:
        """One paragraph for the terminal: the port, its holder, the variable to change."""
        where = self.listener
        held = f" by {self.holder}" if self.holder else ""
        example = f"{where.variable}={suggest_port(where.port)} make run"
        return (
            f"{where.service} {where.kind} cannot listen on {where.host}:{where.port}: "
            f"{self.reason}{held}. Stop that process, or pick another port with "
            f"{where.variable}=<port> (e.g. `{example}`)."
        )


def suggest_port(port: int) -> int:
    """A nearby port to offer in a message (not checked: it is an example)."""
    return port + 100 if port + 100 < 65536 else port - 100


def bind_problem(host: str, port: int) -> str:
    """'' when host:port can be bound for listening right now; else the OS's reason.

    SO_REUSEADDR as gRPC and aiohttp set it: a port in TIME_WAIT is free, a listening
    one is not.
    """
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror}"
    failures = []
    for family, kind, proto, _, address in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
                probe.listen()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "the port is already in use"
            failures.append(exc.strerror or str(exc))
    # A name like "localhost" may also resolve to a family this host lacks (IPv6 off):
    # the server binds what it can, so only a name with no usable address is a problem.
    return failures[0] if len(failures) == len(infos) else ""


def find_clashes(listeners: Iterable[Listener]) -> list[PortClash]:
    """Every listener whose address is taken (or otherwise unusable), with its holder."""
    clashes = []
    for listener in listeners:
        reason = bind_problem(listener.host, listener.port)
        if reason:
            clashes.append(PortClash(listener, reason, describe_holder(listener.port)))
    return clashes


def listening_inodes(table: str, port: int) -> set[str]:
    """Socket inodes in a /proc/net/tcp{,6} table that listen on `port`."""
    inodes = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _LISTEN:
            continue
        local_port = fields[1].rpartition(":")[2]
        if int(local_port, 16) == port:
            inodes.add(fields[9])
    return inodes


def socket_owners(inodes: set[str], proc: Path = Path("/proc")) -> list[int]:
    """The pids that hold one of these socket inodes open (those we may look at)."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    owners = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:  # gone, or not ours to look at
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in wanted:
                    owners.append(int(entry.name))
                    break
            except OSError:
                continue
    return sorted(owners)


def command_line(pid: int, proc: Path = Path("/proc")) -> str:
    """The process's command line, shortened to fit a message; '' when unreadable."""
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    words = [w.decode(errors="replace") for w in raw.split(b"\0") if w]
    if words:
        words[0] = os.path.basename(words[0])
    text = " ".join(words)
    return text if len(text) <= 80 else text[:77] + "..."


def describe_holder(port: int, proc: Path = Path("/proc")) -> str:
    """Who listens on `port` (Linux /proc only): 'pid 123 (cmd)', or '' when we cannot tell."""
    inodes: set[str] = set()
    for name in ("tcp", "tcp6"):
        try:
            inodes |= listening_inodes((proc / "net" / name).read_text(), port)
        except OSError:
            continue
    if not inodes:
        return ""
    owners = socket_owners(inodes, proc)
    if not owners:
        return "another process (not one this user may inspect)"
    parts = []
    for pid in owners[:3]:
        command = command_line(pid, proc)
        parts.append(f"pid {pid} ({command})" if command else f"pid {pid}")
    return ", ".join(parts)


def clash_report(clashes: Sequence[PortClash]) -> str:
    """The refusal printed when any port is taken: one paragraph per port."""
    lines = ["run: not starting anything: a port the services need is taken."]
    lines += [f"  {clash.describe()}" for clash in clashes]
    if any("services." in clash.holder for clash in clashes):
        lines.append("  (That looks like another Handoff: is `make run` already running?)")
    return "\n".join(lines)
