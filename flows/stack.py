"""Start and stop a local Prefect server, MLflow UI and `cpu` pool worker, by PID.

`make ui` and `make stop` call this module; the deployment integration test uses it too.
Every server binds to 127.0.0.1. Each process gets its own process group and a PID file in
the run directory, and is stopped through that PID only: SIGINT first (a Prefect worker
ignores SIGTERM), a second SIGINT, then SIGKILL if it still has not exited.

    python -m flows.stack start [--data-dir lake] [--prefect-port 4200] [--mlflow-port 5000]
    python -m flows.stack stop
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import recsys_core  # noqa: F401  (offline defaults for the children we start)
from flows import server
from recsys_core.settings import DEFAULT_DATA_DIR

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CPU_DEPLOYMENTS = (
    "nightly",
    "ingest",
    "encode",
    "train",
    "recommend",
    "forget-user",
    "finetune-encoder",
)


@dataclass(frozen=True)
class Stack:
    """Where a local stack keeps its state.

    Args:
        data_dir: The pipeline's data directory (tables, MLflow store, Prefect database).
        run_dir: PID and log files.
        prefect_port: Prefect server port on 127.0.0.1.
        mlflow_port: MLflow UI port on 127.0.0.1.
    """

    data_dir: Path
    run_dir: Path
    prefect_port: int = 4200
    mlflow_port: int = 5000

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    def request(self, path: str, body: dict | None = None) -> object:
        """Call the Prefect server's REST API: GET `path`, or POST `body` as JSON.

        Args:
            path: The path under the API's root, e.g. `/deployments/filter`.
            body: The JSON body of a POST; None for a GET.
        """
        request = urllib.request.Request(
            f"{self.api_url}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"content-type": "application/json"},
            method="GET" if body is None else "POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def env(self, **extra: str) -> dict[str, str]:
        """Environment of every child: this project's offline defaults plus the stores."""
        data_dir = str(self.data_dir.resolve())
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.data_dir.resolve() / "prefect"),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "RECSYS_DATA_DIR": data_dir,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        env.update(extra)
        return env

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    # -- processes -----------------------------------------------------------------------
    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> int:
        """Start `args` in its own process group, logging to `<run_dir>/<name>.log`."""
        if (pid := self.running(name)) is not None:
            print(f"{name} already running (pid {pid})")
            return pid
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = (self.run_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env or self.env(), cwd=ROOT,
            start_new_session=True,
        )  # fmt: skip
        self.pid_file(name).write_text(str(proc.pid))
        return proc.pid

    def running(self, name: str) -> int | None:
        path = self.pid_file(name)
        if not path.exists():
            return None
        pid = int(path.read_text())
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
            return None
        return pid

    def stop(self, name: str, timeout: float = 20.0) -> bool:
        """SIGINT, SIGINT again, then SIGKILL, to the process group of the recorded PID."""
        pid = self.running(name)
        if pid is None:
            return False
        if name == "prefect":  # commands stop using it
            server.forget_record(self.prefect_home, pid)
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGINT, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            if _wait_gone(pid, wait):
                break
        self.pid_file(name).unlink(missing_ok=True)
        return True

    # -- services ------------------------------------------------------------------------
    @property
    def prefect_home(self) -> Path:
        return self.data_dir.resolve() / "prefect"

    def start_prefect(self, timeout: float = 120.0) -> None:
        """Start the server and record it where `recsys` commands look for a server
        (`flows.server`), so commands over this data directory use it; the server a
        command started over the same database stops once its commands are done."""
        self.prefect_home.mkdir(parents=True, exist_ok=True)
        pid = self.spawn(
            "prefect",
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
             "--port", str(self.prefect_port)],
        )  # fmt: skip
        _wait_http(f"{self.api_url}/health", timeout, self.run_dir / "prefect.log")
        server.write_record(
            self.prefect_home,
            server.ServerRecord(pid, self.prefect_port, self.api_url, socket.gethostname(),
                                owner="make ui"),
        )  # fmt: skip

    def start_mlflow(self, timeout: float = 120.0) -> None:
        store = self.data_dir.resolve() / "mlflow"
        (store / "artifacts").mkdir(parents=True, exist_ok=True)
        self.spawn(
            "mlflow",
            [str(BIN / "mlflow"), "ui", "--host", "127.0.0.1", "--port", str(self.mlflow_port),
             "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
             "--default-artifact-root", str(store / "artifacts")],
        )  # fmt: skip
        _wait_http(f"http://127.0.0.1:{self.mlflow_port}/health", timeout,
                   self.run_dir / "mlflow.log")  # fmt: skip

    def prefect_cli(self, *args: str) -> None:
        subprocess.run([str(BIN / "prefect"), *args], env=self.env(), cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip

    def deploy(self) -> None:
        """Create the cpu process pool and deploy deployments/prefect.yaml, as a Prefect
        user does (`prefect deploy --all` from the checkout root)."""
        self.prefect_cli("work-pool", "create", "cpu", "--type", "process", "--overwrite")
        self.prefect_cli("--no-prompt", "deploy", "--all",
                         "--prefect-file", str(ROOT / "deployments" / "prefect.yaml"))  # fmt: skip

    def deploy_gpu(self, pool_type: str) -> None:
        """Create the gpu pool from its job template and deploy deployments/gpu.yaml."""
        template = ROOT / "deployments" / "work-pools" / f"gpu-{pool_type}.json"
        if not template.exists():
            raise SystemExit(f"no job template {template} (use kubernetes or docker)")
        self.prefect_cli("work-pool", "create", "gpu", "--type", pool_type,
                         "--base-job-template", str(template), "--overwrite")  # fmt: skip
        self.prefect_cli("--no-prompt", "deploy", "--all",
                         "--prefect-file", str(ROOT / "deployments" / "gpu.yaml"))  # fmt: skip

    def start_worker(self) -> None:
        self.spawn(
            "worker",
            [str(BIN / "prefect"), "worker", "start", "--pool", "cpu", "--type", "process"],
        )


def _wait_http(url: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s; see {log}")


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
            if finished == pid:
                return True
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m flows.stack", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["start", "stop", "deploy-gpu"])
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("RECSYS_DATA_DIR", DEFAULT_DATA_DIR))
    )
    parser.add_argument("--run-dir", type=Path, default=Path(".run"))
    parser.add_argument("--prefect-port", type=int, default=4200)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--gpu-pool-type", default="kubernetes", choices=["kubernetes", "docker"])
    args = parser.parse_args(argv)
    stack = Stack(args.data_dir, args.run_dir, args.prefect_port, args.mlflow_port)
    if args.command == "stop":
        for name in ("worker", "mlflow", "prefect"):
            print(f"stopped {name}" if stack.stop(name) else f"{name} was not running")
        if server.stop_server(stack.prefect_home):  # the one `recsys` commands started
            print("stopped the server of recsys commands")
        return
    if args.command == "deploy-gpu":
        stack.deploy_gpu(args.gpu_pool_type)
        print(f"deployed encode-gpu to the gpu pool ({args.gpu_pool_type}); set "
              "RECSYS_ENCODE_DEPLOYMENT=encode/encode-gpu for the nightly to use it")  # fmt: skip
        return
    stack.start_prefect()
    stack.start_mlflow()
    stack.deploy()
    stack.start_worker()
    print(
        f"Prefect UI  http://127.0.0.1:{args.prefect_port}  (deployments: "
        f"{', '.join(CPU_DEPLOYMENTS)}; a worker serves the cpu pool)"
    )
    print(f"MLflow UI   http://127.0.0.1:{args.mlflow_port}")
    print(f"Logs and PIDs in {args.run_dir}/; stop everything with: make stop")
    print(f"recsys commands over {args.data_dir} use this server; from elsewhere: "
          f"export PREFECT_API_URL={stack.api_url}")  # fmt: skip


if __name__ == "__main__":
    main()
