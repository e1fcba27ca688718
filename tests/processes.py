"""Helpers for tests that run real `coda-sync` processes (emulator, daemons) on loopback."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from tests.harness import EXAMPLE_CONFIG, REPO


class Proc:
    """A child process whose stdout and stderr lines are collected by reader threads."""

    def __init__(self, args: list[str], env: Mapping[str, str] | None = None) -> None:
        self.args = args
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.popen = subprocess.Popen(
            args,
            cwd=REPO,
            env=dict(env) if env is not None else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for stream in (self.popen.stdout, self.popen.stderr):
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    @classmethod
    def coda_sync(cls, *args: str, env: Mapping[str, str] | None = None) -> Proc:
        """`python -m daemon ARGS...` from the checkout."""
        return cls([sys.executable, "-m", "daemon", *args], env)

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def wait_line(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline, regex = time.monotonic() + timeout, re.compile(pattern)
        while time.monotonic() < deadline:
            with self._lock:
                for line in self.lines:
                    if found := regex.search(line):
                        return found
            if self.popen.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"no line matching {pattern!r} from {self.args}:\n{self.output()}")

    def output(self, last: int = 60) -> str:
        with self._lock:
            return "\n".join(self.lines[-last:])

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=10)

    stop = kill


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or predicate}")
        time.sleep(0.05)


def emulator_args(
    *, seed_rows: int, token: str, read_lag: str, apply_delay: str = "0.3", seed: int | None = None
) -> list[str]:
    """Arguments of `coda-sync emulator` on an ephemeral loopback port."""
    args = ["emulator", "--host", "127.0.0.1", "--port", "0", "--seed-rows", str(seed_rows)]
    args += ["--token", token, "--apply-delay", apply_delay, "--read-lag", read_lag]
    return args if seed is None else [*args, "--seed", str(seed)]


EMULATOR_URL = r"emulator listening on (http://\S+)"
"""The line the emulator prints once it listens (group 1: the API base URL)."""


def example_config(edits: Mapping[str, str]) -> str:
    """config/coda-sync.toml with literal replacements (each must still be found)."""
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    for old, new in edits.items():
        assert old in text, f"the example config changed: {old!r} not found"
        text = text.replace(old, new, 1)
    return text
