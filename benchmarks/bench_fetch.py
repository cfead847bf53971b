#!/usr/bin/env python3
"""Benchmark ``pixsrc fetch`` of a remote gallery against ``rclone copy`` on loopback.

Builds a gallery (default 2,000 files of 50 KB random bytes in 20 folders) in a temp dir, serves
it on 127.0.0.1 (``rclone serve http`` when rclone is installed, else a Python
ThreadingHTTPServer speaking HTTP/1.1), writes a JSON index next to it, then times with hyperfine
(or, without it, a loop of N runs):

    fetch-html-fresh   pixsrc fetch, HTML listings + HEADs, dest and state wiped before each run
    fetch-json-fresh   the same from the JSON index
    fetch-html-noop    a re-fetch with nothing changed (also fetch-json-noop)
    rclone-fresh       rclone copy --http-url URL :http: DEST, dest wiped before each run
    rclone-noop        the same with everything already there
    pixsrc-help, pixsrc-list, rclone-listremotes   start-up costs

and prints medians and the pixsrc/rclone ratios. Exit status: 0 unless the setup failed (no
pixsrc executable, server did not start: 1) or, with --strict, a fetch produced wrong files (3).
Missing rclone or hyperfine only skip what needs them.

    /tmp/venv/bin/python benchmarks/bench_fetch.py [--files 2000] [--runs 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


class SetupError(Exception):
    pass


@dataclass
class Timing:
    name: str
    median: float
    mean: float
    stddev: float
    minimum: float
    runs: int


# -- the gallery ----------------------------------------------------------------------------------


def build_gallery(www: Path, files: int, size: int, folders: int) -> dict[str, str]:
    """www/gallery/fNN/img-NNNNN.jpg and www/gallery.json; returns rel path -> sha256."""
    gallery = www / "gallery"
    digests: dict[str, str] = {}
    entries = []
    for n in range(files):
        rel = f"f{n % folders:02d}/img-{n:05d}.jpg"
        data = os.urandom(size)
        target = gallery / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        digests[rel] = digest
        mtime = target.stat().st_mtime
        entries.append({"path": rel, "url": f"gallery/{rel}", "size": size, "sha256": digest,
                        "modified": datetime.fromtimestamp(mtime, UTC).isoformat().replace("+00:00", "Z")})
    (www / "gallery.json").write_text(json.dumps({"assets": entries}))
    return digests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class Server:
    """rclone serve http (a subprocess) or an in-process ThreadingHTTPServer."""

    def __init__(self, www: Path, kind: str, env: dict[str, str]) -> None:
        self.kind = kind
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._proc: subprocess.Popen[bytes] | None = None
        self._httpd: http.server.ThreadingHTTPServer | None = None
        if kind == "rclone":
            self._proc = subprocess.Popen(
                ["rclone", "serve", "http", str(www), "--addr", f"127.0.0.1:{self.port}",
                 "--read-only", "-q"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        else:
            handler = functools.partial(_Handler, directory=str(www))
            self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
            self._httpd.daemon_threads = True
            threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise SetupError(f"rclone serve http exited with {self._proc.returncode}: {err.strip()}")
            try:
                with urllib.request.urlopen(self.url + "gallery.json", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise SetupError(f"the {self.kind} server did not answer on {self.url} within 15 s")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


# -- timing -----------------------------------------------------------------------------------------


def hyperfine(name: str, command: str, *, prepare: str | None, runs: int, warmup: int, env: dict[str, str],
              work: Path, no_shell: bool = False) -> Timing | None:
    out = work / f"hyperfine-{name}.json"
    args = ["hyperfine", "--style", "basic", "--runs", str(runs), "--warmup", str(warmup),
            "--export-json", str(out), "-n", name]
    if prepare:
        args += ["--prepare", prepare]
    if no_shell:
        args.append("-N")  # start-up commands take tens of ms: do not add a shell's start-up to them
    result = subprocess.run([*args, command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    if result.returncode != 0:
        print(f"  {name}: hyperfine failed ({result.returncode}): {result.stderr.strip()[-500:]}",
              file=sys.stderr)
        return None
    data = json.loads(out.read_text())["results"][0]
    return Timing(name, data["median"], data["mean"], data["stddev"] or 0.0, data["min"], len(data["times"]))


def loop(name: str, command: str, *, prepare: str | None, runs: int, warmup: int, env: dict[str, str],
         work: Path, no_shell: bool = False) -> Timing | None:
    times = []
    for n in range(warmup + runs):
        if prepare:
            subprocess.run(prepare, shell=True, env=env, check=True)
        start = time.perf_counter()
        result = subprocess.run(shlex.split(command) if no_shell else command, shell=not no_shell, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            print(f"  {name}: exit {result.returncode}: {result.stderr.decode(errors='replace')[-500:]}",
                  file=sys.stderr)
            return None
        if n >= warmup:
            times.append(elapsed)
    return Timing(name, statistics.median(times), statistics.fmean(times),
                  statistics.stdev(times) if len(times) > 1 else 0.0, min(times), len(times))


# -- checks -----------------------------------------------------------------------------------------


def verify(dest: Path, digests: dict[str, str]) -> str | None:
    """None when dest holds exactly the gallery's files with the right bytes, else what is wrong."""
    found = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    if found != sorted(digests):
        extra = sorted(set(found) - set(digests))[:3]
        missing = sorted(set(digests) - set(found))[:3]
        return f"{len(found)} files, expected {len(digests)} (missing {missing}, extra {extra})"
    for rel, digest in digests.items():
        if hashlib.sha256((dest / rel).read_bytes()).hexdigest() != digest:
            return f"{rel}: wrong bytes"
    return None


