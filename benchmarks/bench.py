#!/usr/bin/env python3
"""pixsrc's speed and memory side by side with rclone and curl, on 127.0.0.1, against issue 7's targets.

    .venv/bin/python benchmarks/bench.py                  # the whole suite, about 5 minutes on 2 cores
    .venv/bin/python benchmarks/bench.py nginx startup    # only these benchmarks
    .venv/bin/python benchmarks/bench.py --quick          # fewer runs, same data (about 3 minutes)
    .venv/bin/python benchmarks/bench.py --list           # the benchmarks and what each measures

Benchmarks (each in its own temp dir with its own PIXSRC_CONFIG, PIXSRC_STATE_DIR, RCLONE_CONFIG):

    nginx    2,000 x 50 KB in 20 folders from a private nginx (autoindex, ETag): fresh and no-op
             `pixsrc fetch` (remote-gallery, html index) vs `rclone copy` (:http:), 8 at a time
    rtt      600 x 50 KB through delay_proxy.py (20 ms each way = 40 ms round trip) in front of nginx
    slow     600 x 50 KB from slow_server.py, which takes 40 ms to answer every request
    localfs  50,000 x 1 KB in 50 folders, local-fs source vs `rclone copy` local to local; peak RSS
    bigfile  one 512 MiB file from nginx: pixsrc vs curl (and rclone); peak RSS
    startup  `pixsrc list` vs `rclone listremotes`; what `pixsrc list` / `--help` import

Needs: the pixsrc executable (beside this Python, or --pixsrc), nginx (Debian nginx-light) for
nginx/rtt/bigfile, rclone and curl for their comparisons, hyperfine for timing (else a plain loop).
A missing tool skips what needs it, with a message. Exit 0; 1 on a setup error; with --strict, 3
when a target is missed or a fetch produced wrong files.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchlib import (
    Nginx,
    Run,
    ScriptServer,
    SetupError,
    Skip,
    Timer,
    Timing,
    build_big_file,
    build_tree,
    count_listings,
    file_system,
    install_sigterm_handler,
    make_work_dir,
    measured_run,
    rm_command,
    run,
    tool,
    tool_version,
    verify,
)

MB = 1_000_000
MiB = 1 << 20


# Timed runs per command: (full, --quick), and untimed warm-up runs before them (full mode only).
# Every fetch is also run twice, checked, before its timings (fresh, then no-op): those warm the
# caches, so only the short benchmarks spend more warm-up runs. The full suite takes about 5 minutes.
RUNS: dict[str, tuple[int, int]] = {"nginx": (10, 3), "rtt": (3, 1), "slow": (3, 1), "localfs": (3, 1),
                                    "bigfile": (5, 2), "startup": (30, 10)}
WARMUP: dict[str, int] = {"nginx": 1, "rtt": 0, "slow": 0, "localfs": 0, "bigfile": 1, "startup": 3}


@dataclass
class Line:
    """One line of the result table: pixsrc's number, what it is compared with, and the target."""

    bench: str
    case: str
    value: float | None
    unit: str
    ref_name: str = ""
    ref: float | None = None
    ratio: float | None = None
    target: str = ""  # e.g. "<= 1.00x"; "" for a line that only informs
    ok: bool | None = None
    note: str = ""


@dataclass
class Results:
    lines: list[Line] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "MB":
        return f"{value / MB:.1f} MB"
    if unit == "MB/s":
        return f"{value / MB:.0f} MB/s"
    return f"{value:g}{unit}"


