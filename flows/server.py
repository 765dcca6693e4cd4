"""One Prefect server per Prefect home, shared by the commands that run flows.

Without `PREFECT_API_URL`, Prefect starts a temporary server for every flow-running command:
15-25 s on two busy cores, past its own 20 s start-up limit, and a killed command leaves
that server running. Instead, a command uses the server recorded in
`$PREFECT_HOME/server/server.json` (pid, port, url) when it is alive and answers
`/api/health`, and otherwise starts one on a free port of 127.0.0.1 and waits for it (up to
`RECSYS_SERVER_START_SECONDS`, 180 s by default). `make ui` records its server in the same
file, so commands use it while it runs.

The server runs under a small supervisor (`python -m flows.server serve`), the leader of its own
process group. Each command that uses the server leaves a file named after its pid in
`clients/` while it runs; the supervisor stops the server, and itself, once no live process
has used it for `RECSYS_SERVER_IDLE_MINUTES` (10 by default). A command killed with
SIGKILL leaves a file whose pid is dead, which counts as gone, so nothing outlives the idle
limit. The supervisor also stops when its record is removed or replaced and no command uses it
(the data directory deleted, `make ui` started its own server), on SIGTERM or SIGINT, and
when the server exits. `stop_server` stops it at once, by its recorded pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import recsys_core  # noqa: F401  (offline defaults for the server we start)

IDLE_MINUTES = 10.0
START_SECONDS = 180.0
CHECK_SECONDS = 1.0  # how often the supervisor looks at its clients and its server
STOP_SECONDS = 15.0


@dataclass(frozen=True)
class ServerRecord:
    """A running server, as recorded for the commands that use it.

    Args:
        pid: The process to stop it by: the supervisor (its process group holds the server),
            or the server itself when `make ui` started it.
        port: Its port on 127.0.0.1.
        url: Its API URL, for PREFECT_API_URL.
        host: The machine it runs on.
        owner: `recsys` (stopped when idle) or `make ui` (stopped by `make stop`).
    """

    pid: int
    port: int
    url: str
    host: str
    owner: str = "recsys"


def state_dir(prefect_home: Path) -> Path:
    """Where the record, the lock, the client files and the server's log live."""
    return Path(prefect_home) / "server"


def record_path(prefect_home: Path) -> Path:
    return state_dir(prefect_home) / "server.json"


def read_record(prefect_home: Path) -> ServerRecord | None:
    """The recorded server, or None (no record, or one that cannot be read)."""
    try:
        return ServerRecord(**json.loads(record_path(prefect_home).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def write_record(prefect_home: Path, record: ServerRecord) -> None:
    """Record `record` in one rename, so a reader never sees half a file."""
    path = record_path(prefect_home)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(asdict(record)))
    partial.replace(path)


def forget_record(prefect_home: Path, pid: int) -> None:
    """Remove the record if it still names `pid` (another server may have replaced it)."""
    record = read_record(prefect_home)
    if record is not None and record.pid == pid:
        record_path(prefect_home).unlink(missing_ok=True)


def _lock(prefect_home: Path, timeout: float):
    from filelock import FileLock

    folder = state_dir(prefect_home)
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / "start.lock"), timeout=timeout, thread_local=False)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, but not ours to use
        return True
    return True


def answers(url: str, timeout: float = 10.0) -> bool:
    """The server at `url` (.../api) answers its health check."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def _is_supervisor(pid: int) -> bool:
    """`pid` runs this module (not a process that reused the pid of a dead supervisor)."""
    try:
        return b"flows.server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return alive(pid)  # no /proc: trust the pid


def _seconds(name: str, default: float, scale: float = 1.0) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return float(value) * scale
    except ValueError:
        from recsys_core.errors import InputError

        raise InputError(f"{name}={value!r} is not a number") from None


def idle_seconds() -> float:
    """How long the shared server waits with no live command before it stops."""
    return _seconds("RECSYS_SERVER_IDLE_MINUTES", IDLE_MINUTES * 60, scale=60.0)


def start_seconds() -> float:
    """How long a command waits for a server to start."""
    return _seconds("RECSYS_SERVER_START_SECONDS", START_SECONDS)


# -- the commands' side ---------------------------------------------------------------------
@contextlib.contextmanager
def shared_server(prefect_home: Path) -> Iterator[ServerRecord]:
    """Use the server of `prefect_home` for the length of the block, starting it if needed.

    Args:
        prefect_home: The Prefect home whose database the server serves.

    Raises:
        RuntimeError: No server answered within `start_seconds()`.
    """
    prefect_home = Path(prefect_home).resolve()
    client = state_dir(prefect_home) / "clients" / str(os.getpid())
    limit = start_seconds()
    with _lock(prefect_home, timeout=limit + 30):  # one starter at a time; the idle stop waits
        client.parent.mkdir(parents=True, exist_ok=True)
        client.touch()  # from here on the supervisor does not stop for idleness
        try:
            record = _running(prefect_home, limit) or _start(prefect_home, limit)
        except BaseException:
            client.unlink(missing_ok=True)
            raise
    try:
        yield record
    finally:
        client.unlink(missing_ok=True)


def _running(prefect_home: Path, limit: float) -> ServerRecord | None:
    """The recorded server once it answers; None when there is none to use. A live server
    that is slow to answer (a busy machine) is given `limit` seconds before it is replaced,
    as other commands may be using it."""
    record = read_record(prefect_home)
    if record is None or record.host != socket.gethostname():
        return None  # 127.0.0.1 of another machine (a data directory on a shared disk)
    deadline = time.monotonic() + limit
    while alive(record.pid):
        if answers(record.url):
            return record
        if time.monotonic() > deadline:
            if record.owner == "recsys" and _is_supervisor(record.pid):
                stop_pid(record.pid)
            break
        time.sleep(1.0)
    forget_record(prefect_home, record.pid)
    return None


def _start(prefect_home: Path, limit: float) -> ServerRecord:
    folder = state_dir(prefect_home)
    log = folder / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(prefect_home)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.server", "serve", str(prefect_home)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            cwd=Path(__file__).resolve().parents[1], start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        record = read_record(prefect_home)
        if record is not None and record.pid == proc.pid:
            return record
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    stop_pid(proc.pid)
    tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
    why = f" (exit code {proc.returncode})" if proc.returncode is not None else ""
    raise RuntimeError(
        f"the Prefect server for {prefect_home} did not start within {limit:.0f} s{why}; "
        f"see {log}" + (f": {' | '.join(tail)}" if tail else "")
    )


def stop_pid(pid: int, timeout: float = STOP_SECONDS) -> None:
    """Stop the process group led by `pid`: SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:  # reap it when it is our child
                    return
            if not alive(pid):
                return
            time.sleep(0.1)


