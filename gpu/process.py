"""One child process in its own process group, writing straight to a log file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

# Runs before the real program (by exec, same pid): a server started in the background inherits SIGINT ignored,
# exec keeps that, and the trainer would then never see our stop request.
_RESET_SIGINT = (
    "import os, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
    "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})\n"
    "try:\n"
    "    os.execvp(sys.argv[1], sys.argv[1:])\n"
    "except OSError as exc:\n"
    "    sys.stderr.write(f'cannot start {sys.argv[1]}: {exc.strerror}\\n')\n"
    "    sys.exit(127)\n"
)


def _sigint_inherited_off() -> bool:
    """Whether a child started from this thread would begin with SIGINT ignored or blocked."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN or signal.SIGINT in blocked


_SIGNAL_HINTS = {
    signal.SIGKILL: "usually the kernel's out-of-memory killer",
    signal.SIGTERM: "asked to terminate",
    signal.SIGSEGV: "a crash in native code",
    signal.SIGABRT: "aborted, often a failed assertion in native code",
}


# Never passed to a child: AITK_JOB_ID would make ai-toolkit read and write its UI's database; the bucket's
# keys are lorapod's own (it uploads the outputs), and a trainer has no use for them.
DROPPED_ENV = ("AITK_JOB_ID", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY")


def gpu_env(base: Mapping[str, str], gpu: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    """A GPU child's environment: base minus AITK_JOB_ID, unbuffered output, the chosen GPU, then extra."""
    env = {key: value for key, value in base.items() if key not in DROPPED_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # so the index means what nvidia-smi shows
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    env.update(extra or {})
    return env


def describe_signal(returncode: int) -> str:
    """Describe a Popen returncode in words: 'killed by signal SIGKILL (...)' or 'exited with status N'."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        sig = signal.Signals(-returncode)
    except ValueError:
        return f"killed by signal {-returncode}"
    hint = _SIGNAL_HINTS.get(sig)
    return f"killed by signal {sig.name}" + (f" ({hint})" if hint else "")


class ManagedProcess:
    """A child started in a new session (its own process group) with stdout and stderr appended to one file.

    The child writes to the file itself, so it never blocks on a pipe we fail to drain. It is a plain Popen,
    not an asyncio subprocess: asyncio kills a still-running child when its transport is closed or collected,
    and a trainer must outlive a server restart. Methods are meant to be called from the event loop's thread.
    """

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self._kill_timer: asyncio.TimerHandle | None = None
        self._kill_deadline: float | None = None

    @classmethod
    def start(
        cls, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_path: Path, default_sigint: bool = True
    ) -> ManagedProcess:
        """Start argv in cwd with env, stdin from /dev/null, stdout and stderr appended to log_path.

        With default_sigint, when this server runs with SIGINT ignored or blocked (which exec would pass on),
        a small exec shim on this interpreter first restores it, so interrupt() still works. Raises OSError if
        the program cannot start.
        """
        if default_sigint and _sigint_inherited_off():
            argv = [sys.executable, "-I", "-S", "-c", _RESET_SIGINT, *argv]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            popen = subprocess.Popen(
                list(argv),
                cwd=str(cwd),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                start_new_session=True,
            )
        finally:
            os.close(log_fd)  # the child holds its own copy
        return cls(popen)

    @property
    def pid(self) -> int:
        """The child's pid, which is also its process group id."""
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """None while running; the exit status, or minus the signal that killed it."""
        return self._popen.poll()

    async def wait(self) -> int:
        """Wait for the child to end, then kill whatever is left of its group (orphaned workers).

        Cancelling this leaves the child running.
        """
        if self._popen.poll() is None:
            await self._exited()
        self._cancel_kill_timer()
        self.kill_group()
        return int(self._popen.returncode)

    async def _exited(self) -> None:
        """Sleep until the child exits: a pidfd on the loop when the kernel has them, else polling."""
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(self._popen.pid)
        except (AttributeError, OSError):
            pidfd = None
        if pidfd is not None:
            readable = loop.create_future()

            def on_readable() -> None:
                if not readable.done():
                    readable.set_result(None)

            loop.add_reader(pidfd, on_readable)
            try:
                if self._popen.poll() is None:
                    await readable
            finally:
                loop.remove_reader(pidfd)
                os.close(pidfd)
        while self._popen.poll() is None:
            await asyncio.sleep(0.05)

    def interrupt(self) -> None:
        """Send SIGINT to the main process only: ai-toolkit's stop path; its dataloader workers must not get it."""
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._popen.pid, signal.SIGINT)

    def kill_group(self) -> None:
        """SIGKILL every process in the child's group; a no-op once the group is empty."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, signal.SIGKILL)

    def stop(self, grace: float) -> None:
        """Interrupt now and kill the group if still running after grace seconds; returns at once.

        The kill is a timer on the running loop, cancelled when wait() sees the child end. A later call may
        bring the deadline forward but never pushes it back, and SIGINT is sent once (a second one would
        interrupt the trainer's own shutdown).
        """
        if self._popen.poll() is not None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, grace)
        if self._kill_deadline is None:
            self.interrupt()
        elif deadline >= self._kill_deadline:
            return
        self._cancel_kill_timer()
        self._kill_deadline = deadline
        self._kill_timer = loop.call_at(deadline, self._kill_if_running)

    def _kill_if_running(self) -> None:
        """The end of the grace period."""
        self._kill_timer = None
        if self._popen.poll() is None:
            self.kill_group()

    def _cancel_kill_timer(self) -> None:
        """Drop a pending kill: the child has ended."""
        if self._kill_timer is not None:
            self._kill_timer.cancel()
            self._kill_timer = None
