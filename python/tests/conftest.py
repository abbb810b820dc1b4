"""The one fixture module of the Python tests: real plasmon-store and redis-server processes.

ctest passes the binaries of the build under test (PLASMON_STORE_BINARY,
PLASMON_CLI_BINARY) and PYTHONPATH=<build>/python. Every store and Redis gets
a fresh directory of its own under $TMPDIR with a short socket path; Redis
listens on a Unix socket only (--port 0) and cluster stores on 127.0.0.1:0
(the kernel picks the port, which the store publishes in Redis), so parallel
ctest runs never collide.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

import plasmon

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _binary(env, name):
    path = os.environ.get(env) or os.path.join(ROOT, "build", "tools", name)
    if not os.access(path, os.X_OK):
        pytest.exit(f"{name} not found at {path}: set {env} (ctest does) or build first", 2)
    return path


STORE_BINARY = _binary("PLASMON_STORE_BINARY", "plasmon-store")
CLI_BINARY = _binary("PLASMON_CLI_BINARY", "plasmon")


def _wait_for_socket(path, proc, what, timeout_s=20):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start with {proc.returncode}")
        if os.path.exists(path):
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
                return
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.01)
    raise RuntimeError(f"{what} did not listen on {path} within {timeout_s} s")


class _Process:
    """A child process in a directory of its own; stop() ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, argv, dirpath, log_name):
        self.dir = dirpath
        self.log_path = os.path.join(dirpath, log_name)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test left it stopped
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class Store(_Process):
    """A real plasmon-store on a socket of its own."""

    def __init__(self, args=("-m", "256M"), name="store"):
        d = tempfile.mkdtemp(prefix="plasmon-py-")
        self.socket = os.path.join(d, "s.sock")
        super().__init__([STORE_BINARY, "--socket", self.socket, "--log-level", "warn", *args],
                         d, name + ".log")
        try:
            _wait_for_socket(self.socket, self.proc, "plasmon-store")
        except Exception:
            self.stop()
            raise RuntimeError(f"plasmon-store did not start:\n{self.log()}")

    def connect(self, **kw):
        return plasmon.connect(self.socket, **kw)


class Redis(_Process):
    """A real redis-server on a Unix socket only (--port 0)."""

    def __init__(self):
        d = tempfile.mkdtemp(prefix="plasmon-py-redis-")
        self.socket = os.path.join(d, "redis.sock")
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        super().__init__([exe, "--port", "0", "--unixsocket", self.socket, "--save", "",
                          "--appendonly", "no", "--dir", d], d, "redis.log")
        _wait_for_socket(self.socket, self.proc, "redis-server")

    @property
    def address(self):
        return "unix:" + self.socket


def _cleanup(*procs):
    for p in procs:
        p.stop()
        shutil.rmtree(p.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def store():
    """One store shared by the tests that only add objects of their own (random IDs)."""
    s = Store(("-m", "1536M"))
    yield s
    _cleanup(s)


@pytest.fixture
def client(store):
    with store.connect() as c:
        yield c


@pytest.fixture
def make_store():
    """A factory of stores of a test's own (for kills, eviction, small arenas)."""
    made = []

    def make(*args, **kw):
        s = Store(args or ("-m", "64M"), **kw)
        made.append(s)
        return s

    yield make
    _cleanup(*made)


@pytest.fixture
def cluster():
    """Redis and two stores serving each other over TCP on 127.0.0.1 (as tests/cluster_*.cc)."""
    redis = Redis()
    secret = os.path.join(redis.dir, "secret")
    with open(secret, "w") as f:
        f.write("the python tests' cluster secret\n")
    nodes = []
    try:
        for i in (1, 2):
            nodes.append(Store(("-m", "256M", "--redis", redis.address, "--node-id", f"node-{i}",
                                "--node-ttl-ms", "1000", "--listen", "127.0.0.1:0",
                                "--cluster-secret-file", secret), name=f"node-{i}"))
        yield nodes
    finally:
        _cleanup(*nodes, redis)


def ref_count(client, oid):
    """The store's count of references to `oid` (None if it is not listed)."""
    for info in client.list():
        if info.id == oid:
            return info.ref_count
    return None


def wait_until(predicate, timeout_s=10):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()
