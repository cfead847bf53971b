"""The per-source fetch lock (exit 6, --wait) and Ctrl-C in the middle of a fetch (exit 130, resume)."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import pixsrc_exe, run, run_subprocess
from support.slow_gallery import SlowGallery

from pixsrc.locks import FileLock

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "examples" / "sample-assets"
SAMPLE_IMAGES = sorted(["ocean.png", "sunrise.png", "logos/pixsrc-mark.png", "logos/pixsrc-mark-inverse.png"])


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def poll(condition, timeout: float = 30.0, what: str = "condition") -> None:  # noqa: ANN001
    """Check ``condition`` until it holds (no fixed sleep stands in for synchronisation)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def samples(config_file: Path) -> str:
    result = run("add", "local-fs", "--name", "Samples", "--set", f"path={SAMPLES}")
    assert result.exit_code == 0, result.stderr
    return "samples"


def lock_of(state_path: Path, source_id: str) -> FileLock:
    return FileLock(state_path / "locks" / f"{source_id}.lock")


# -- the fetch lock -------------------------------------------------------------------------------


def test_busy_source_exits_6_at_once(samples: str, state_path: Path, tmp_path: Path) -> None:
    lock = lock_of(state_path, samples)
    assert lock.acquire(blocking=False)
    try:
        started = time.monotonic()
        result = run_subprocess("fetch", samples, "--dest", str(tmp_path / "out"), timeout=30)
        elapsed = time.monotonic() - started
    finally:
        lock.release()
    assert result.returncode == 6
    assert "error: samples: another pixsrc is fetching 'samples' right now" in result.stderr
    assert "--wait" in result.stderr
    assert elapsed < 15  # it does not wait: start-up time only
    assert not (tmp_path / "out").exists()
    # released: the same command now works
    again = run_subprocess("fetch", samples, "--dest", str(tmp_path / "out"))
    assert again.returncode == 0, again.stderr
    assert files_under(tmp_path / "out") == SAMPLE_IMAGES


def test_busy_source_in_json_report(samples: str, state_path: Path, tmp_path: Path) -> None:
    with lock_of(state_path, samples):
        result = run_subprocess("fetch", samples, "--dest", str(tmp_path / "out"), "--json", timeout=30)
    assert result.returncode == 6
    assert json.loads(result.stdout)["sources"][0]["status"] == "busy"


def test_the_lock_is_per_source(samples: str, state_path: Path, tmp_path: Path, config_file: Path) -> None:
    assert run("add", "local-fs", "--name", "Other", "--set", f"path={SAMPLES}/logos").exit_code == 0
    with lock_of(state_path, samples):
        other = run_subprocess("fetch", "other", "--dest", str(tmp_path / "other"), timeout=30)
        both = run_subprocess("fetch", "--all", "--dest", str(tmp_path / "all"), timeout=30)
    assert other.returncode == 0, other.stderr
    assert files_under(tmp_path / "other") == ["pixsrc-mark-inverse.png", "pixsrc-mark.png"]
    assert both.returncode == 6  # the busy one decides the exit code; the other was still fetched
    assert files_under(tmp_path / "all") == ["other/pixsrc-mark-inverse.png", "other/pixsrc-mark.png"]


