"""``pipelined``: the local executor's units in this process, with the harness's own work beside the model.

The ``local`` executor does everything between two model calls on the model's thread: read and decode
the next case, run the model, score every row, keep masks, write and fsync the part. On a GPU the model
then waits for the harness (issue 19: ~20 ms of one core a unit against well under a millisecond of
encoder). Here each unit goes through four stages, each on its own threads:

1. read: cases are read and decoded ahead on a thread pool (``readers`` threads), in the run's order;
2. model: this thread takes them in order and runs each unit's session and protocol steps
   (:meth:`segbench.running.runner.UnitRunner.infer`), loading adapters one at a time as ``local`` does;
3. score: the rows (every metric, areas, prompts) and the kept masks are made on a pool (``scorers``
   threads); numpy's and scipy's kernels release the GIL for much of that;
4. write: one writer thread writes the parts in the run's order, up to ``batch`` units at a time through
   :meth:`segbench.running.store.RunStore.write_units`: every unit keeps its own atomic part (fsynced
   before its rename), and a batch shares one fsync of the folder. A unit counts as done (``done`` is
   called) only once its part's rename is on disk.

At most ``in_flight`` units are anywhere between their read and their write, which caps the memory the
read-ahead holds (the cases, and the masks waiting to be scored) and what a killed run can lose: a part is
written or it is not, as with ``local``. Rows are the ``local`` executor's, value for value (the same
runner makes them; ``tests/test_pipelined.py``), and the stage timings are still taken per case around
the adapter's calls. What differs is what else runs meanwhile: on a CPU the pools share the cores (and
the GIL) with the model, so a CPU model's latencies are not the reference run's. Use ``local`` to time a
model on a CPU, ``pipelined`` to feed a GPU (or to run the fast baselines).

A separate executor rather than an option of ``local``: ``local`` stays the reference run (nothing else
runs beside a timed model), and the manifest's ``executor`` says which kind of run a result came from.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from segbench.data.case import Case
from segbench.data.readers import Reader
from segbench.errors import SegbenchError
from segbench.running.executors.sharding import by_adapter
from segbench.running.executors.worker import Worker
from segbench.running.plan import RunPlan, WorkUnit
from segbench.running.runner import read_case
from segbench.running.store import RunStore
from segbench.running.unit_result import UnitResult

# How often a blocked stage looks whether another stage failed (seconds)
POLL_S = 0.2


class _Writer(threading.Thread):
    """Writes the scored units in the order they were queued, a batch at a time; frees their slots."""

    def __init__(
        self,
        store: RunStore,
        done: Callable[[WorkUnit], None],
        batch: int,
        slots: threading.Semaphore,
    ):
        super().__init__(name="segbench-write", daemon=True)
        self.store, self.done, self.batch, self.slots = store, done, batch, slots
        self.queue: queue.Queue[tuple[WorkUnit, Future[UnitResult]] | None] = queue.Queue()
        self.error: BaseException | None = None

    def run(self) -> None:
        finished = False
        while not finished:
            items = [self.queue.get()]
            while len(items) < self.batch and items[-1] is not None:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            finished = items[-1] is None
            work = [item for item in items if item is not None]
            try:
                if self.error is None:
                    results = [(unit, future.result()) for unit, future in work]
                    self.store.write_units([(unit.unit_id, result) for unit, result in results])
                    for unit, _ in results:
                        self.done(unit)
            except BaseException as error:  # the model's thread raises it; what is queued is dropped
                self.error = error
            finally:
                for _ in work:
                    self.slots.release()

    def check(self) -> None:
        if self.error is not None:
            raise self.error


class PipelinedExecutor:
    """Options (``--executor-option KEY=VALUE``): ``readers`` and ``scorers`` (threads of each pool),
    ``in_flight`` (units read but not yet written, at most), ``batch`` (units a write takes at most),
    and ``threads`` (torch threads, as ``--threads``)."""

    def __init__(self, readers: int = 2, scorers: int = 2, in_flight: int = 16, batch: int = 16, threads: int = 0):
        for name, value in (("readers", readers), ("scorers", scorers), ("in_flight", in_flight), ("batch", batch)):
            if not isinstance(value, int) or value < 1:
                raise SegbenchError(f"executor 'pipelined': {name} must be a whole number >= 1, got {value!r}")
        self.readers, self.scorers, self.in_flight, self.batch, self.threads = (
            readers,
            scorers,
            in_flight,
            batch,
            threads,
        )

    def run(
        self, plan: RunPlan, units: list[WorkUnit], store: RunStore, done: Callable[[WorkUnit], None]
    ) -> dict[str, Any]:
        ordered = by_adapter(plan, units)
        readers: dict[str, Reader] = {}
        lock = threading.Lock()

        def read(unit: WorkUnit) -> Case | Exception:
            with lock:  # one reader per task for the whole run, made by whichever thread comes first
                if unit.task not in readers:
                    readers[unit.task] = plan.reader(unit.task)
                reader = readers[unit.task]
            return read_case(reader, unit)

        slots = threading.Semaphore(self.in_flight)
        writer = _Writer(store, done, self.batch, slots)
        worker = Worker(plan, self.threads or None)
        read_pool = ThreadPoolExecutor(self.readers, thread_name_prefix="segbench-read")
        score_pool = ThreadPoolExecutor(self.scorers, thread_name_prefix="segbench-score")
        writer.start()
        try:
            reads: deque[tuple[WorkUnit, Future[Case | Exception]]] = deque()
            ahead = iter(ordered)
            left = len(ordered)
            while left:
                # read ahead while slots are free; wait for one only when there is nothing to run
                while len(reads) < left and self._take(slots, writer, block=not reads):
                    unit = next(ahead)
                    reads.append((unit, read_pool.submit(read, unit)))
                unit, case = reads.popleft()
                finish = worker.infer(unit, case.result())
                writer.queue.put((unit, score_pool.submit(finish)))
                left -= 1
                writer.check()
        finally:
            read_pool.shutdown(cancel_futures=True)
            writer.queue.put(None)  # what was scored is still written: a part is on disk or it is not
            writer.join()
            score_pool.shutdown()
            worker.close(last=True)
        writer.check()
        settings = {"readers": self.readers, "scorers": self.scorers, "in_flight": self.in_flight, "batch": self.batch}
        return {**settings, "threads": self.threads} if self.threads else settings

    @staticmethod
    def _take(slots: threading.Semaphore, writer: _Writer, block: bool) -> bool:
        """A free slot (waiting for one when ``block``), unless the writer failed."""
        if not block:
            return slots.acquire(blocking=False)
        while not slots.acquire(timeout=POLL_S):
            writer.check()
        return True