@dataclass
class Bench:
    """What one benchmark works with: its temp dir and environment, the tools, the timer, the results."""

    name: str
    work: Path
    env: dict[str, str]
    timer: Timer
    pixsrc: str
    rclone: str | None
    curl: str | None
    jobs: int
    runs: int
    warmup: int
    results: Results
    profile_dir: Path | None

    # -- pixsrc set-up ------------------------------------------------------------------------------

    def add_source(self, type_: str, sid: str, **fields: str) -> None:
        argv = [self.pixsrc, "add", type_, "--id", sid, "--name", sid, "--no-input"]
        for key, value in fields.items():
            argv += ["--set", f"{key}={value}"]
        returncode, output = run(argv, self.env)
        if returncode != 0:
            raise SetupError(f"{shlex.join(argv)} failed ({returncode}): {output.strip()[-500:]}")

    # -- measuring ----------------------------------------------------------------------------------

    def check(self, what: str, argv: Sequence[str], dest: Path, digests: dict[str, str],
              counter: Counter | None = None) -> Run | None:
        """One run, measured (wall, peak RSS) and its result verified; None (and a problem) if it failed.

        With a counter, also what the run asked of the server (a note)."""
        if counter:
            counter.start()
        run = measured_run(argv, self.env, self.work / f"check-{slug(what)}.log")
        if counter:
            note = f"{what}: {counter.stop()}"
            print(f"  {note}", flush=True)
            self.results.notes.append(f"{self.name}: {note}")
        if run.returncode != 0:
            self.problem(f"{what}: exit {run.returncode}: {run.stderr.strip()}")
            return None
        if why := verify(dest, digests):
            self.problem(f"{what}: VERIFY FAILED: {why}")
            return None
        print(f"  {what}: checked ({run.seconds:.2f} s, peak RSS {run.max_rss / MB:.0f} MB)", flush=True)
        return run

    def time(self, name: str, argv: Sequence[str], *, prepare: str | None = None, runs: int | None = None,
             warmup: int | None = None, no_shell: bool = False) -> Timing | None:
        runs = self.runs if runs is None else runs
        warmup = self.warmup if warmup is None else warmup
        print(f"  {name}: {runs} run(s) ...", end="", flush=True)
        try:
            timing = self.timer.time(f"{self.name}-{name}", argv, runs=runs, warmup=warmup, prepare=prepare,
                                     no_shell=no_shell)
        except SetupError as exc:
            print(" failed", flush=True)
            self.problem(str(exc))
            return None
        print(f" median {timing.median:.3f} s (min {timing.minimum:.3f}, sd {timing.stddev:.3f})", flush=True)
        return timing

    def profile(self, case: str, argv: Sequence[str], prepare: str | None = None) -> None:
        """With --profile: one more run of a pixsrc command under pyinstrument, the report saved as text."""
        if self.profile_dir is None or Path(argv[0]) != Path(self.pixsrc):
            return
        if not is_python_script(self.pixsrc):
            self.skip(f"--profile: {self.pixsrc} is not a Python script")
            self.profile_dir = None
            return
        python = pixsrc_python(self.pixsrc)
        if run([python, "-c", "import pyinstrument"])[0] != 0:
            self.results.skipped.append(f"{self.name}: --profile needs pyinstrument ({python} -m pip install "
                                        "pyinstrument)")
            return
        if prepare:
            run(prepare, self.env, shell=True)
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        base = self.profile_dir / f"{self.name}-{case}"
        session = base.with_suffix(".pyisession")
        run([python, "-m", "pyinstrument", "--renderer", "pyisession", "--outfile", str(session), *argv], self.env)
        # the call tree, and a flat list of where the samples were (self time), the top of it first
        for out, options in ((base.with_suffix(".txt"), []), (base.with_name(base.name + "-flat.txt"),
                                                             ["-p", "flat=true"])):
            run([python, "-m", "pyinstrument", "--load", str(session), "--renderer", "text", "--no-color",
                 *options, "--outfile", str(out)], self.env)
        out = base.with_suffix(".txt")
        print(f"  profile of {case}: {out}", flush=True)

    # -- the table ------------------------------------------------------------------------------------

    def problem(self, text: str) -> None:
        print(f"  PROBLEM: {text}", file=sys.stderr, flush=True)
        self.results.problems.append(f"{self.name}: {text}")

    def skip(self, text: str) -> None:
        print(f"  skipped: {text}", flush=True)
        self.results.skipped.append(f"{self.name}: {text}")

    def line(self, case: str, value: float | None, unit: str, ref_name: str = "", ref: float | None = None,
             at_most: float | None = None, at_least: float | None = None, note: str = "") -> None:
        """Add a table line: ratio = value / ref; the target is `ratio <= at_most` or `ratio >= at_least`."""
        ratio = None
        if value is not None and ref is not None and value > 0 and ref > 0:
            ratio = value / ref
        target, ok = "", None
        if at_most is not None:
            target = f"<= {at_most:.2f}x"
            ok = ratio <= at_most if ratio is not None else None
        elif at_least is not None:
            target = f">= {at_least:.2f}x"
            ok = ratio >= at_least if ratio is not None else None
        self.results.lines.append(Line(self.name, case, value, unit, ref_name, ref, ratio, target, ok, note))

    def limit(self, case: str, value: float | None, unit: str, limit: float, note: str = "",
              ref_name: str = "", ref: float | None = None) -> None:
        """A line with an absolute target (peak RSS <= limit); `ref` is shown for context only."""
        ok = value <= limit if value is not None else None
        self.results.lines.append(Line(self.name, case, value, unit, ref_name, ref, None,
                                       f"<= {fmt(limit, unit)}", ok, note))


