"""Worker processes that end when their driver dies.

A worker process started by this machine's driver (the ``multigpu`` executor's pool) holds a model and
up to a GPU's worth of memory; when the driver is killed (``kill -9``, out of memory, a closed terminal),
the worker would otherwise sit blocked on its task queue for good: the queue's pipe never reports the
end because the worker itself holds its write end. So each worker calls :func:`die_with_parent` first
thing, and two mechanisms end it:

* on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills the worker the moment the thread that
  started it ends. The pool starts workers from the thread that runs :func:`~segbench.running.executors.dispatch.
  dispatch` (it submits and replaces them), which lives as long as the workers are needed;
* everywhere, a daemon thread that checks every ``interval`` seconds whether the worker's parent is still
  the pid the driver gave at spawn, and ends the process at once (``os._exit``) when it is not. It covers
  systems without ``prctl`` and the short window before ``prctl`` was set (the parent pid is checked once
  right after, too).

SIGKILL, not SIGTERM: a worker has nothing to save (the driver writes every row), and an adapter library
that installs a SIGTERM handler must not keep it alive. Ray actors and submitit jobs are not started by
this: Ray kills the actors of a driver that goes away, and a Slurm (or submitit local) job writes its own
units and is ended by the scheduler, so those executors leave their processes to their own managers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the Linux kernel to send ``sig`` to this process when its parent ends; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int, interval: float) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)  # the driver is gone: nothing here is worth finishing
        time.sleep(interval)


def die_with_parent(parent_pid: int, interval: float = 0.5) -> None:
    """End this process when ``parent_pid`` (the driver that spawned it) is no longer its parent."""
    set_parent_death_signal()
    if os.getppid() != parent_pid:  # the driver died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid, interval), name="segbench-lifeline", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _watch_driver(parent_pid: int, driver_pid: int, interval: float) -> None:
    while True:
        if os.getppid() != parent_pid or not _alive(driver_pid):
            os._exit(1)
        time.sleep(interval)


def die_with_driver(driver_pid: int, interval: float = 0.5) -> None:
    """:func:`die_with_parent` for a worker that may have been forked by a fork server the driver started
    (``multiprocessing``'s ``forkserver``): its parent is then the server, which ends when the driver does
    (its pipe from the driver closes), so the kernel's signal follows the server, and the watch thread
    looks at both the server and the driver."""
    parent = os.getppid()
    if parent == driver_pid:
        die_with_parent(driver_pid, interval)
        return
    set_parent_death_signal()
    if os.getppid() != parent or not _alive(driver_pid):
        os._exit(1)
    args = (parent, driver_pid, interval)
    threading.Thread(target=_watch_driver, args=args, name="segbench-lifeline", daemon=True).start()