def stop_server(prefect_home: Path) -> bool:
    """Stop the server `recsys` started for `prefect_home`, by its recorded pid.

    A server of `make ui` is left to `make stop`. Returns whether one was stopped.
    """
    record = read_record(prefect_home)
    if record is None or record.owner != "recsys" or record.host != socket.gethostname():
        return False
    forget_record(prefect_home, record.pid)
    if _is_supervisor(record.pid):
        stop_pid(record.pid)
    return True


# -- the supervisor -------------------------------------------------------------------------
def live_clients(prefect_home: Path) -> int:
    """Commands using the server now; files of dead processes are removed."""
    count = 0
    folder = state_dir(prefect_home) / "clients"
    for path in folder.glob("*") if folder.exists() else ():
        try:
            pid = int(path.name)
        except ValueError:
            continue
        if alive(pid):
            count += 1
        else:
            path.unlink(missing_ok=True)
    return count


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:
    """In the server's process: get SIGTERM when the supervisor dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _server_command(port: int) -> list[str]:
    # what Prefect runs for its temporary server: the API only, the light set of services
    return [
        sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on",
    ]  # fmt: skip


def supervise(prefect_home: Path) -> int:
    """Run a server for `prefect_home` until it is idle, its record goes, or a signal.

    Returns the exit code of this process.
    """
    prefect_home = Path(prefect_home).resolve()
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    port = free_port()
    server = subprocess.Popen(_server_command(port), env=env, preexec_fn=die_with_parent)
    url = f"http://127.0.0.1:{port}/api"
    me = os.getpid()
    try:
        deadline = time.monotonic() + START_SECONDS * 3
        while not answers(url, timeout=5.0):
            if stopping or server.poll() is not None or time.monotonic() > deadline:
                return 1
            time.sleep(0.2)
        write_record(prefect_home, ServerRecord(me, port, url, socket.gethostname()))
        idle = idle_seconds()
        last_used = time.monotonic()
        while not stopping and server.poll() is None:
            record = read_record(prefect_home)
            busy = live_clients(prefect_home)
            if (record is None or record.pid != me) and not busy:
                return 0  # withdrawn or replaced (by `make ui`), or the data directory is gone
            if busy:
                last_used = time.monotonic()
            elif time.monotonic() - last_used > idle and _stop_if_still_idle(prefect_home, me):
                return 0
            time.sleep(CHECK_SECONDS)
        return 0
    finally:
        forget_record(prefect_home, me)
        server.terminate()
        try:
            server.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _stop_if_still_idle(prefect_home: Path, me: int) -> bool:
    """Withdraw the record under the start lock, so no command picks this server up while
    it stops."""
    from filelock import Timeout

    try:
        with _lock(prefect_home, timeout=0.5):
            if live_clients(prefect_home):
                return False
            forget_record(prefect_home, me)
            return True
    except Timeout:  # a command is starting or picking up the server
        return False


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.server stop lake/prefect` stops a data directory's server by its
    recorded pid; `serve PREFECT_HOME` is the supervisor that commands start."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m flows.server", description=main.__doc__)
    parser.add_argument("command", choices=["stop", "serve"])
    parser.add_argument("prefect_home", type=Path, help="e.g. lake/prefect")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return supervise(args.prefect_home)
    stopped = stop_server(args.prefect_home)
    print(f"stopped the server of {args.prefect_home}" if stopped else "no server to stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
