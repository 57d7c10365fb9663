"""A Ray cluster started the documented way, ``ray start --head``, for the cluster tests.

Importable as ``headnode`` from any test module. Each head gets its own temp dir (short: Ray's
unix sockets live below it), its own free ports (GCS, dashboard, dashboard agent, Ray Client
server: two clusters on one host otherwise collide on the agent's 52365), 127.0.0.1 only
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), and a private HOME, so its token is never the user's
``~/.ray/auth_token``. Its processes carry a marker variable: `kill()` ends exactly those, by pid
(``ray stop`` would stop every Ray process of the user on the machine).

The head's environment has no PYTHONPATH: a worker imports signray only from what the job ships
(``--working-dir`` or the driver's ``py_modules``), or from an installed copy.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rayhelpers import get_psutil
from s3server import free_port

from signray.tuning.address import LOOPBACK_ENV

RAY = str(Path(sys.executable).with_name("ray"))
MARKER = "SIGNRAY_TEST_CLUSTER"


def make_token_home(folder: Path) -> Path:
    """A HOME whose ~/.ray/auth_token Ray generated (what `ray start --head` then enforces)."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [RAY, "get-auth-token", "--generate"],
        env={**os.environ, "HOME": str(folder)},
        capture_output=True,
        check=True,
        timeout=120,
    )
    assert (folder / ".ray" / "auth_token").is_file()
    return folder


class HeadNode:
    """``ray start --head`` on 127.0.0.1 with `num_cpus`, the dashboard (and Jobs API) or not."""

    def __init__(
        self, home: Path, *, dashboard: bool, num_cpus: int = 2, env: dict | None = None
    ) -> None:
        self.temp_dir = Path(tempfile.mkdtemp(prefix="srh-", dir="/tmp"))
        self.port = free_port()
        self.dashboard_port = free_port()
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
        self.env.update(HOME=str(home), **{LOOPBACK_ENV: "0", MARKER: str(self.temp_dir)})
        self.env.update(env or {})
        args = [
            RAY, "start", "--head", "--port", self.port, "--temp-dir", self.temp_dir,
            "--num-cpus", num_cpus, "--dashboard-agent-listen-port", free_port(),
            "--ray-client-server-port", free_port(), "--disable-usage-stats",
        ]  # fmt: skip
        if dashboard:
            args += ["--dashboard-host", "127.0.0.1", "--dashboard-port", self.dashboard_port]
        else:
            args += ["--include-dashboard=false"]
        started = subprocess.run(
            [str(a) for a in args], env=self.env, capture_output=True, text=True, timeout=180
        )
        if started.returncode != 0:
            self.kill()
            output = started.stdout[-2000:] + started.stderr[-2000:]
            raise RuntimeError(f"ray start failed:\n{output}")
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}" if dashboard else None

    def client_env(self, **extra: str) -> dict:
        """A plain shell on this machine that holds the cluster's token (RAY_AUTH_MODE unset:
        a search run in the test process on a token cluster sets it there)."""
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
        return {**env, "HOME": str(self.home), **extra}

    def ask(self, code: str, timeout: float = 120) -> str:
        """Run `code` in a Python process connected to this cluster (`ray` imported); its stdout."""
        script = f"import ray\nray.init(address={self.address!r}, logging_level='ERROR')\n{code}"
        done = subprocess.run(
            [sys.executable, "-c", script],
            env=self.client_env(RAY_AUTH_MODE="token", **{LOOPBACK_ENV: "0"}),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def node_ids(self) -> set[str]:
        return set(self.ask("print(*[n['NodeID'] for n in ray.nodes() if n['Alive']])").split())

    def live_placement_groups(self) -> dict[str, str]:
        """Placement groups not REMOVED, asked of the GCS (works without the dashboard)."""
        out = self.ask(
            "from ray.util.placement_group import placement_group_table\n"
            "for k, v in placement_group_table().items():\n"
            "    print(k, v['state'])"
        )
        rows = [line.split() for line in out.splitlines() if line.strip()]
        return {pg: state for pg, state in rows if state != "REMOVED"}

    def processes(self) -> list:
        """Every live process of this cluster (they inherited its marker variable)."""
        psutil = get_psutil()
        found = []
        for p in psutil.process_iter():
            try:
                if p.environ().get(MARKER) == str(self.temp_dir):
                    found.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def kill(self) -> None:
        """SIGKILL every process of this cluster at once (as when the machine dies)."""
        psutil = get_psutil()
        for p in self.processes():
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        deadline = time.time() + 30
        while self.processes() and time.time() < deadline:
            time.sleep(0.5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