class Counter:
    """What a server was asked between start() and stop(), in words."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> str:
        raise NotImplementedError


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:
        data: bytes = answer.read()
    return data


class SlowServerCounter(Counter):
    """slow_server.py's /__stats__: requests per method, answers per status, connections, concurrency."""

    def __init__(self, url: str) -> None:
        self.url = url

    def start(self) -> None:
        get(self.url + "?reset")

    def stop(self) -> str:
        stats: dict[str, Any] = json.loads(get(self.url))
        methods = ", ".join(f"{k} {v}" for k, v in sorted(stats["requests"].items()))
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(stats["statuses"].items()))
        return (f"{methods} (answers {statuses}); {stats['connections']} connections, "
                f"at most {stats['max_in_flight']} requests at once")


class NginxCounter(Counter):
    """nginx's stub_status: connections accepted and requests served (less this counter's own)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.before = (0, 0)

    def read(self) -> tuple[int, int]:
        numbers = get(self.url).decode().splitlines()[2].split()
        return int(numbers[0]), int(numbers[2])

    def start(self) -> None:
        self.before = self.read()

    def stop(self) -> str:
        after = self.read()
        # the reading itself is one connection and one request
        return f"{after[1] - self.before[1] - 1} requests, {after[0] - self.before[0] - 1} connections"


def load() -> str:
    """Other work on the machine skews every number here: say how busy it was."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def is_python_script(path: str) -> bool:
    """-X importtime and pyinstrument run the entry point as a Python script: is it one?"""
    try:
        with open(path, "rb") as script:
            first = script.readline(200)
    except OSError:
        return False
    return first.startswith(b"#!") and b"python" in first