def outcome(result: subprocess.CompletedProcess[str], dest: Path, digests: dict[str, str]) -> str | None:
    if result.returncode != 0:
        return f"exit {result.returncode}: {result.stderr.strip()[-300:]}"
    return verify(dest, digests)


def pixsrc_command(explicit: str | None) -> str:
    if explicit:
        return explicit
    beside = Path(sys.executable).with_name("pixsrc")
    if beside.exists():
        return str(beside)
    found = shutil.which("pixsrc")
    if not found:
        raise SetupError("no pixsrc executable (install the package, or pass --pixsrc PATH)")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--size", type=int, default=50_000, help="bytes per file")
    parser.add_argument("--folders", type=int, default=20)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per fetch benchmark")
    parser.add_argument("--startup-runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=8, help="pixsrc --jobs and rclone --transfers")
    parser.add_argument("--server", choices=["auto", "rclone", "python"], default="auto")
    parser.add_argument("--no-hyperfine", action="store_true", help="time with the built-in loop")
    parser.add_argument("--pixsrc", help="the pixsrc executable (default: beside this Python, then PATH)")
    parser.add_argument("--json", dest="json_out", help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--strict", action="store_true", help="exit 3 when a fetch gives wrong files")
    args = parser.parse_args(argv)

    have_rclone = shutil.which("rclone") is not None
    use_hyperfine = shutil.which("hyperfine") is not None and not args.no_hyperfine
    server_kind = args.server if args.server != "auto" else ("rclone" if have_rclone else "python")
    if server_kind == "rclone" and not have_rclone:
        print("error: --server rclone, but rclone is not installed", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="pixsrc-bench-"))
    server: Server | None = None
    try:
        pixsrc = pixsrc_command(args.pixsrc)
        env = {**os.environ, "PIXSRC_CONFIG": str(work / "config" / "sources.toml"),
               "PIXSRC_STATE_DIR": str(work / "state"), "RCLONE_CONFIG": str(work / "rclone.conf"),
               "NO_COLOR": "1"}
        (work / "rclone.conf").write_text("")
        started = time.monotonic()
        digests = build_gallery(work / "www", args.files, args.size, args.folders)
        print(f"gallery: {args.files} files x {args.size} B in {args.folders} folders "
              f"({time.monotonic() - started:.1f} s) in {work}")
        server = Server(work / "www", server_kind, env)
        gallery_url, index_url = server.url + "gallery/", server.url + "gallery.json"
        timer_name = "hyperfine" if use_hyperfine else "a loop"
        print(f"server: {server_kind} at {server.url}; timing with {timer_name}")

        px = shlex.quote(pixsrc)
        for sid, url, index in (("html", gallery_url, "html"), ("json", index_url, "json")):
            result = subprocess.run([pixsrc, "add", "remote-gallery", "--id", sid, "--name", sid, "--set",
                                     f"url={url}", "--set", f"index={index}", "--no-input"],
                                    env=env, capture_output=True, text=True)
            if result.returncode != 0:
                raise SetupError(f"pixsrc add failed: {result.stderr.strip()}")

        # one checked run of each, before any timing
        problems = []
        for sid in ("html", "json"):
            dest = work / f"check-{sid}"
            result = subprocess.run([pixsrc, "fetch", sid, "--dest", str(dest), "-q", "-j", str(args.jobs)],
                                    env=env, capture_output=True, text=True)
            if why := outcome(result, dest, digests):
                problems.append(f"pixsrc fetch ({sid}): {why}")
        if have_rclone:
            dest = work / "check-rclone"
            result = subprocess.run(["rclone", "copy", "--http-url", gallery_url, ":http:", str(dest), "-q"],
                                    env=env, capture_output=True, text=True)
            if why := outcome(result, dest, digests):
                problems.append(f"rclone copy: {why}")
        for problem in problems:
            print(f"VERIFY FAILED: {problem}", file=sys.stderr)

        timer = hyperfine if use_hyperfine else loop
        state, q = work / "state", shlex.quote
        timings: dict[str, Timing] = {}

        def bench(name: str, command: str, prepare: str | None = None, runs: int = args.runs,
                  no_shell: bool = False) -> None:
            print(f"  {name} ...", end="", flush=True)
            timing = timer(name, command, prepare=prepare, runs=runs, warmup=args.warmup, env=env, work=work,
                           no_shell=no_shell)
            print(f" median {timing.median:.3f} s" if timing else " failed")
            if timing:
                timings[name] = timing

        for sid in ("html", "json"):
            dest = work / f"dest-{sid}"
            fetch = f"{px} fetch {sid} --dest {q(str(dest))} -q -j {args.jobs}"
            bench(f"fetch-{sid}-fresh", fetch, prepare=f"rm -rf {q(str(dest))} {q(str(state))}")
            subprocess.run(fetch, shell=True, env=env, capture_output=True)  # make sure it is complete
            bench(f"fetch-{sid}-noop", fetch)
        if have_rclone:
            dest = work / "dest-rclone"
            copy = (f"rclone copy --http-url {q(gallery_url)} :http: {q(str(dest))} -q "
                    f"--transfers {args.jobs} --checkers {args.jobs}")
            bench("rclone-fresh", copy, prepare=f"rm -rf {q(str(dest))}")
            bench("rclone-noop", copy)
        bench("pixsrc-help", f"{px} --help", runs=args.startup_runs, no_shell=True)
        bench("pixsrc-list", f"{px} list", runs=args.startup_runs, no_shell=True)
        if have_rclone:
            bench("rclone-listremotes", "rclone listremotes", runs=args.startup_runs, no_shell=True)

        print()
        print(f"{'benchmark':22} {'median':>9} {'mean ± sd':>18} {'min':>9} {'runs':>5}")
        for t in timings.values():
            print(f"{t.name:22} {t.median:8.3f}s {t.mean:8.3f}s ± {t.stddev:5.3f}s {t.minimum:8.3f}s "
                  f"{t.runs:5}")
        ratios = {}
        for mine, theirs in (("fetch-html-fresh", "rclone-fresh"), ("fetch-json-fresh", "rclone-fresh"),
                             ("fetch-html-noop", "rclone-noop"), ("fetch-json-noop", "rclone-noop"),
                             ("pixsrc-help", "rclone-listremotes"), ("pixsrc-list", "rclone-listremotes")):
            if mine in timings and theirs in timings:
                ratios[f"{mine}/{theirs}"] = timings[mine].median / timings[theirs].median
        if ratios:
            print("\nratios of medians (pixsrc / rclone; below 1 means pixsrc is faster):")
            for key, value in ratios.items():
                print(f"  {key:40} {value:5.2f}")
        if args.json_out:
            Path(args.json_out).write_text(json.dumps({
                "files": args.files, "size": args.size, "folders": args.folders, "jobs": args.jobs,
                "server": server_kind, "timer": "hyperfine" if use_hyperfine else "loop",
                "verify_problems": problems, "timings": {k: v.__dict__ for k, v in timings.items()},
                "ratios": ratios}, indent=2))
        return 3 if problems and args.strict else 0
    except SetupError as exc:
        print(f"setup error: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
