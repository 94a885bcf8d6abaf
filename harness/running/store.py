"""The results store: ``<out>/<run-id>/run.json`` (the manifest) and ``cases.parquet`` (the rows).

Writes are append-only and atomic: each finished work unit is written to ``parts/<unit>.<status>.parquet``
through a temporary file and a rename, so a killed run loses at most the unit in flight, and a rerun
into the same directory skips every unit that has a part. ``cases.parquet`` is the parts merged and
sorted, rewritten (atomically) at the end of every run.

The store heals what a kill, a power loss or a careless hand leaves behind:

- every file is fsynced before its rename and its directory after it, so a rename that survived a power
  loss names a complete file; files follow the umask (``mkstemp`` would make them 0600);
- every part is validated when read (a readable parquet with the schema's key columns whose rows carry
  the unit id and status its name says); a bad one is named in a warning, moved to ``parts/quarantine/``
  and its unit counts as not done, so it runs again. Files in ``parts/`` that are not
  ``<unit>.<status>.parquet`` are ignored with a warning. A unit with both an ok and a failed part (a
  retry killed between its rename and the removal of the failed part) keeps the ok one;
- a session holds ``<run>/.lock`` (created exclusively, holding pid, host, start time and command): a
  second session into the same run refuses and names the holder; the lock of a dead process on this
  host is taken over with a notice. The lock guards sessions, not parts: Slurm array tasks write parts
  into the run directory while their driver holds it. Only a session holding the lock moves or removes
  files (quarantine, the ``.tmp`` leftovers of killed writers); a reader (``segbench report``) only skips;
- ``run.json`` records the sha256 of ``cases.parquet``; a ``cases.parquet`` that does not match is
  reported and the rows are read from the parts again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from segbench.errors import SegbenchError
from segbench.protocols.base import NOT_TAKEN
from segbench.running.kept_masks import MaskSample
from segbench.running.manifest import RunManifest, upgrade
from segbench.running.prediction_writers import FOLDER as PREDICTIONS_FOLDER
from segbench.running.rows import case_schema
from segbench.running.unit_result import UnitResult
from segbench.weights.checkpoints import sha256_file

if TYPE_CHECKING:
    from segbench.running.plan import WorkUnit

SORT_KEY = ["adapter", "task", "case_id", "label", "prompt", "step"]
STATUSES = ("ok", "failed")
SCORED = ("ok", NOT_TAKEN)  # row statuses of a unit that ran to its end (a step not taken is no failure)
# the columns without which a part's rows cannot be placed (older parts may lack columns added since)
KEY_COLUMNS = ("unit_id", "adapter", "task", "case_id", "label", "prompt", "step", "status")
PART_NAME = re.compile(r"^(?P<unit>[^.]+)\.(?P<status>ok|failed)\.parquet$")
TMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")  # what _atomic_write_bytes' mkstemp names
LOCK_NAME = ".lock"


def _read_umask() -> int:
    """The process's umask, without changing it where /proc says it (``os.umask`` can only read by setting,
    which races with other threads creating files)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_read_umask()


