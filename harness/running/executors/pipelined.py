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

**Worker processes** (``processes=N``). Threads share one interpreter: after the crop to the joint
bounding box, scoring works on small arrays whose Python work holds the GIL, and so does a reader's
generation or decoding, so on a 16-core GPU host the thread pools use little more than one core. With
``processes=N`` the read and the score stages run instead in ``N`` worker processes (fresh interpreters,
never forks of this process, which may hold torch, its thread pools or CUDA: the ``forkserver`` start,
whose server is a fresh interpreter that imports the harness once, or ``spawn`` where there is none), and
each also writes its units' parts, so this process's threads only run the adapter and hand work over:

* each worker is given the plan, the task readers made here (pickled; a reader that cannot be is
  rebuilt there from the plan) and the run folder, the same plain data the ``multigpu`` executor sends
  its workers (:mod:`segbench.running.executors.multigpu`), and dies with this process
  (:mod:`segbench.running.executors.lifeline`);
* unit ``i`` (in the run's order) goes to worker ``i mod N``: it reads the case, sends it here and keeps
  it; the model runs here; the protocol runs come back to that worker without what scoring never reads
  (:meth:`segbench.running.session.ProtocolRun.for_scoring`), which scores them against its own copy of
  the case (:class:`segbench.running.runner.UnitScorer`, the rows ``local`` makes), keeps the masks and
  writes the part (one atomic part a unit, as ever). A unit is reported done, in the run's order, once
  its worker says its part is on disk;
* errors become text where they happen (:class:`segbench.running.runner.RecordedError`), so a failed
  row says what ``local``'s says, ``at file:line`` included;
* a worker that dies (killed, out of memory) stops the run with an error naming the unit: every unit
  reported done has its part on disk, and resuming the run does the rest.

The ``in_flight`` cap holds across the workers (at most that many cases read and not yet written, in
all of them together). ``processes=0`` (the default) keeps the thread pools. Measured on the 2-core dev
VM (``docs/performance.md``, 2026-12-02 at idle): processes take the model's process from ~10.5 to ~4.5
CPU-ms a row (what is left there: the case unpickled, the adapter, the prompts, the masks pickled) but
give the same steady rows/s as threads (two cores are two cores), and each run's first interpreter pays
~1.2 s of CPU for the fork server's imports and ~0.6 s before its first row, against 0.2 s with threads;
so threads are the default here, and a many-core host that feeds a GPU should ask for processes.

A separate executor rather than an option of ``local``: ``local`` stays the reference run (nothing else
runs beside a timed model), and the manifest's ``executor`` says which kind of run a result came from.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

from segbench.data.case import Case
from segbench.data.readers import Reader
from segbench.errors import SegbenchError
from segbench.running.executors.lifeline import die_with_driver
from segbench.running.executors.sharding import by_adapter
from segbench.running.executors.worker import Worker
from segbench.running.kept_masks import sampled_cases
from segbench.running.plan import RunPlan, WorkUnit
from segbench.running.runner import RecordedError, RowFacts, Runs, Scoring, UnitScorer, error_text, read_case
from segbench.running.store import RunStore
from segbench.running.unit_result import UnitResult

# How often a blocked stage looks whether another stage failed (seconds)
POLL_S = 0.2

T = TypeVar("T")


def _died(unit: WorkUnit, doing: str) -> SegbenchError:
    return SegbenchError(
        f"executor 'pipelined': the worker process {doing} {unit.adapter}/{unit.task}/{unit.case_id} died "
        "(killed, or out of memory); every unit reported done has its part on disk: run again to resume "
        "the rest"
    )


def _outcome(future: Future[T], unit: WorkUnit, doing: str) -> T:
    """The future's result; a worker process that died is said as such, naming the unit."""
    try:
        return future.result()
    except BrokenProcessPool as error:
        raise _died(unit, doing) from error


class _Writer(threading.Thread):
    """Writes the scored units in the order they were queued, a batch at a time; frees their slots. A
    future that gives None is a unit its worker process wrote: it is only reported done."""

    def __init__(
        self,
        store: RunStore,
        done: Callable[[WorkUnit], None],
        batch: int,
        slots: threading.Semaphore,
    ):
        super().__init__(name="segbench-write", daemon=True)
        self.store, self.done, self.batch, self.slots = store, done, batch, slots
        self.queue: queue.Queue[tuple[WorkUnit, Future[UnitResult | None]] | None] = queue.Queue()
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
                    self._write(work)
            except BaseException as error:  # the model's thread raises it; what is queued is dropped
                self.error = error
            finally:
                for _ in work:
                    self.slots.release()

    def _write(self, work: list[tuple[WorkUnit, Future[UnitResult | None]]]) -> None:
        """Write the batch up to its first unit that failed (the units before it are finished work)."""
        results: list[tuple[WorkUnit, UnitResult | None]] = []
        failure: BaseException | None = None
        for unit, future in work:
            try:
                results.append((unit, _outcome(future, unit, "scoring")))
            except BaseException as error:
                failure = error
                break
        self.store.write_units([(unit.unit_id, result) for unit, result in results if result is not None])
        for unit, _ in results:
            self.done(unit)
        if failure is not None:
            raise failure

    def check(self) -> None:
        if self.error is not None:
            raise self.error


class PipelinedExecutor:
    """Options (``--executor-option KEY=VALUE``): ``readers`` and ``scorers`` (threads of each pool),
    ``processes`` (worker processes that read, score and write instead; 0: the thread pools),
    ``in_flight`` (units read but not yet written, at most), ``batch`` (units a write takes at most),
    and ``threads`` (torch threads, as ``--threads``)."""

    def __init__(
        self,
        readers: int = 2,
        scorers: int = 2,
        in_flight: int = 16,
        batch: int = 16,
        threads: int = 0,
        processes: int = 0,
    ):
        for name, value in (("readers", readers), ("scorers", scorers), ("in_flight", in_flight), ("batch", batch)):
            if not isinstance(value, int) or value < 1:
                raise SegbenchError(f"executor 'pipelined': {name} must be a whole number >= 1, got {value!r}")
        if not isinstance(processes, int) or processes < 0:
            raise SegbenchError(f"executor 'pipelined': processes must be a whole number >= 0, got {processes!r}")
        self.readers, self.scorers, self.in_flight, self.batch, self.threads = (
            readers,
            scorers,
            in_flight,
            batch,
            threads,
        )
        self.processes = processes

    def run(
        self, plan: RunPlan, units: list[WorkUnit], store: RunStore, done: Callable[[WorkUnit], None]
    ) -> dict[str, Any]:
        ordered = by_adapter(plan, units)
        slots = threading.Semaphore(self.in_flight)
        writer = _Writer(store, done, self.batch, slots)
        worker = Worker(plan, self.threads or None)
        stages = _Processes(plan, ordered, store, self.processes) if self.processes else _Threads(plan, self)
        writer.start()
        try:
            reads: deque[tuple[WorkUnit, Future[Case | Exception]]] = deque()
            ahead = iter(ordered)
            left = len(ordered)
            while left:
                # read ahead while slots are free; wait for one only when there is nothing to run
                while len(reads) < left and self._take(slots, writer, block=not reads):
                    unit = next(ahead)
                    reads.append((unit, stages.read(unit)))
                unit, read = reads.popleft()
                worker.load(unit.adapter)  # while the case is read, on a unit that starts an adapter
                finish = worker.infer(unit, _outcome(read, unit, "reading"))
                writer.queue.put((unit, stages.finish(unit, finish)))
                left -= 1
                writer.check()
        finally:
            stages.stop_reading()
            writer.queue.put(None)  # what was scored is still written: a part is on disk or it is not
            writer.join()
            stages.close()
            worker.close(last=True)
        writer.check()
        settings: dict[str, Any] = (
            {"processes": self.processes} if self.processes else {"readers": self.readers, "scorers": self.scorers}
        )
        settings |= {"in_flight": self.in_flight, "batch": self.batch}
        return {**settings, "threads": self.threads} if self.threads else settings

    @staticmethod
    def _take(slots: threading.Semaphore, writer: _Writer, block: bool) -> bool:
        """A free slot (waiting for one when ``block``), unless the writer failed."""
        if not block:
            return slots.acquire(blocking=False)
        while not slots.acquire(timeout=POLL_S):
            writer.check()
        return True


class _Threads:
    """Reading and scoring on thread pools of this process; the writer thread writes the parts."""

    def __init__(self, plan: RunPlan, options: PipelinedExecutor):
        self.plan = plan
        self.readers: dict[str, Reader] = {}
        self.lock = threading.Lock()
        self.read_pool = ThreadPoolExecutor(options.readers, thread_name_prefix="segbench-read")
        self.score_pool = ThreadPoolExecutor(options.scorers, thread_name_prefix="segbench-score")

    def _read(self, unit: WorkUnit) -> Case | Exception:
        with self.lock:  # one reader per task for the whole run, made by whichever thread comes first
            if unit.task not in self.readers:
                self.readers[unit.task] = self.plan.reader(unit.task)
            reader = self.readers[unit.task]
        return read_case(reader, unit)

    def read(self, unit: WorkUnit) -> Future[Case | Exception]:
        return self.read_pool.submit(self._read, unit)

    def finish(self, unit: WorkUnit, finish: Callable[[], UnitResult]) -> Future[UnitResult | None]:
        return self.score_pool.submit(finish)

    def stop_reading(self) -> None:
        self.read_pool.shutdown(cancel_futures=True)

    def close(self) -> None:
        self.score_pool.shutdown()


class _Processes:
    """Reading, scoring and writing in worker processes, unit ``i`` on worker ``i mod N`` (module docstring)."""

    def __init__(self, plan: RunPlan, ordered: list[WorkUnit], store: RunStore, processes: int):
        readers = {task: _pickled(plan.reader(task)) for task in dict.fromkeys(unit.task for unit in ordered)}
        context = _context()
        start = (plan, readers, store.dir, os.getpid())
        self.pools = [
            ProcessPoolExecutor(1, mp_context=context, initializer=_start_process, initargs=start)
            for _ in range(min(processes, len(ordered)) or 1)
        ]
        self.placed: dict[str, ProcessPoolExecutor] = {}
        self.count = 0

    def read(self, unit: WorkUnit) -> Future[Case | Exception]:
        pool = self.pools[self.count % len(self.pools)]
        self.count += 1
        self.placed[unit.unit_id] = pool
        return pool.submit(_read, unit)

    def finish(self, unit: WorkUnit, finish: Callable[[], UnitResult]) -> Future[UnitResult | None]:
        pool = self.placed.pop(unit.unit_id)
        if isinstance(finish, Scoring):
            return pool.submit(_score, unit, finish.scorer.facts, finish.runs_for_scoring(), finish.measured)
        return pool.submit(_write, unit, finish())  # no scoring: a failed unit's rows, made here

    def stop_reading(self) -> None:
        """Nothing to cancel: a case read ahead and not run is dropped with its worker at :meth:`close`."""

    def close(self) -> None:
        for pool in self.pools:
            pool.shutdown(wait=True, cancel_futures=True)


def _context() -> Any:
    """Where the fork server is available (Linux), ``forkserver`` with this module preloaded: the server is
    a fresh interpreter (never a fork of this process, which may hold torch and its threads) that imports
    the harness once, and each worker is a fork of it, ready in milliseconds rather than the 1-2 s of an
    interpreter importing numpy, scipy and polars; it stays for the next run of this process. Else
    ``spawn``. (``SEGBENCH_PIPELINED_START`` chooses one, for measuring.)"""
    method = os.environ.get("SEGBENCH_PIPELINED_START") or (
        "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    )
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload([__name__])
    return context


def _pickled(reader: Reader) -> bytes | None:
    """The reader as sent to the workers, or None where it cannot be pickled (they rebuild it from the plan)."""
    try:
        return pickle.dumps(reader)
    except Exception:
        return None


class _WorkerProcess:
    """What a worker process holds: the plan, the task readers, the cases it read and has not yet scored,
    one scorer per (host, GPU, device, threads) of the rows, and the run folder it writes parts to."""

    def __init__(self, plan: RunPlan, readers: dict[str, bytes | None], run_dir: Path):
        self.plan = plan
        self.readers: dict[str, Reader] = {
            task: pickle.loads(blob) if blob is not None else plan.reader(task) for task, blob in readers.items()
        }
        self.store = RunStore(run_dir)
        self.sampled = sampled_cases(plan.units, plan.save_masks, plan.seed)
        self.scorers: dict[RowFacts, UnitScorer] = {}
        self.cases: dict[str, Case] = {}

    def scorer(self, facts: RowFacts) -> UnitScorer:
        if facts not in self.scorers:
            self.scorers[facts] = UnitScorer(self.plan, facts, self.sampled)
        return self.scorers[facts]


_process: _WorkerProcess | None = None  # in a worker process: its state


def _start_process(plan: RunPlan, readers: dict[str, bytes | None], run_dir: Path, driver_pid: int) -> None:
    global _process
    die_with_driver(driver_pid)
    _process = _WorkerProcess(plan, readers, run_dir)


def _state() -> _WorkerProcess:
    if _process is None:
        raise RuntimeError("runs in a worker process started by the pipelined executor")
    return _process


def _read(unit: WorkUnit) -> Case | Exception:
    state = _state()
    case = read_case(state.readers[unit.task], unit)
    if isinstance(case, Exception):  # its text, made here, where its traceback is
        return RecordedError(error_text(case))
    state.cases[unit.unit_id] = case
    return case


def _score(unit: WorkUnit, facts: RowFacts, runs: Runs, measured: dict[str, Any]) -> None:
    state = _state()
    case = state.cases.pop(unit.unit_id)
    state.store.write_units([(unit.unit_id, state.scorer(facts).finish(unit, case, runs, measured))])


def _write(unit: WorkUnit, result: UnitResult) -> None:
    state = _state()
    state.cases.pop(unit.unit_id, None)
    state.store.write_units([(unit.unit_id, result)])
