"""Shared pieces of the benchmark suite: work dirs, servers, data, timing, peak RSS, checks.

Nothing here imports pixsrc: every pixsrc run is the installed ``pixsrc`` executable in a child
process, timed from the outside the same way as rclone and curl, so start-up is always included.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Self

HERE = Path(__file__).resolve().parent


class SetupError(Exception):
    """The benchmark cannot run (a server did not start, `pixsrc add` failed...)."""


class Skip(Exception):
    """A benchmark, or one comparison in it, cannot run here (a tool is missing)."""


def install_sigterm_handler() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so the `finally` blocks stop servers and delete temp dirs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def tool(name: str) -> str | None:
    return shutil.which(name)


def tool_version(argv: Sequence[str]) -> str:
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    text = (result.stdout or result.stderr).strip()
    return text.splitlines()[0] if text else "?"


# -- processes ------------------------------------------------------------------------------------


def run(argv: Sequence[str] | str, env: dict[str, str] | None = None, *, shell: bool = False,
        capture: bool = True, inherit: bool = False) -> tuple[int, str]:
    """Run a command in its own process group: (exit code, its stdout and stderr when `capture`).

    Its own group, because a timed command runs below a wrapper (hyperfine, GNU time): killing
    only the wrapper on Ctrl-C or SIGTERM would leave pixsrc or rclone running into a deleted
    temp dir. On any exception here the whole group gets SIGTERM, then SIGKILL.
    """
    out = None if inherit else subprocess.PIPE if capture else subprocess.DEVNULL
    proc = subprocess.Popen(argv if shell else list(argv), shell=shell, env=env, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=None if inherit else subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = proc.communicate()
    except BaseException:
        kill_group(proc)
        raise
    return proc.returncode, output.decode(errors="replace") if output else ""


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group (pixsrc then records what finished), SIGKILL what is left after 5 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader, else it stays in the group as a zombie
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, what: str, log: Path | None = None,
                  timeout: float = 15.0) -> None:
    """Poll until something accepts on 127.0.0.1:port (servers signal readiness no other way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            detail = log.read_text(errors="replace").strip()[-800:] if log and log.exists() else ""
            raise SetupError(f"{what} exited with {proc.returncode}: {detail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.02)
    raise SetupError(f"{what} did not accept connections on 127.0.0.1:{port} within {timeout:.0f} s")


class Process:
    """A server child process, stopped (SIGTERM, then SIGKILL) by `stop()`; safe to call twice."""

    def __init__(self, argv: Sequence[str], what: str, log: Path, env: dict[str, str] | None = None) -> None:
        self.what = what
        self.log = log
        with log.open("wb") as out:
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Nginx(Process):
    """A private nginx on 127.0.0.1: its own prefix, config, pid and logs in `home`; autoindex and ETag on."""

    def __init__(self, home: Path, root: Path, workers: int = 1) -> None:
        nginx = tool("nginx")
        if nginx is None:
            raise Skip("nginx is not installed (Debian: apt-get install nginx-light)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        home.mkdir(parents=True, exist_ok=True)
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (home / sub).mkdir(exist_ok=True)
        # As root, nginx's workers would switch to `nobody`, which cannot read a mkdtemp (0700) tree.
        user = "user root root;\n" if os.geteuid() == 0 else ""
        conf = home / "nginx.conf"
        conf.write_text(f"""{user}worker_processes {workers};
pid {home}/nginx.pid;
error_log {home}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {home}/client_body;
    proxy_temp_path {home}/proxy;
    fastcgi_temp_path {home}/fastcgi;
    uwsgi_temp_path {home}/uwsgi;
    scgi_temp_path {home}/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 60s;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{self.port};
        root {root};
        location / {{
            autoindex on;
            etag on;
        }}
        location = /__status__ {{
            stub_status;  # connections and requests, for the benchmarks' notes
        }}
    }}
}}
""")
        # -e: the error log before the config is read (else nginx tries /var/log/nginx, root-owned).
        super().__init__([nginx, "-p", str(home), "-e", str(home / "error.log"), "-c", str(conf),
                          "-g", "daemon off;"], "nginx", home / "stdout.log")
        try:
            wait_for_port(self.port, self.proc, "nginx", home / "error.log")
        except BaseException:
            self.stop()
            raise


class ScriptServer(Process):
    """One of this folder's helper servers (delay_proxy.py, slow_server.py) on a port chosen here."""

    def __init__(self, script: str, args: Sequence[str], what: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        super().__init__([sys.executable, str(HERE / script), "--port", str(self.port), *args], what, log)
        try:
            wait_for_port(self.port, self.proc, what, log)
        except BaseException:
            self.stop()
            raise


# -- data -----------------------------------------------------------------------------------------


def build_tree(root: Path, files: int, size: int, folders: int, name: str = "img-{n:05d}.jpg") -> dict[str, str]:
    """root/fNN/img-NNNNN.jpg of random bytes (nothing compresses); returns relative path -> sha256.

    The files are dated two days back, as a published gallery's are: a file changed in the last 12
    hours is re-checked by pixsrc on every run (its listed date is only to the minute, maybe local)."""
    digests: dict[str, str] = {}
    when = time.time() - 2 * 86400
    for f in range(folders):
        (root / f"f{f:02d}").mkdir(parents=True, exist_ok=True)
    for n in range(files):
        rel = f"f{n % folders:02d}/" + name.format(n=n)
        data = os.urandom(size)
        (root / rel).write_bytes(data)
        os.utime(root / rel, (when, when))
        digests[rel] = hashlib.sha256(data).hexdigest()
    return digests


def build_big_file(path: Path, size: int) -> dict[str, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    chunk = 8 << 20
    with path.open("wb") as out:
        left = size
        while left:
            data = os.urandom(min(chunk, left))
            digest.update(data)
            out.write(data)
            left -= len(data)
    return {path.name: digest.hexdigest()}


def verify(dest: Path, digests: dict[str, str]) -> str | None:
    """None when dest holds exactly these files with these bytes, else what is wrong."""
    if not dest.is_dir():
        return f"{dest} was not created"
    found = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    if found != sorted(digests):
        extra = sorted(set(found) - set(digests))[:3]
        missing = sorted(set(digests) - set(found))[:3]
        return f"{len(found)} files, expected {len(digests)} (missing e.g. {missing}, extra e.g. {extra})"
    for rel, expected in digests.items():
        digest = hashlib.sha256()
        with (dest / rel).open("rb") as src:
            while block := src.read(1 << 20):
                digest.update(block)
        if digest.hexdigest() != expected:
            return f"{rel}: wrong bytes"
    return None


# -- measuring ------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Wall-clock seconds of the timed runs of one command."""

    name: str
    times: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def minimum(self) -> float:
        return min(self.times)

    @property
    def stddev(self) -> float:
        return statistics.stdev(self.times) if len(self.times) > 1 else 0.0


@dataclass
class Run:
    """One measured run: exit code, wall seconds, peak RSS (bytes) of the process itself, stderr tail."""

    returncode: int
    seconds: float
    max_rss: int
    stderr: str


# Forks a child, execs the command in it, and writes the child's peak RSS (KiB) to argv[1]. Run as
# `python -I -S`, so what the child had before exec (a copy of this small wrapper) is ~8 MB at most.
_RSS_WRAPPER = """
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


def measured_run(argv: Sequence[str], env: dict[str, str], log: Path) -> Run:
    """Run argv once: wall time and the peak RSS of the command's own process.

    Not wait4() on a child of this process: Linux keeps a process's peak RSS across execve, and a
    child that Python spawns (vfork) starts as this big process, so every command would report at
    least this benchmark's own peak. GNU time (Debian package `time`) forks from a ~2 MB process;
    without it, a tiny Python wrapper does the same.
    """
    rss_file = log.with_suffix(".rss")
    gnu_time = "/usr/bin/time"
    if os.access(gnu_time, os.X_OK):
        wrapped = [gnu_time, "-f", "%M", "-o", str(rss_file), *argv]
    else:
        wrapped = [sys.executable, "-I", "-S", "-c", _RSS_WRAPPER, str(rss_file), *argv]
    start = time.perf_counter()
    returncode, output = run(wrapped, env)
    seconds = time.perf_counter() - start
    log.write_text(output)
    text = rss_file.read_text().strip().splitlines() if rss_file.exists() else []
    max_rss = int(text[-1]) * 1024 if text and text[-1].isdigit() else 0
    return Run(returncode, seconds, max_rss, output[-600:])


@dataclass
class Timer:
    """hyperfine when installed (and not disabled), else a plain loop with the same meaning."""

    work: Path
    env: dict[str, str]
    use_hyperfine: bool
    verbose: bool = False
    logs: list[Path] = field(default_factory=list)

    def time(self, name: str, argv: Sequence[str], *, runs: int, warmup: int, prepare: str | None = None,
             no_shell: bool = False) -> Timing:
        """Median etc. of `runs` runs of argv; `prepare` (a shell command) runs before each one.

        Raises SetupError when the command fails (its stderr tail in the message).
        """
        command = shlex.join(argv)
        if self.use_hyperfine:
            return self._hyperfine(name, command, runs, warmup, prepare, no_shell)
        return self._loop(name, argv, runs, warmup, prepare)

    def _hyperfine(self, name: str, command: str, runs: int, warmup: int, prepare: str | None,
                   no_shell: bool) -> Timing:
        out = self.work / f"hyperfine-{name}.json"
        log = self.work / f"hyperfine-{name}.log"
        args = ["hyperfine", "--style", "basic", "--runs", str(runs), "--warmup", str(warmup),
                "--export-json", str(out), "--command-name", name]
        if prepare:
            args += ["--prepare", prepare]
        if no_shell:
            args.append("-N")  # start-up commands take tens of ms: leave the shell's own start-up out
        returncode, output = run([*args, command], self.env, inherit=self.verbose)
        log.write_text(output)
        if returncode != 0:
            # hyperfine drops the command's output: run it once more to say why it failed
            if prepare:
                run(prepare, self.env, shell=True)
            again, again_output = run(command, self.env, shell=True)
            raise SetupError(f"hyperfine failed ({returncode}) for {name}: {output.strip()[-300:]}; run again: "
                             f"exit {again}: {again_output.strip()[-500:]}")
        data = json.loads(out.read_text())["results"][0]
        return Timing(name, [float(t) for t in data["times"]])

    def _loop(self, name: str, argv: Sequence[str], runs: int, warmup: int, prepare: str | None) -> Timing:
        times: list[float] = []
        for n in range(warmup + runs):
            if prepare:
                run(prepare, self.env, shell=True)
            start = time.perf_counter()
            returncode, output = run(argv, self.env)
            elapsed = time.perf_counter() - start
            if returncode != 0:
                raise SetupError(f"{name}: exit {returncode}: {output.strip()[-600:]}")
            if n >= warmup:
                times.append(elapsed)
        return Timing(name, times)


def rm_command(*paths: Path) -> str:
    return "rm -rf " + " ".join(shlex.quote(str(p)) for p in paths)


def make_work_dir(parent: str | None) -> Path:
    """A temp dir in `parent`, else in /dev/shm when it is a tmpfs with room, else the system's.

    tmpfs by default: on this VM's ext4, creating and deleting 50,000 files run after run made
    each fresh copy 3-4x slower and its time swing by tens of seconds, for rclone as for pixsrc;
    the benchmark is about the tools, not the disk. Pass --tmp to measure on a disk.
    """
    if parent is None and os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        stat = os.statvfs("/dev/shm")
        if stat.f_bavail * stat.f_frsize >= 4 << 30:
            parent = "/dev/shm"
    return Path(tempfile.mkdtemp(prefix="pixsrc-bench-", dir=parent))


def file_system(path: Path) -> str:
    """The file system type of path (from /proc/mounts: the longest mount point above it)."""
    best, kind = "", "?"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    resolved = str(path.resolve())
    for line in mounts:
        fields = line.split()
        inside = len(fields) >= 3 and (resolved == fields[1] or resolved.startswith(fields[1].rstrip("/") + "/"))
        if inside and len(fields[1]) > len(best):
            best, kind = fields[1], fields[2]
    return kind


def count_listings(root: Path) -> int:
    """Folder listings a crawler fetches below (and including) root."""
    return 1 + sum(1 for p in root.rglob("*") if p.is_dir())
