"""Runs the starter CLI in this process, as a test sees it: exit code, stdout, stderr, and
any exception that would have been a traceback."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

from payouts.cli import main


@dataclass(frozen=True)
class CliRun:
    code: int | None
    stdout: str
    stderr: str
    crash: BaseException | None  # what would be a traceback on stderr

    def describe(self) -> str:
        return f"exit {self.code}, crash {self.crash!r}, stderr {self.stderr!r}"


def run_cli(argv: list[str]) -> CliRun:
    """``payouts.cli.main(argv)`` in this process. It runs its own event loop: call it from
    a thread without one (``asyncio.to_thread``, or hypothesis' worker thread)."""
    out, err = io.StringIO(), io.StringIO()
    code: int | None = None
    crash: BaseException | None = None
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        except Exception as exc:
            crash = exc
    return CliRun(code, out.getvalue(), err.getvalue(), crash)