def _blocked_on(pid: int, path: Path) -> bool:
    """True when /proc/locks shows ``pid`` waiting ("->") for a lock on ``path``'s inode."""
    inode = path.stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        # "1: -> FLOCK  ADVISORY  WRITE <pid> <major>:<minor>:<inode> 0 EOF"
        fields = line.split()
        if (
            len(fields) >= 7
            and fields[1] == "->"
            and fields[5] == str(pid)
            and fields[6].rsplit(":", 1)[-1] == str(inode)
        ):
            return True
    return False


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks to observe the waiter")
def test_wait_queues_behind_the_holder(samples: str, state_path: Path, tmp_path: Path) -> None:
    lock = lock_of(state_path, samples)
    assert lock.acquire(blocking=False)
    dest = tmp_path / "out"
    proc = subprocess.Popen(
        [*pixsrc_exe(), "fetch", samples, "--wait", "--dest", str(dest)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # deterministic: the kernel lists the subprocess as a waiter on our lock file
        poll(lambda: proc.poll() is not None or _blocked_on(proc.pid, lock.path), what="the fetch to block")
        assert proc.poll() is None, proc.communicate()
        assert not dest.exists()  # nothing happens while it waits
    finally:
        lock.release()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "samples: ok: 4 listed, 4 new" in err
    assert files_under(dest) == SAMPLE_IMAGES


# -- Ctrl-C ---------------------------------------------------------------------------------------


@pytest.fixture
def slow_gallery() -> Iterator[SlowGallery]:
    files = {"a-first.png": b"\x89PNG first" * 100}
    for n in range(1, 7):
        files[f"slow-{n}.png"] = hashlib.sha256(str(n).encode()).digest() * (1024 * 1024 // 32)  # 1 MiB each
    server = SlowGallery(files)
    yield server
    server.close()


def assert_final_files_intact(dest: Path, files: dict[str, bytes]) -> list[str]:
    """Every file under a final name is byte-identical to its source; returns those names."""
    finals = []
    for path in dest.rglob("*"):
        if path.is_file() and not path.name.endswith(".part"):
            rel = path.relative_to(dest).as_posix()
            assert rel in files, rel
            assert path.read_bytes() == files[rel], f"{rel} is not the source's content"
            finals.append(rel)
    return sorted(finals)


def signal_after_first_file(dest: Path, signum: int) -> tuple[int, str]:
    """Run `pixsrc fetch slow` as a subprocess, send ``signum`` once the first file has landed,
    and return (exit code, stderr)."""
    proc = subprocess.Popen(
        [*pixsrc_exe(), "fetch", "slow", "--dest", str(dest), "--jobs", "2"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        poll(lambda: proc.poll() is not None or (dest / "a-first.png").exists(), what="the first file to land")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err


def test_ctrl_c_mid_fetch_then_resume(slow_gallery: SlowGallery, config_file: Path, tmp_path: Path) -> None:
    added = run(
        "add", "remote-gallery", "--name", "Slow", "--set", f"url={slow_gallery.url}", "--set", "index=json"
    )
    assert added.exit_code == 0, added.stderr
    dest = tmp_path / "out"
    returncode, err = signal_after_first_file(dest, signal.SIGINT)
    assert returncode == 130, err
    assert "interrupted" in err
    assert "Traceback" not in err
    finals = assert_final_files_intact(dest, slow_gallery.files)
    assert "a-first.png" in finals
    assert len(finals) < len(slow_gallery.files)  # it really stopped early
    parts = {p.name: p.stat().st_size for p in dest.rglob("*.part")}

    slow_gallery.slow = False
    again = run_subprocess("fetch", "slow", "--dest", str(dest), "--json", timeout=120)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)["sources"][0]
    assert report["status"] == "ok"
    assert report["listed"] == len(slow_gallery.files)
    assert report["downloaded"] + report["unchanged"] == len(slow_gallery.files)
    assert report["unchanged"] >= 1  # what landed before Ctrl-C was recorded, not fetched again
    assert assert_final_files_intact(dest, slow_gallery.files) == sorted(slow_gallery.files)
    assert list(dest.rglob("*.part")) == []
    if any(size > 0 for size in parts.values()):
        assert slow_gallery.ranges, "a partial download was left but the re-run did not resume it"


def test_sigterm_is_treated_like_ctrl_c(slow_gallery: SlowGallery, config_file: Path, tmp_path: Path) -> None:
    assert run("add", "remote-gallery", "--name", "Slow", "--set", f"url={slow_gallery.url}").exit_code == 0
    dest = tmp_path / "out"
    returncode, err = signal_after_first_file(dest, signal.SIGTERM)
    assert returncode == 130, err
    assert "a-first.png" in assert_final_files_intact(dest, slow_gallery.files)
    slow_gallery.slow = False
    again = run_subprocess("fetch", "slow", "--dest", str(dest), timeout=120)
    assert again.returncode == 0, again.stderr
    assert assert_final_files_intact(dest, slow_gallery.files) == sorted(slow_gallery.files)
