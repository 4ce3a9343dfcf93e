# Copyright 2025 facebot maintainers
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""A real ROS 2 graph for the tests: the colcon-built workspace, real processes, real DDS.

The pytest process itself never imports rclpy (rclpy needs the ROS environment at process
start). Everything ROS runs in child processes with the environment that sourcing
``/opt/ros/<distro>/setup.bash`` and the workspace's ``install/setup.bash`` gives: the nodes
(``ros2 launch`` / ``ros2 run``), the ``ros2`` CLI, and ``test/ros_probe.py`` as the robot's
other end. Each :class:`Graph` has its own ROS_DOMAIN_ID, log folder and processes, and
discovery stays on this machine (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``).
"""
from __future__ import annotations

import functools
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_ROS = ROOT.parent / 'shared' / 'ros2'
PROBE = Path(__file__).resolve().parent / 'ros_probe.py'
VENV_BIN = Path(sys.executable).parent
_domains = itertools.count()
# ros2 verbs that would otherwise start a ros2 daemon, a process that outlives the test
DAEMON_VERBS = ('lifecycle', 'topic', 'param', 'node')
# A virtual sound card for the audio nodes: ALSA's null device (hears garbage-free
# silence-or-noise, plays nowhere), so PortAudio opens real streams without hardware.
ALSA_NULL = """pcm.!default { type null }
pcm.facebot_null { type null hint { show on description "facebot test sound card" } }
"""


def ros_setup_script() -> Path | None:
    """The installed distribution's setup.bash (``$ROS_DISTRO`` first, newest name else)."""
    distro = os.environ.get('ROS_DISTRO')
    if distro and Path(f'/opt/ros/{distro}/setup.bash').is_file():
        return Path(f'/opt/ros/{distro}/setup.bash')
    found = sorted(Path('/opt/ros').glob('*/setup.bash'), reverse=True)
    return found[0] if found else None


def require_ros() -> Path:
    """The setup script, or a skip (no ROS 2 anywhere) / failure (set-up not run)."""
    setup = ros_setup_script()
    if setup is not None:
        return setup
    if not SHARED_ROS.is_dir():
        pytest.skip('no ROS 2 here: neither /opt/ros/*/setup.bash nor ../shared/ros2 exists; '
                    'real-graph tests skipped')
    pytest.fail('ROS 2 is not installed although ../shared/ros2 exists: run `make setup` '
                '(it installs the Jazzy core and builds the workspace)')