def pixsrc_python(pixsrc: str) -> str:
    """The interpreter of the pixsrc entry point, for -X importtime and pyinstrument: the `python`
    beside it, else its shebang's, else this one (a shell wrapper, say)."""
    beside = Path(pixsrc).with_name("python")
    if beside.exists():
        return str(beside)
    try:
        first = Path(pixsrc).read_text(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        return sys.executable
    interpreter = first[2:].strip().split(" ")[0] if first.startswith("#!") else ""
    return interpreter if "python" in Path(interpreter).name else sys.executable


# -- the remote-gallery benchmarks (nginx, rtt, slow) ------------------------------------------------


@dataclass
class GalleryTimes:
    px_fresh: Timing | None = None
    px_noop: Timing | None = None
    rc_fresh: Timing | None = None
    rc_noop: Timing | None = None
    px_check: Run | None = None


def gallery_fetches(b: Bench, url: str, digests: dict[str, str], counter: Counter | None = None) -> GalleryTimes:
    """Fresh and no-op `pixsrc fetch` of a remote-gallery (html index) at url, and `rclone copy` of it."""
    out = GalleryTimes()
    b.add_source("remote-gallery", "gallery", url=url, index="html", all_files="true")
    dest, state = b.work / "dest-pixsrc", b.work / "state"
    fetch = [b.pixsrc, "fetch", "gallery", "--dest", str(dest), "-q", "--jobs", str(b.jobs)]
    fresh = rm_command(dest, state)
    out.px_check = b.check("pixsrc fetch, fresh", fetch, dest, digests, counter)
    if out.px_check and b.check("pixsrc fetch, no-op", fetch, dest, digests, counter):
        out.px_fresh = b.time("pixsrc-fresh", fetch, prepare=fresh)
        run(fetch, b.env)  # complete, whatever the last timed run did
        out.px_noop = b.time("pixsrc-noop", fetch)
        b.profile("noop", fetch)
        b.profile("fresh", fetch, prepare=fresh)
    if b.rclone is None:
        b.skip("rclone is not installed (apt-get install rclone): no rclone comparison")
        return out
    rdest = b.work / "dest-rclone"
    jobs = str(b.jobs)
    copy = [b.rclone, "copy", "--http-url", url, ":http:", str(rdest), "-q", "--transfers", jobs, "--checkers", jobs]
    if (b.check("rclone copy, fresh", copy, rdest, digests, counter)
            and b.check("rclone copy, no-op", copy, rdest, digests, counter)):
        out.rc_fresh = b.time("rclone-fresh", copy, prepare=rm_command(rdest))
        run(copy, b.env)
        out.rc_noop = b.time("rclone-noop", copy)
    return out


def need_nginx() -> None:
    if tool("nginx") is None:  # before building the data it would serve
        raise Skip("nginx is not installed (Debian: apt-get install nginx-light)")


def median(t: Timing | None) -> float | None:
    return t.median if t is not None else None


NGINX_FILES, NGINX_SIZE, NGINX_FOLDERS = 2000, 50_000, 20
LATENCY_FILES, LATENCY_SIZE, LATENCY_FOLDERS = 600, 50_000, 6
RTT = 0.040


def bench_nginx(b: Bench) -> None:
    """2,000 x 50 KB in 20 folders from nginx: fresh and no-op, pixsrc <= 1.0x rclone."""
    need_nginx()
    digests = build_tree(b.work / "www" / "gallery", NGINX_FILES, NGINX_SIZE, NGINX_FOLDERS)
    with Nginx(b.work / "nginx", b.work / "www") as nginx:
        t = gallery_fetches(b, nginx.url + "gallery/", digests, NginxCounter(nginx.url + "__status__"))
    b.line("fresh fetch", median(t.px_fresh), "s", "rclone", median(t.rc_fresh), at_most=1.0)
    b.line("no-op re-fetch", median(t.px_noop), "s", "rclone", median(t.rc_noop), at_most=1.0)


def latency_lines(b: Bench, t: GalleryTimes, floor: float, fresh_limit: float) -> None:
    b.line("fresh fetch vs floor", median(t.px_fresh), "s", "floor", floor, at_most=fresh_limit)
    b.line("fresh fetch vs rclone", median(t.px_fresh), "s", "rclone", median(t.rc_fresh),
           at_most=1.0 if b.name == "slow" else None)
    b.line("no-op re-fetch vs rclone", median(t.px_noop), "s", "rclone", median(t.rc_noop), at_most=1.0)
    b.line("no-op re-fetch vs floor", median(t.px_noop), "s", "floor", floor)
    b.line("(rclone fresh vs floor)", median(t.rc_fresh), "s", "floor", floor, note="rclone's own line")


def bench_rtt(b: Bench) -> None:
    """600 x 50 KB behind a 40 ms round trip: fresh <= 1.15x (files + folders) / 8 x RTT, no-op <= rclone."""
    need_nginx()
    root = b.work / "www" / "gallery"
    digests = build_tree(root, LATENCY_FILES, LATENCY_SIZE, LATENCY_FOLDERS)
    floor = (LATENCY_FILES + count_listings(root)) / b.jobs * RTT
    with Nginx(b.work / "nginx", b.work / "www") as nginx, \
            ScriptServer("delay_proxy.py", ["--upstream", f"127.0.0.1:{nginx.port}", "--delay", str(RTT / 2)],
                         "delay_proxy.py", b.work / "proxy.log") as proxy:
        t = gallery_fetches(b, proxy.url + "gallery/", digests, NginxCounter(nginx.url + "__status__"))
    latency_lines(b, t, floor, 1.15)


def bench_slow(b: Bench) -> None:
    """600 x 50 KB from a server taking 40 ms per answer: <= 1.1x (files + folders) / 8 x 40 ms, <= rclone."""
    root = b.work / "www" / "gallery"
    digests = build_tree(root, LATENCY_FILES, LATENCY_SIZE, LATENCY_FOLDERS)
    floor = (LATENCY_FILES + count_listings(root)) / b.jobs * RTT
    with ScriptServer("slow_server.py", ["--root", str(b.work / "www"), "--delay", str(RTT)], "slow_server.py",
                      b.work / "slow.log") as server:
        t = gallery_fetches(b, server.url + "gallery/", digests, SlowServerCounter(server.url + "__stats__"))
    latency_lines(b, t, floor, 1.10)


# -- local-fs ---------------------------------------------------------------------------------------


LOCAL_FILES, LOCAL_SIZE, LOCAL_FOLDERS = 50_000, 1_000, 50


def bench_localfs(b: Bench) -> None:
    """50,000 x 1 KB in 50 folders: fresh and no-op <= 1.0x rclone copy (local), peak RSS <= 100 MB."""
    src = b.work / "src"
    started = time.monotonic()
    digests = build_tree(src, LOCAL_FILES, LOCAL_SIZE, LOCAL_FOLDERS)
    print(f"  built {LOCAL_FILES} files in {time.monotonic() - started:.1f} s", flush=True)
    b.add_source("local-fs", "local", path=str(src), all_files="true")
    dest, state = b.work / "dest-pixsrc", b.work / "state"
    fetch = [b.pixsrc, "fetch", "local", "--dest", str(dest), "-q", "--jobs", str(b.jobs)]
    px_fresh = px_noop = rc_fresh = rc_noop = None
    px_rss_fresh = px_rss_noop = rc_rss_fresh = rc_rss_noop = None
    if checked := b.check("pixsrc fetch, fresh", fetch, dest, digests):
        px_rss_fresh = checked.max_rss
        if checked := b.check("pixsrc fetch, no-op", fetch, dest, digests):
            px_rss_noop = checked.max_rss
            px_fresh = b.time("pixsrc-fresh", fetch, prepare=rm_command(dest, state))
            run(fetch, b.env)
            px_noop = b.time("pixsrc-noop", fetch)
            b.profile("noop", fetch)
            b.profile("fresh", fetch, prepare=rm_command(dest, state))
    if b.rclone is None:
        b.skip("rclone is not installed (apt-get install rclone): no rclone comparison")
    else:
        rdest = b.work / "dest-rclone"
        jobs = str(b.jobs)
        copy = [b.rclone, "copy", str(src), str(rdest), "-q", "--transfers", jobs, "--checkers", jobs]
        if checked := b.check("rclone copy, fresh", copy, rdest, digests):
            rc_rss_fresh = checked.max_rss
            if checked := b.check("rclone copy, no-op", copy, rdest, digests):
                rc_rss_noop = checked.max_rss
                rc_fresh = b.time("rclone-fresh", copy, prepare=rm_command(rdest))
                run(copy, b.env)
                rc_noop = b.time("rclone-noop", copy)
    b.line("fresh fetch", median(px_fresh), "s", "rclone", median(rc_fresh), at_most=1.0)
    b.line("no-op re-fetch", median(px_noop), "s", "rclone", median(rc_noop), at_most=1.0)
    b.limit("peak RSS, fresh", px_rss_fresh, "MB", 100 * MB, ref_name="rclone", ref=rc_rss_fresh)
    b.limit("peak RSS, no-op", px_rss_noop, "MB", 100 * MB, ref_name="rclone", ref=rc_rss_noop)


# -- one big file -----------------------------------------------------------------------------------


BIG_SIZE = 512 * MiB


def bench_bigfile(b: Bench) -> None:
    """One 512 MiB file from nginx: pixsrc's throughput >= 0.95x curl's, peak RSS <= 60 MB."""
    need_nginx()
    started = time.monotonic()
    digests = build_big_file(b.work / "www" / "big" / "big.bin", BIG_SIZE)
    print(f"  built {BIG_SIZE // MiB} MiB in {time.monotonic() - started:.1f} s", flush=True)
    px_t = rc_t = curl_t = None
    px_rss = curl_rss = None
    with Nginx(b.work / "nginx", b.work / "www") as nginx:
        folder = nginx.url + "big/"
        b.add_source("remote-gallery", "big", url=folder, index="html", all_files="true")
        dest, state = b.work / "dest-pixsrc", b.work / "state"
        fetch = [b.pixsrc, "fetch", "big", "--dest", str(dest), "-q", "--jobs", str(b.jobs)]
        fresh = rm_command(dest, state)
        if checked := b.check("pixsrc fetch", fetch, dest, digests):
            px_rss = checked.max_rss
            px_t = b.time("pixsrc", fetch, prepare=fresh)
            b.profile("fresh", fetch, prepare=fresh)
        if b.curl is None:
            b.skip("curl is not installed (apt-get install curl): no curl comparison")
        else:
            cdest = b.work / "dest-curl"
            get = [b.curl, "-sS", "--fail", "--create-dirs", "-o", str(cdest / "big.bin"), folder + "big.bin"]
            if checked := b.check("curl", get, cdest, digests):
                curl_rss = checked.max_rss
                curl_t = b.time("curl", get, prepare=rm_command(cdest))
        if b.rclone is None:
            b.skip("rclone is not installed (apt-get install rclone): no rclone line")
        else:
            rdest = b.work / "dest-rclone"
            copy = [b.rclone, "copy", "--http-url", folder, ":http:", str(rdest), "-q"]
            if b.check("rclone copy", copy, rdest, digests):
                rc_t = b.time("rclone", copy, prepare=rm_command(rdest))

    def rate(t: Timing | None) -> float | None:
        return BIG_SIZE / t.median if t is not None else None

    b.line("throughput vs curl", rate(px_t), "MB/s", "curl", rate(curl_t), at_least=0.95)
    b.line("throughput vs rclone", rate(px_t), "MB/s", "rclone", rate(rc_t))
    b.limit("peak RSS", px_rss, "MB", 60 * MB, ref_name="curl", ref=curl_rss)


# -- start-up ---------------------------------------------------------------------------------------


HEAVY_MODULES = ("httpx", "pycurl")


def heavy_imports(b: Bench, args: Sequence[str]) -> list[str] | None:
    """Which of HEAVY_MODULES `pixsrc ARGS` imports, from `python -X importtime`; None if it failed."""
    if not is_python_script(b.pixsrc):
        b.skip(f"import check: {b.pixsrc} is not a Python script")
        return None
    python = pixsrc_python(b.pixsrc)
    returncode, output = run([python, "-X", "importtime", b.pixsrc, *args], b.env)
    if returncode != 0:
        b.problem(f"pixsrc {' '.join(args)} under -X importtime: exit {returncode}")
        return None
    names = {line.rsplit("|", 1)[-1].strip() for line in output.splitlines() if line.startswith("import time:")}
    return sorted(m for m in HEAVY_MODULES if m in names or any(n.startswith(m + ".") for n in names))


def bench_startup(b: Bench) -> None:
    """`pixsrc list` <= 1.5x `rclone listremotes`; `pixsrc list` and `--help` import neither httpx nor pycurl."""
    for n in range(3):  # a small config like a user's: three sources, three rclone remotes
        (b.work / f"folder{n}").mkdir()
    b.add_source("local-fs", "photos", path=str(b.work / "folder0"))
    b.add_source("local-fs", "inbox", path=str(b.work / "folder1"))
    b.add_source("remote-gallery", "client-assets", url="http://127.0.0.1:9/gallery/")
    Path(b.env["RCLONE_CONFIG"]).write_text("".join(
        f"[{name}]\ntype = local\n\n" for name in ("photos", "inbox", "archive")))
    runs, warmup = b.runs, b.warmup
    px_list = b.time("pixsrc-list", [b.pixsrc, "list"], runs=runs, warmup=warmup, no_shell=True)
    px_help = b.time("pixsrc-help", [b.pixsrc, "--help"], runs=runs, warmup=warmup, no_shell=True)
    rc = None
    if b.rclone is None:
        b.skip("rclone is not installed (apt-get install rclone): no rclone comparison")
    else:
        rc = b.time("rclone-listremotes", [b.rclone, "listremotes"], runs=runs, warmup=warmup, no_shell=True)
    b.line("pixsrc list", median(px_list), "s", "rclone listremotes", median(rc), at_most=1.5)
    b.line("pixsrc --help", median(px_help), "s", "rclone listremotes", median(rc))
    for args in (["list"], ["--help"]):
        heavy = heavy_imports(b, args)
        if heavy is not None:
            b.results.lines.append(Line(b.name, f"pixsrc {args[0]} imports", None, "", target="no httpx/pycurl",
                                        ok=not heavy, note=", ".join(heavy) if heavy else "neither"))


BENCHMARKS: dict[str, Callable[[Bench], None]] = {
    "nginx": bench_nginx,
    "rtt": bench_rtt,
    "slow": bench_slow,
    "localfs": bench_localfs,
    "bigfile": bench_bigfile,
    "startup": bench_startup,
}


# -- the run ----------------------------------------------------------------------------------------


def find_pixsrc(explicit: str | None) -> str:
    if explicit:
        return explicit
    beside = Path(sys.executable).with_name("pixsrc")
    if beside.exists():
        return str(beside)
    found = shutil.which("pixsrc")
    if not found:
        raise SetupError("no pixsrc executable: install the package into this Python's venv, or pass --pixsrc PATH")
    return found


def precompile(pixsrc: str) -> str:
    """Byte-compile the pixsrc being measured, as `pip install` does for a real install.

    An editable install (or PYTHONDONTWRITEBYTECODE, set on some machines) leaves pixsrc's own
    modules uncompiled: every run would pay ~0.1 s of compiling that no user pays."""
    code = ("import compileall, pathlib, pixsrc; "
            "print(compileall.compile_dir(pathlib.Path(pixsrc.__file__).parent, quiet=1))")
    returncode, out = run([pixsrc_python(pixsrc), "-c", code])
    return "byte-compiled" if returncode == 0 and out.strip().endswith("True") else f"not byte-compiled: {out[-200:]}"


def engine(pixsrc: str) -> str:
    returncode, _ = run([pixsrc_python(pixsrc), "-c", "import pixsrc.transfer"])
    return "new (pixsrc.transfer)" if returncode == 0 else "old (no pixsrc.transfer)"


def print_table(results: Results) -> None:
    header = ("benchmark", "case", "pixsrc", "reference", "ratio", "target", "result")
    rows = [header]
    for ln in results.lines:
        ref = f"{ln.ref_name} {fmt(ln.ref, ln.unit)}" if ln.ref_name else ""
        value = fmt(ln.value, ln.unit) if ln.unit else ln.note
        ratio = f"{ln.ratio:.2f}x" if ln.ratio is not None else ""
        result = {True: "ok", False: "MISSED", None: "-" if ln.target else ""}[ln.ok]
        rows.append((ln.bench, ln.case, value, ref, ratio, ln.target, result))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    right = {2, 3, 4}
    for n, row in enumerate(rows):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]))
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(BENCHMARKS)}")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--quick", action="store_true", help="fewer runs (same data)")
    parser.add_argument("--runs", type=int, help="timed runs per command, for every benchmark")
    parser.add_argument("--jobs", type=int, default=8, help="pixsrc --jobs, rclone --transfers/--checkers (8)")
    parser.add_argument("--pixsrc", help="the pixsrc executable (default: beside this Python, then PATH)")
    parser.add_argument("--no-hyperfine", action="store_true", help="time with a plain loop")
    parser.add_argument("--tmp", help="parent folder of the temp dir (default: /dev/shm if a tmpfs with 4 GB free, "
                        "else the system's)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, hyperfine JSON, trees)")
    parser.add_argument("--json", dest="json_out", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--profile", metavar="DIR", help="run each pixsrc case once more under pyinstrument")
    parser.add_argument("--strict", action="store_true", help="exit 3 when a target is missed or a fetch is wrong")
    parser.add_argument("-v", "--verbose", action="store_true", help="show hyperfine's own output")
    args = parser.parse_args(argv)
    if args.list:
        for name, func in BENCHMARKS.items():
            print(f"{name:8} {(func.__doc__ or '').strip()}")
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)} (choose from {', '.join(BENCHMARKS)})")
    names = args.names or list(BENCHMARKS)
    install_sigterm_handler()

    try:
        pixsrc = find_pixsrc(args.pixsrc)
    except SetupError as exc:
        print(f"setup error: {exc}", file=sys.stderr)
        return 1
    use_hyperfine = tool("hyperfine") is not None and not args.no_hyperfine
    if tool("hyperfine") is None:
        print("hyperfine is not installed (apt-get install hyperfine): timing with a plain loop instead")
    rclone, curl = tool("rclone"), tool("curl")
    print(f"pixsrc {tool_version([pixsrc, '--version'])} at {pixsrc}, engine {engine(pixsrc)}, "
          f"{precompile(pixsrc)}")
    print(f"rclone: {tool_version(['rclone', 'version']) if rclone else 'missing'}; "
          f"curl: {tool_version(['curl', '--version']).split(' (')[0] if curl else 'missing'}; "
          f"nginx: {tool_version(['nginx', '-v']) if tool('nginx') else 'missing'}; "
          f"hyperfine: {tool_version(['hyperfine', '--version']) if tool('hyperfine') else 'missing'}")
    print(f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs, jobs {args.jobs}"
          f"{', quick' if args.quick else ''}")

    results = Results()
    top = make_work_dir(args.tmp)
    print(f"work dir: {top} ({file_system(top)}); load average {load()}")
    started = time.monotonic()
    status = 0
    try:
        for name in names:
            func = BENCHMARKS[name]
            runs = args.runs or RUNS[name][1 if args.quick else 0]
            warmup = WARMUP[name] if not args.quick or name == "startup" else 0
            work = top / name
            work.mkdir()
            env = {**os.environ, "PIXSRC_CONFIG": str(work / "config" / "sources.toml"),
                   "PIXSRC_STATE_DIR": str(work / "state"), "RCLONE_CONFIG": str(work / "rclone.conf"),
                   "NO_COLOR": "1"}
            for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
                env.pop(var, None)  # loopback only, and nothing in between but our own proxy
            (work / "rclone.conf").write_text("")
            bench = Bench(name, work, env, Timer(work, env, use_hyperfine, args.verbose), pixsrc, rclone, curl,
                          args.jobs, runs, warmup, results,
                          Path(args.profile).resolve() if args.profile else None)
            print(f"\n[{name}] {(func.__doc__ or '').strip()}", flush=True)
            begun = time.monotonic()
            try:
                func(bench)
            except Skip as exc:
                bench.skip(str(exc))
            except SetupError as exc:
                bench.problem(f"setup: {exc}")
                status = 1
            finally:
                if not args.keep:
                    shutil.rmtree(work, ignore_errors=True)
            print(f"  ({time.monotonic() - begun:.0f} s)", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped, temp dir removed", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"kept {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)

    print(f"\nresults ({time.monotonic() - started:.0f} s, load average now {load()}; medians; "
          "ratio = pixsrc / reference):\n")
    print_table(results)
    for text in results.notes:
        print(f"note: {text}")
    for text in results.skipped:
        print(f"skipped: {text}")
    for text in results.problems:
        print(f"PROBLEM: {text}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"lines": [asdict(ln) for ln in results.lines],
                                                   "problems": results.problems, "skipped": results.skipped,
                                                   "notes": results.notes},
                                                  indent=2) + "\n")
    missed = any(ln.ok is False for ln in results.lines) or bool(results.problems)
    if status == 0 and args.strict and missed:
        status = 3
    return status


if __name__ == "__main__":
    sys.exit(main())