def _fsync(path: Path) -> None:
    """Flush a file's (or a directory's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_bytes(path: Path, write: Any, sync_folder: bool = True) -> None:
    """Write ``path`` through a temporary file in its folder: written, fsynced, given the umask's mode,
    renamed over ``path``, and the folder fsynced, so ``path`` is either the old file or the whole new one.
    ``sync_folder=False`` leaves the folder's fsync to the caller (one for a batch of files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    try:
        write(Path(tmp))
        _fsync(Path(tmp))
        os.replace(tmp, path)
        if sync_folder:
            _fsync(path.parent)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _pid_start(pid: int) -> str | None:
    """The start time (in clock ticks since boot) of process ``pid``, to tell it from a later one given the
    same pid; None where /proc cannot say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


class RunLocked(SegbenchError):
    """Another live session holds the run directory."""


def _write_with(path: Path, write: Any) -> None:
    with path.open("wb") as handle:
        write(handle)


def rows_frame(rows: Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    """The rows in the schema: Dice, NSD and HD95 always, and a column for each other metric a row
    carries (a task's ``[evaluation] metrics``; segbench.running.rows)."""
    rows = list(rows)
    schema = case_schema(carried={key for row in rows for key in row})
    return pl.DataFrame([{k: row.get(k) for k in schema} for row in rows], schema=schema)


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows written by an older segbench, with the columns added since then (as nulls), in schema order."""
    schema = case_schema()
    missing = [pl.lit(None, dtype=dtype).alias(name) for name, dtype in schema.items() if name not in frame.columns]
    if not missing:
        return frame
    extra = [name for name in frame.columns if name not in schema]
    return frame.with_columns(missing).select([*schema, *extra])


class RunStore:
    """One run directory."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)
        self.parts = self.dir / "parts"
        self.manifest_path = self.dir / "run.json"
        self.cases_path = self.dir / "cases.parquet"
        self.samples = self.dir / "samples"
        self.predictions = self.dir / PREDICTIONS_FOLDER  # segbench run --write-predictions
        self.lock_path = self.dir / LOCK_NAME
        self.healing = False  # True while this process holds the lock: only then are files moved or removed
        self._valid: dict[Path, tuple[tuple[int, int, int], pl.DataFrame]] = {}  # part -> (stamp, its rows)
        self._warned: set[str] = set()
        self._lock: dict[str, Any] = {}
        self.cases_sha256: str | None = None

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            _warn(message)

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def read_manifest(self) -> dict[str, Any]:
        """``run.json`` as JSON data, upgraded to the current format version (:mod:`segbench.running.manifest`)."""
        try:
            data = json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            raise SegbenchError(f"{self.dir}: not a segbench run (no run.json)") from None
        except ValueError as error:
            raise SegbenchError(f"{self.manifest_path}: not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise SegbenchError(f"{self.manifest_path}: not a JSON object")
        try:
            return upgrade(data)
        except SegbenchError as error:
            raise SegbenchError(f"{self.manifest_path}: {error}") from None

    def manifest(self) -> RunManifest:
        """``run.json`` as typed records, upgraded to the current format version."""
        return RunManifest.from_dict(self.read_manifest())

    def write_manifest(self, manifest: RunManifest) -> None:
        text = json.dumps(manifest.to_dict(), indent=2, sort_keys=False, default=str)
        _atomic_write_bytes(self.manifest_path, lambda tmp: tmp.write_text(text))

    # --- the session lock ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, command: Sequence[str] | None = None) -> Iterator[RunStore]:
        """Hold ``<run>/.lock`` for a session (see the module docstring); released on the way out, whatever
        the way. Raises :class:`RunLocked` naming the holder when a live process holds it."""
        self.acquire(command)
        try:
            yield self
        finally:
            self.release()

    def acquire(self, command: Sequence[str] | None = None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        mine = {
            "pid": os.getpid(),
            "pid_start": _pid_start(os.getpid()),
            "host": socket.gethostname(),
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": list(command) if command is not None else None,
        }
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f"{LOCK_NAME}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(mine, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, FILE_MODE)
            for _ in range(3):
                try:  # link: created exclusively (as O_EXCL), and never seen without its contents
                    self._create_lock(Path(tmp), mine)
                except FileExistsError:
                    holder = self._lock_holder()
                    if holder is None or not self._stale(holder):
                        raise RunLocked(self._held_message(holder)) from None
                    if holder:
                        print(
                            f"notice: taking over the lock of {self.dir.name} left by a session that is no longer "
                            f"running (pid {holder.get('pid')}, started {holder.get('started')})",
                            file=sys.stderr,
                        )
                    self.lock_path.unlink(missing_ok=True)
                    continue
                _fsync(self.dir)
                self._lock = mine
                self.healing = True
                return
            raise RunLocked(self._held_message(self._lock_holder()))
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _create_lock(self, tmp: Path, mine: Mapping[str, Any]) -> None:
        """``.lock`` from ``tmp`` by a hard link; where the file system has none, by ``O_EXCL``."""
        try:
            os.link(tmp, self.lock_path)
        except FileExistsError:
            raise
        except OSError:
            fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            with os.fdopen(fd, "w") as handle:
                json.dump(mine, handle)
                handle.flush()
                os.fsync(handle.fileno())

    def release(self) -> None:
        """Remove the lock if it is still this process's."""
        if not self.healing:
            return
        self.healing = False
        holder = self._lock_holder()
        if holder is not None and holder.get("pid") == os.getpid() and holder.get("started") == self._lock["started"]:
            self.lock_path.unlink(missing_ok=True)

    def _lock_holder(self) -> dict[str, Any] | None:
        try:
            holder = json.loads(self.lock_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) else None

    @staticmethod
    def _stale(holder: Mapping[str, Any]) -> bool:
        """A lock of this host whose process is gone (or whose pid now names a later process)."""
        if not holder:  # removed meanwhile
            return True
        pid = holder.get("pid")
        if holder.get("host") != socket.gethostname() or not isinstance(pid, int):
            return False
        if not _pid_alive(pid):
            return True
        started = holder.get("pid_start")
        return started is not None and _pid_start(pid) not in (None, started)

    def _held_message(self, holder: Mapping[str, Any] | None) -> str:
        if holder is None:
            return (
                f"{self.lock_path} exists but cannot be read; if no segbench session is running into "
                f"{self.dir}, remove it"
            )
        command = " ".join(holder.get("command") or []) or "?"
        return (
            f"{self.dir} is in use by another segbench session: pid {holder.get('pid')} on "
            f"{holder.get('host')}, started {holder.get('started')} ({command}); wait for it to finish, or "
            f"choose another --out or --run-id (if that session is gone, remove {self.lock_path})"
        )

    def sweep_temporaries(self) -> int:
        """Remove the ``.tmp`` files killed writers left (only while holding the lock); how many."""
        if not self.healing:
            return 0
        swept = 0
        for folder in (self.dir, self.parts, self.samples):
            for path in folder.glob(".*.tmp") if folder.is_dir() else ():
                if TMP_NAME.match(path.name) and path.is_file():
                    path.unlink(missing_ok=True)
                    swept += 1
        if swept:
            print(f"notice: removed {swept} temporary file(s) left by an interrupted session", file=sys.stderr)
        return swept

    # --- parts ----------------------------------------------------------------------------------------

    def _part_files(self) -> list[tuple[str, str, Path]]:
        """(unit id, status, path) of every part file; other files are warned about and ignored."""
        out = []
        for path in sorted(self.parts.iterdir()) if self.parts.is_dir() else ():
            match = PART_NAME.match(path.name)
            if match and path.is_file():
                out.append((match["unit"], match["status"], path))
            elif not path.is_dir() and not TMP_NAME.match(path.name):
                self._warn_once(f"{self.parts.name}/{path.name}: not a part (<unit>.<status>.parquet); ignored")
        return out

    def _check_part(self, unit_id: str, status: str, path: Path) -> pl.DataFrame | str:
        """The part's rows, or why it is not a valid part."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return "gone"
        stamp = (stat.st_mtime_ns, stat.st_ino, stat.st_size)
        cached = self._valid.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        if stat.st_size == 0:
            return "empty file"
        try:
            frame = pl.read_parquet(path)
        except Exception as error:  # noqa: BLE001 - polars raises many kinds for a damaged file
            return f"unreadable ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        missing = [name for name in KEY_COLUMNS if name not in frame.columns]
        if missing:
            return f"lacks the column(s) {', '.join(missing)}"
        ids = set(frame["unit_id"].unique().to_list())
        if ids - {unit_id}:
            return f"holds rows of unit(s) {', '.join(sorted(map(str, ids - {unit_id})))}"
        row_status = "failed" if (~frame["status"].is_in(SCORED)).any() else "ok"
        if frame.height and row_status != status:
            return f"named {status} but its rows say {row_status}"
        frame = conform(frame)
        self._valid[path] = (stamp, frame)
        return frame

    def _quarantine(self, path: Path, reason: str) -> None:
        if not self.healing:
            self._warn_once(f"{self.parts.name}/{path.name} is not a valid part ({reason}); left out")
            return
        folder = self.parts / "quarantine"
        folder.mkdir(exist_ok=True)
        target = folder / path.name
        serial = 1
        while target.exists():
            target = folder / f"{path.name}.{serial}"
            serial += 1
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, target)
            _fsync(self.parts)
        self._valid.pop(path, None)
        self._warn_once(
            f"{self.parts.name}/{path.name} is not a valid part ({reason}); moved to "
            f"{self.parts.name}/quarantine/{target.name}, its unit will run again"
        )

    def valid_parts(self) -> dict[str, tuple[str, Path, pl.DataFrame]]:
        """unit id → (status, path, rows) of every valid part; bad parts are quarantined (or, without the
        lock, skipped), and of a unit with an ok and a failed part the ok one is kept."""
        out: dict[str, tuple[str, Path, pl.DataFrame]] = {}
        for unit_id, status, path in self._part_files():
            checked = self._check_part(unit_id, status, path)
            if isinstance(checked, str):
                if checked != "gone":
                    self._quarantine(path, checked)
                continue
            if unit_id in out:  # both statuses: a retry killed before it removed the failed part
                failed = path if status == "failed" else out[unit_id][1]
                if status == "ok":
                    out[unit_id] = (status, path, checked)
                if self.healing:
                    failed.unlink(missing_ok=True)
                continue
            out[unit_id] = (status, path, checked)
        return out

    def done_units(self) -> dict[str, str]:
        """unit id → status of every unit with a valid part."""
        return {unit_id: status for unit_id, (status, _, _) in self.valid_parts().items()}

    def pending(self, units: Iterable[WorkUnit], retry_failed: bool = False) -> list[WorkUnit]:
        """The units of ``units``, in their order, that still have to run: those without a valid part and,
        with ``retry_failed``, those whose part records a failure."""
        done = self.done_units()
        return [u for u in units if u.unit_id not in done or (retry_failed and done[u.unit_id] == "failed")]

    def part_stamps(self) -> dict[str, tuple[int, int]]:
        """unit id → (mtime, inode) of its part; a unit written again since a snapshot has another stamp
        (parts are replaced by a rename, never rewritten in place)."""
        stamps: dict[str, tuple[int, int]] = {}
        for unit_id, _, path in self._part_files():
            try:
                stat = path.stat()
            except FileNotFoundError:  # a failed part being replaced by its retry
                continue
            stamps[unit_id] = max(stamps.get(unit_id, (0, 0)), (stat.st_mtime_ns, stat.st_ino))
        return stamps

    def part_adapters(self, unit_ids: Iterable[str]) -> dict[str, str]:
        """unit id → the adapter its part's rows belong to."""
        parts = self.valid_parts()
        out: dict[str, str] = {}
        for unit_id in unit_ids:
            if unit_id in parts:
                adapters = parts[unit_id][2]["adapter"]
                out[unit_id] = adapters[0] if len(adapters) else "?"
        return out

    def supersede(self, unit_ids: Iterable[str]) -> None:
        """Move the parts (and kept masks) of units a plan no longer holds to ``parts/superseded/`` (and
        ``samples/superseded/``): nothing consolidates them, and nothing is deleted."""
        for unit_id in unit_ids:
            moves = [(path, self.parts / "superseded") for path in self.parts.glob(f"{unit_id}.*.parquet")]
            moves += [(path, self.samples / "superseded") for path in self.samples.glob(f"{unit_id}.npz")]
            for path, folder in moves:
                folder.mkdir(parents=True, exist_ok=True)
                os.replace(path, folder / path.name)

    def clear(self) -> None:
        """Remove everything a run wrote here (manifest, parts, kept masks, predictions written out, rows):
        ``segbench run --fresh``."""
        for folder in (self.parts, self.samples, self.predictions):
            shutil.rmtree(folder, ignore_errors=True)
        self.cases_path.unlink(missing_ok=True)
        self.manifest_path.unlink(missing_ok=True)

    def write_unit(self, unit_id: str, result: UnitResult) -> None:
        """Write one unit's rows atomically; a unit that succeeds on retry replaces its failed part.
        The unit's kept masks and predictions to write out, if it has them, are written first."""
        self.write_units([(unit_id, result)])

    def write_units(self, results: Sequence[tuple[str, UnitResult]]) -> None:
        """Write several units' parts, each exactly as :meth:`write_unit` alone would (its own atomic
        part, fsynced before its rename), with one fsync of each folder for the whole batch after the
        renames: a unit is written (its rename durable) when this returns, not before."""
        folders: set[Path] = set()
        for unit_id, result in results:
            if result.kept_mask is not None:
                self.write_sample(unit_id, result.kept_mask, sync_folder=False)
                folders.add(self.samples)
            if result.predictions is not None:  # before the part: a failed write marks the rows failed
                result.predictions.write(self.predictions, result.rows)
            status = "failed" if any(row["status"] not in SCORED for row in result.rows) else "ok"
            frame = rows_frame(result.rows)
            _atomic_write_bytes(self.parts / f"{unit_id}.{status}.parquet", frame.write_parquet, sync_folder=False)
            folders.add(self.parts)
            for other in STATUSES:
                if other != status:
                    (self.parts / f"{unit_id}.{other}.parquet").unlink(missing_ok=True)
        for folder in sorted(folders):
            _fsync(folder)

    def write_sample(self, unit_id: str, sample: MaskSample, sync_folder: bool = True) -> None:
        """``samples/<unit_id>.npz`` and, once per case, ``samples/case-<key>.npz`` (see kept_masks)."""
        case_path = self.samples / sample.case_file
        if not case_path.is_file():
            _atomic_write_bytes(case_path, lambda tmp: _write_with(tmp, sample.write_case), sync_folder)
        _atomic_write_bytes(
            self.samples / f"{unit_id}.npz", lambda tmp: _write_with(tmp, sample.write_predictions), sync_folder
        )

    def _read_parts(self) -> pl.DataFrame:
        frames = [frame for _, _, frame in self.valid_parts().values()]
        if not frames:
            return rows_frame([])
        # diagonal: tasks that chose other metrics carry other metric columns (null where a part has none)
        return pl.concat(frames, how="diagonal").sort(SORT_KEY)

    def consolidate(self) -> pl.DataFrame:
        """Merge the valid parts into ``cases.parquet`` (atomically) and return the rows; its sha256 is then
        :attr:`cases_sha256`, for the manifest."""
        frame = self._read_parts()
        _atomic_write_bytes(self.cases_path, frame.write_parquet)
        self.cases_sha256 = sha256_file(self.cases_path)
        return frame

    def read_cases(self) -> pl.DataFrame:
        """All rows of the run: ``cases.parquet``, or the parts of a run that was interrupted (or whose
        ``cases.parquet`` does not match the sha256 in ``run.json``: said, and consolidated again while
        holding the lock)."""
        if not self.cases_path.is_file():
            return self._read_parts()
        stamps = [path.stat().st_mtime_ns for _, _, path in self._part_files() if path.exists()]
        if self.cases_path.stat().st_mtime_ns < max(stamps, default=0):
            return self._read_parts()
        expected = self.manifest().cases_sha256 if self.exists() else None
        actual = sha256_file(self.cases_path)
        if expected is None or actual == expected:
            return conform(pl.read_parquet(self.cases_path))
        if not stamps:
            raise SegbenchError(
                f"{self.cases_path}: its sha256 {actual[:12]}… is not the {expected[:12]}… run.json "
                "records, and there are no parts to rebuild it from"
            )
        _warn(
            f"{self.cases_path.name}: its sha256 {actual[:12]}… is not the {expected[:12]}… run.json records; "
            f"the rows are read from {self.parts.name}/ again"
        )
        if not self.healing:
            return self._read_parts()
        frame = self.consolidate()
        manifest = self.manifest()
        manifest.cases_sha256 = self.cases_sha256
        self.write_manifest(manifest)
        return frame