@functools.lru_cache(maxsize=1)
def workspace_env() -> dict:
    """The environment of a shell that sourced ROS 2 and the built facebot workspace."""
    setup = require_ros()
    if os.environ.get('FACEBOT_ROS_BUILT') != '1':  # make test builds it just before
        build = subprocess.run(['bash', str(ROOT / '.ci' / 'ros_build')], cwd=ROOT,
                               capture_output=True, text=True, timeout=900)
        if build.returncode != 0:
            pytest.fail(f'colcon build failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}')
    script = (f'source {shlex.quote(str(setup))} && '
              f'source {shlex.quote(str(ROOT / "install" / "setup.bash"))} && env -0')
    out = subprocess.run(['bash', '-c', script], capture_output=True, check=True).stdout
    env = dict(item.split('=', 1) for item in out.decode().split('\0') if '=' in item)
    # the nodes run under this virtual environment's Python (its packages), like `make demo`
    env['PATH'] = f'{VENV_BIN}{os.pathsep}{env.get("PATH", "")}'
    env.update(RMW_IMPLEMENTATION='rmw_cyclonedds_cpp', PYTHONUNBUFFERED='1',
               ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    env.pop('ROS_LOCALHOST_ONLY', None)
    return env


class Proc:
    """One process on the graph: its output goes to a log file the test can read."""

    def __init__(self, graph: 'Graph', name: str, argv: list[str], env: dict | None = None,
                 prefix: list[str] | None = None) -> None:
        self.name = name
        self.log_path = graph.dir / f'{name}.log'
        self._log = open(self.log_path, 'w')
        self.popen = subprocess.Popen(
            (prefix or []) + argv, env=env or graph.env, cwd=graph.dir, stdout=self._log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors='replace')

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig=signal.SIGINT, timeout: float = 30.0, group: bool = False) -> int:
        """Sends ``sig`` (to the process, or like a terminal's Ctrl-C to its whole process
        group); waits; kills the group if it does not end. Exit status."""
        if self.alive():
            if group:
                os.killpg(self.popen.pid, sig)
            else:
                self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f'{self.name} still running {timeout} s after {sig!r}:\n'
                                 f'{self.output[-3000:]}')

    def kill(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(10)


def _next_domain() -> int:
    """A DDS domain (20-99) no other graph of this test run uses: pytest-xdist workers
    (``-n``) get disjoint ranges, and the graphs of one worker count up within its range."""
    worker = os.environ.get('PYTEST_XDIST_WORKER', 'gw0')
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    width = max(1, 80 // max(1, int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))))
    return 20 + (index * width) % 80 + (os.getpid() * 13 + next(_domains)) % width


class Graph:
    """A private DDS domain with facebot's nodes, the ros2 CLI and the probe."""

    def __init__(self, tmp_dir: Path, netns: str | None = None, domain: int | None = None):
        self.dir = Path(tmp_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.domain = domain if domain is not None else _next_domain()
        self.netns = netns
        self.env = dict(workspace_env())
        (self.dir / 'asound.conf').write_text(ALSA_NULL)
        self.env.update(ROS_DOMAIN_ID=str(self.domain), ROS_LOG_DIR=str(self.dir / 'roslog'),
                        ALSA_CONFIG_PATH=f'/usr/share/alsa/alsa.conf:{self.dir / "asound.conf"}')
        self.procs: list[Proc] = []

    def _prefix(self) -> list[str]:
        return ['ip', 'netns', 'exec', self.netns] if self.netns else []

    def start(self, name: str, *argv: str) -> Proc:
        proc = Proc(self, name, list(argv), prefix=self._prefix())
        self.procs.append(proc)
        return proc

    def launch(self, *args: str, name: str = 'launch', file: str = 'facebot.launch.py') -> Proc:
        return self.start(name, 'ros2', 'launch', 'facebot', file, *args)

    def ros2(self, *args: str, timeout: float = 60.0, check: bool = True) -> str:
        """``ros2 ...`` (without the daemon: nothing outlives the test); its stdout."""
        if args and args[0] in DAEMON_VERBS and '--no-daemon' not in args:
            args = (*args, '--no-daemon')
        r = subprocess.run(self._prefix() + ['ros2', *args], env=self.env, cwd=self.dir,
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f'ros2 {" ".join(args)} failed ({r.returncode}):\n'
                                 f'{r.stdout[-2000:]}\n{r.stderr[-2000:]}')
        return r.stdout + r.stderr if not check else r.stdout

    def probe(self, *args: str, timeout: float = 120.0) -> dict:
        """Runs test/ros_probe.py on this graph; its JSON result."""
        r = subprocess.run(self._prefix() + [sys.executable, str(PROBE), *args], env=self.env,
                           cwd=self.dir, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise AssertionError(f'probe {" ".join(args)} failed:\n{r.stderr[-4000:]}')
        return json.loads(r.stdout)

    def wait_nodes(self, *names: str, active: str = '', timeout: float = 60.0) -> None:
        """Until the nodes are on the graph (and the lifecycle node ``active`` is active)."""
        res = self.probe('wait-nodes', *names, '--timeout', str(timeout), '--active', active,
                         timeout=timeout + 30)
        if not res['ok']:
            logs = '\n'.join(f'--- {p.name}\n{p.output[-2500:]}' for p in self.procs)
            raise AssertionError(f'nodes {names} not on the graph or {active or "-"} not '
                                 f'active (seen {res["seen"]}, {res["state"]!r}):\n{logs}')

    def wait_lifecycle(self, node: str, state: str, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        got = ''
        while time.monotonic() < end:
            got = self.ros2('lifecycle', 'get', node, check=False)
            if got.startswith(state):
                return
            time.sleep(0.5)
        raise AssertionError(f'{node} is not {state} after {timeout} s: {got!r}')

    def node_logs(self) -> dict[str, str]:
        """The ROS log file of each process (rcutils writes one per process)."""
        out = {}
        for path in sorted((self.dir / 'roslog').rglob('*.log')):
            out[path.name] = path.read_text(errors='replace')
        return out

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.alive():
                proc.popen.send_signal(signal.SIGINT)
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
            proc._log.close()
        # a daemon started anyway (a verb without --no-daemon) must not outlive the graph
        subprocess.run(['pkill', '-f', f'ros2cli.daemon.*--ros-domain-id {self.domain} '],
                       capture_output=True)
