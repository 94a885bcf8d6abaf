"""The ``segbench`` command line.

It answers at once: listing adapters, tasks, suites and weights, and checking every argument of ``run``
(suite, adapters, tasks, limits, device) need no model library. Adapter modules import torch and the
model packages on first use (:mod:`segbench.lazy`), and ``run`` validates its arguments before it imports
the planner and the executors. Every user error is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from segbench import __version__
from segbench.errors import SegbenchError

if TYPE_CHECKING:
    from segbench.reporting.run_summary import RunSummary

DEFAULT_OUT = Path("results")
FAILED_EXIT = 3  # `segbench run`: an adapter failed every case (or, with --fail-on-error, any case failed)


def _data_root(value: str | None) -> Path | None:
    value = value or os.environ.get("SEGBENCH_DATA")
    return Path(value).expanduser().resolve() if value else None


def _checkpoint_overrides(values: Sequence[str]) -> dict[str, Path]:
    overrides = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise SegbenchError(f"--checkpoint expects NAME=PATH, got '{value}'")
        overrides[name] = Path(path)
    return overrides


def _run_id(value: str) -> str:
    """``--run-id``: a name that stays one folder inside ``--out`` (segbench.names)."""
    from segbench.names import name_problem

    problem = name_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (and a pointer to --help) instead of a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive(value: str) -> int:
    """An integer > 0 (``--limit``, ``--workers``, ``--threads``)."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected an integer > 0, got {value!r}")
    return number


def _non_negative(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}")
    return number


DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _device(value: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``, checked by its form alone (whether torch sees a GPU is
    checked when the run is planned)."""
    if not DEVICE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or auto, got {value!r}")
    return value


def _mask_count(value: str) -> int | str:
    """``--save-masks``: a count of cases >= 0, or "all"."""
    if value == "all":
        return value
    try:
        return _non_negative(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'all' or an integer >= 0, got {value!r}") from None


def _names(value: str | None) -> tuple[str, ...] | None:
    return tuple(name.strip() for name in value.split(",") if name.strip()) if value else None


def _suite_config(args: argparse.Namespace) -> Any:
    from segbench.data.suites import load_config

    return load_config(Path(args.config) if args.config else None)


def _unknown(kind: str, name: str, known: Sequence[str]) -> str:
    from segbench.plugins import unknown_name

    return unknown_name(kind, name, known)


_WARNED: set[str] = set()


def _warn_plugins() -> None:
    """Print, once, the warnings about plugins that loaded but register nothing."""
    from segbench import plugins

    for warning in plugins.plugin_warnings():
        if warning not in _WARNED:
            print(f"segbench: warning: {warning}", file=sys.stderr)
            _WARNED.add(warning)


def _adapter_names(names: Sequence[str]) -> None:
    """Every name is an installed adapter, else one error naming the closest and the known ones (and the
    plugins that failed to load, where the adapter may live)."""
    from segbench import plugins

    known = plugins.adapters()
    _warn_plugins()
    for name in names:
        if name not in known:
            plugins.adapter_class(name)  # raises, with did-you-mean and the broken plugins


def _validated_run(args: argparse.Namespace) -> tuple[Any, dict[str, Any], tuple[str, ...] | None]:
    """The suite (with ``--tasks`` applied), the tasks and the ``--adapters`` of ``segbench run``, every
    argument checked before the planner, the executors or any model library is imported."""
    from segbench.data.taskspec import discover_tasks
    from segbench.errors import ConfigError
    from segbench.strict import closest

    config = _suite_config(args)
    if args.suite not in config.suites:
        near = closest(args.suite, config.suites)
        hint = f"; did you mean '{near}'?" if near else ""
        raise ConfigError(config.path, f"no suite '{args.suite}'{hint} (suites: {', '.join(config.suites)})")
    suite = config.suite(args.suite)
    adapters = _names(args.adapters)
    if args.adapters is not None and not adapters:
        raise ConfigError("--adapters", "names no adapter")
    _adapter_names(adapters or suite.adapters)
    _checkpoint_overrides(args.checkpoint)
    tasks = discover_tasks(config.task_dirs)
    chosen = _names(args.tasks)
    if args.tasks is not None and not chosen:
        raise ConfigError("--tasks", "names no task")
    for name in chosen or ():
        if name not in tasks:
            raise ConfigError("--tasks", _unknown("task", name, list(tasks)))
    if chosen:
        suite = dataclasses.replace(suite, tasks=chosen)
    return suite, tasks, adapters


def _executor_options(args: argparse.Namespace) -> dict[str, Any]:
    """The executor options given on the command line, as keyword arguments of its factory."""
    named = {
        "workers": args.workers,
        "threads": args.threads,
        "address": args.address,
        "max_retries": args.max_retries,
        "slurm_partition": args.slurm_partition,
        "timeout_min": args.slurm_time,
    }
    options = {key: value for key, value in named.items() if value is not None}
    for item in args.executor_option:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SegbenchError(f"--executor-option expects KEY=VALUE, got '{item}'")
        try:
            options[key] = json.loads(text)  # numbers, true/false, lists
        except ValueError:
            options[key] = text
    return options


def cmd_run(args: argparse.Namespace) -> int:
    suite, tasks, adapters = _validated_run(args)

    from segbench.reporting.run_summary import summarize
    from segbench.running import executors
    from segbench.running.execute import execute
    from segbench.running.plan import RunOptions, make_plan

    remote = getattr(executors.factory_of(args.executor), "remote", False)  # the driver may have no GPU
    options = RunOptions(
        adapters=adapters,
        limit=args.limit,
        device=args.device,
        weights=args.weights,
        precision=args.precision,
        checkpoint_overrides=_checkpoint_overrides(args.checkpoint),
        data_root=_data_root(args.data_root),
        run_id=args.run_id,
        warmup=not args.no_warmup,
        offload=args.offload,
        save_masks=args.save_masks,
        check_device=not remote,
        write_predictions=args.write_predictions,
    )
    plan = make_plan(suite, tasks, options)
    if not plan.units:
        raise SegbenchError(f"suite '{suite.name}' has nothing to run: " + "; ".join(plan.skipped.values()))
    store = execute(
        plan,
        Path(args.out),
        executor=args.executor,
        retry_failed=args.retry_failed,
        progress=not args.no_progress,
        executor_options=_executor_options(args),
        command=getattr(args, "command_line", None),
        fresh=args.fresh,
        allow_data_change=args.allow_data_change,
    )
    manifest = store.manifest()
    print(f"{manifest.rows} rows, {manifest.units} cases, {manifest.failed_units} failed", file=sys.stderr)
    status = _print_summary(summarize(store.read_cases()), args.fail_on_error)
    print(store.dir)
    return status


def _score(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def _print_summary(summary: RunSummary, fail_on_error: bool) -> int:
    """The run's table and each failing adapter's first error, on stderr; the exit status: 3 when an
    adapter failed every one of its cases (or, with ``fail_on_error``, when any case failed), else 0."""
    from segbench.reporting.run_summary import SUMMARY_RULE

    rows = [
        {
            "adapter": p.adapter,
            "task": p.task,
            "cases": p.cases,
            "dice": _score(p.dice),
            "nsd": _score(p.nsd),
            "failed": p.failed,
        }
        for p in summary.pairs
    ]
    with contextlib.redirect_stdout(sys.stderr):
        _print_table(rows, ["adapter", "task", "cases", "dice", "nsd", "failed"])
    print(SUMMARY_RULE, file=sys.stderr)
    for adapter, error in summary.first_errors.items():
        print(f"first error of {adapter}: {error}", file=sys.stderr)
    for adapter in summary.all_failed:
        print(f"segbench run: {adapter} failed every one of its cases", file=sys.stderr)
    if summary.all_failed or (fail_on_error and summary.first_errors):
        return FAILED_EXIT
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from segbench.reporting.report import build_site

    index = build_site(
        [Path(p) for p in args.runs],
        Path(args.out),
        title=args.title,
        base_url=args.base_url,
        extra_template_dirs=[Path(d) for d in args.template_dir],
    )
    print(index)
    return 0


def _fraction(value: str) -> float:
    """``10%`` or ``0.1`` → 0.1; ``off`` → infinity (no growth is a regression)."""
    text = value.strip()
    if text.lower() == "off":
        return math.inf
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 10% or 0.1, got {value!r}") from None


def cmd_compare(args: argparse.Namespace) -> int:
    from segbench.names import slug
    from segbench.reporting.compare import Thresholds, compare_runs, terminal_table, write_html

    thresholds = Thresholds(
        speed=args.fail_speed,
        memory=args.fail_memory,
        dice=args.fail_dice,
        min_delta_ms=args.min_delta_ms,
        min_delta_mb=args.min_delta_mb,
    )
    comparison = compare_runs(Path(args.base), Path(args.new), thresholds)
    for key, (base, new) in comparison.machine_differences.items():
        print(
            f"warning: the runs differ in {key}: {base} → {new}; speed and memory are not comparable", file=sys.stderr
        )
    if not comparison.shared:
        raise SegbenchError("the two runs share no (adapter, task, case, label, prompt) rows to compare")
    print(terminal_table(comparison))
    totals = comparison.totals
    print(
        f"cases (per adapter, task, prompt) failed: {totals.failed_base} in base, {totals.failed_new} in new "
        f"({totals.failed_both} in both); "
        f"unmatched: {totals.missing_new} only in base, {totals.missing_base} only in new; "
        f"lost (ok in base, failed or missing in new): {totals.lost}",
        file=sys.stderr,
    )
    if comparison.unjudged_groups:
        print(
            f"warning: the machine's speed moved by more than the speed tolerance in {comparison.unjudged_groups} "
            "group(s) (their reference workload, probe_ms); their speed is reported, not judged: rerun on a "
            "quieter machine",
            file=sys.stderr,
        )
    for gate, limit in (("speed", thresholds.speed), ("memory", thresholds.memory)):
        if math.isinf(limit):
            print(f"{gate} is reported, not gated (--fail-{gate} off)", file=sys.stderr)
    html = Path(args.html) if args.html else Path(args.new) / f"compare-{slug(str(comparison.base.run_id))}.html"
    print(f"HTML diff: {write_html(comparison, html)}", file=sys.stderr)
    if comparison.regressed:
        print("segbench compare: regression", file=sys.stderr)
        return 1
    return 0


def _integers(value: str) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {value!r}")
    return numbers


def cmd_throughput(args: argparse.Namespace) -> int:
    _adapter_names(_names(args.adapters) or ())
    from segbench.running.plan import resolve_device
    from segbench.running.throughput import measure

    device = resolve_device(args.device)
    rows = [
        row.as_dict()
        for adapter in _names(args.adapters) or ()
        for row in measure(adapter, device, args.weights, args.batch_sizes, args.prompts, args.repeats, args.precision)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            for key in ("encode_ms_per_image", "decode_ms_per_prompt", "images_per_s", "prompts_per_s", "peak_mem_mb"):
                row[key] = f"{row[key]:.1f}"
        _print_table(
            rows,
            [
                "adapter",
                "device",
                "batch",
                "prompts",
                "encode_ms_per_image",
                "decode_ms_per_prompt",
                "images_per_s",
                "prompts_per_s",
                "peak_mem_mb",
            ],
        )
    return 0


def _print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    def cell(value: Any) -> str:
        return "-" if value is None else str(value)

    widths = {c: max(len(c), *(len(cell(r[c])) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(cell(row[c]).ljust(widths[c]) for c in columns))


def _checkpoint_status(spec: Any) -> dict[str, Any]:
    from segbench.weights import checkpoints

    if spec is None:
        return {"status": "not needed", "path": None}
    try:
        found = checkpoints.resolve(spec)
        unverified = "" if found.official else ", unverified: no published checksum"
        return {"status": f"present ({found.source}{unverified})", "path": str(found.path)}
    except checkpoints.CheckpointMissing:
        return {"status": "missing", "path": str(checkpoints.cached_path(spec))}
    except checkpoints.CheckpointError as error:
        return {"status": f"bad: {error}", "path": str(checkpoints.cached_path(spec))}


def cmd_adapters(args: argparse.Namespace) -> int:
    from segbench import plugins

    rows = []
    for name, cls in plugins.adapters().items():
        meta = cls.meta
        status = _checkpoint_status(meta.checkpoint)
        rows.append(
            {
                "name": name,
                "status": "ok",
                "family": meta.family,
                "version": meta.version,
                "capabilities": ",".join(meta.capabilities.names()),
                "checkpoint": status["status"],
                "checkpoint_path": status["path"],
                "description": meta.description,
            }
        )
    _warn_plugins()
    # a plugin that failed to import: a row of its own (its entry point, module and error), the rest works
    broken = [
        {"name": plugin.name, "status": "broken", "group": plugin.group, "module": plugin.module, "error": plugin.error}
        for plugin in plugins.broken_plugins()
    ]
    if args.json:
        print(json.dumps(rows + broken, indent=2))
    else:
        _print_table(rows, ["name", "family", "capabilities", "checkpoint"])
        if broken:
            print("\nbroken plugins (not loaded):")
            _print_table(broken, ["name", "group", "module", "error"])
    return 0


def cmd_cards(args: argparse.Namespace) -> int:
    """Measure parameters and FLOPs of adapters (random weights, CPU) and write the model-card figures."""
    from segbench import plugins
    from segbench.running.model_cards import CARDS_FILE, write_cards

    known = plugins.adapters()
    names = args.adapters.split(",") if args.adapters else list(known)
    for name in names:
        plugins.adapter_class(name)  # an unknown name: the usual error with "did you mean"
    out = Path(args.out) if args.out else CARDS_FILE
    document = write_cards(out, names, merge=not args.fresh, device=args.device)
    for name in names:
        record = document["adapters"].get(name)
        if record is None:
            print(f"{name}: not measured ({document['not_measured'].get(name, 'unknown reason')})")
            continue
        flops = "no torch model" if record["flops"] is None else f"{record['flops'] / 1e9:.1f} GFLOPs {record['per']}"
        print(f"{name}: {record['params'] / 1e6:.2f} M parameters, {flops}")
    print(out)
    return 0


def cmd_check_adapter(args: argparse.Namespace) -> int:
    """The adapter contract on one adapter (segbench.running.adapter_check): a line per check, exit 1 on a
    failure; for authors of third-party adapters, and run on every built-in one by the tests."""
    from segbench import plugins
    from segbench.running.adapter_check import Checker

    _adapter_names([args.name])
    checker = Checker(
        plugins.adapter_class(args.name),
        "pretrained" if args.checkpoint else args.weights,  # a file given is a file to check
        Path(args.checkpoint) if args.checkpoint else None,
        _resolved_device(args.device),
    )
    failed = 0
    for result in checker.run():
        print(result.line(), flush=True)
        failed += result.status == "fail"
    print(f"{args.name}: {'FAILED' if failed else 'passed'} ({failed} check(s) failed)")
    return 1 if failed else 0


def _resolved_device(device: str) -> str:
    from segbench.running.plan import resolve_device

    return resolve_device(device)


def cmd_suites(args: argparse.Namespace) -> int:
    config = _suite_config(args)
    rows = [
        {
            "name": suite.name,
            "adapters": ",".join(suite.adapters),
            "tasks": ",".join(suite.tasks),
            "protocols": ",".join(p.name for p in suite.protocols) if suite.protocols else "(each task's)",
            "limit": suite.limit,
            "description": suite.description,
        }
        for suite in config.suites.values()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, ["name", "adapters", "tasks", "protocols", "limit"])
    return 0


def cmd_tasks_init(args: argparse.Namespace) -> int:
    """``tasks init PATH``: the task file for a dataset folder, to stdout or ``--write FILE``."""
    from segbench.data.layouts import init_task

    path = Path(args.target)
    root = _data_root(args.data_root) or path.resolve().parent
    text = init_task(path, root, args.name)
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
        print(args.write)
    else:
        print(text, end="")
    return 0


def cmd_tasks_check(args: argparse.Namespace) -> int:
    """``tasks check TASK`` (a task name, or a task file): read every case, print the summary; exit 1 if
    a case failed."""
    from segbench.data.task_check import check_task
    from segbench.data.taskspec import discover_tasks, load_task
    from segbench.errors import ConfigError

    if args.target.endswith(".toml"):
        spec = load_task(Path(args.target))
    else:
        tasks = discover_tasks(_suite_config(args).task_dirs)
        if args.target not in tasks:
            raise ConfigError(args.target, _unknown("task", args.target, list(tasks)))
        spec = tasks[args.target]
    result = check_task(spec, _data_root(args.data_root))
    print(json.dumps(result.as_dict(), indent=2) if args.json else "\n".join(result.lines()))
    return 1 if result.failed else 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from segbench.data.taskspec import discover_tasks
    from segbench.errors import ConfigError

    if args.action != "list" and not args.target:
        raise ConfigError(f"tasks {args.action}", "needs a PATH (init) or TASK (check)")
    if args.action == "init":
        return cmd_tasks_init(args)
    if args.action == "check":
        return cmd_tasks_check(args)
    config = _suite_config(args)
    rows = [
        {
            "name": spec.name,
            "version": spec.version,
            "dim": spec.dim,
            "reader": spec.reader,
            "dataset": spec.dataset or "(in process)",
            "labels": ",".join(label.name for label in spec.labels),
            "protocols": ",".join(p.name for p in spec.protocols),
            "description": spec.description,
            "file": str(spec.source),
        }
        for spec in discover_tasks(config.task_dirs).values()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, ["name", "dim", "dataset", "labels", "protocols"])
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from segbench import plugins
    from segbench.weights import checkpoints

    specs = {
        cls.meta.checkpoint.name: cls.meta.checkpoint
        for cls in plugins.adapters().values()
        if cls.meta.checkpoint is not None
    }
    _warn_plugins()
    if args.weights_command == "fetch":
        if args.name not in specs:
            raise SegbenchError(_unknown("checkpoint", args.name, list(specs)))
        print(checkpoints.fetch(specs[args.name]))
        return 0
    rows = []
    for name, spec in sorted(specs.items()):
        status = _checkpoint_status(spec)
        size_mb = round(spec.size / 1e6) if spec.size else None  # None: the authors publish no size
        rows.append(
            {
                "name": name,
                "status": status["status"],
                "size_mb": size_mb,
                "path": status["path"],
                "url": spec.url,
                "sha256": spec.sha256,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, ["name", "status", "size_mb", "path"])
    return 0


def _add_run_command(commands: Any) -> None:
    """``segbench run``."""
    run = commands.add_parser("run", help="run a suite and print the run directory")
    run.add_argument("--suite", default="quick", help="suite name in the config (default: quick)")
    run.add_argument("--config", help="suite file (default: the benchmark.toml shipped with segbench)")
    run.add_argument("--data-root", help="folder holding the datasets (default: $SEGBENCH_DATA)")
    run.add_argument("--out", default=str(DEFAULT_OUT), help="results folder (default: results/)")
    run.add_argument("--adapters", help="comma-separated adapters, instead of the suite's")
    run.add_argument("--tasks", help="comma-separated tasks, instead of the suite's")
    run.add_argument("--device", default="auto", type=_device, help="cpu, cuda[:N] or auto (default)")
    run.add_argument("--limit", type=_positive, help="at most N cases per task (N > 0)")
    run.add_argument(
        "--weights",
        default="pretrained",
        choices=["pretrained", "random"],
        help="random: the real architectures with random weights, for speed and memory only",
    )
    run.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="use a local checkpoint file for NAME (repeatable)",
    )
    run.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16"],
        help="autocast precision on CUDA (default fp32)",
    )
    run.add_argument(
        "--offload",
        action="store_true",
        help="keep video frames and propagation state in host memory (volume models on a GPU)",
    )
    run.add_argument("--run-id", type=_run_id, help="name of the run directory (default: SUITE-CONFIGHASH)")
    run.add_argument(
        "--save-masks",
        type=_mask_count,
        metavar="N|all",
        help="keep the predicted masks of every case ('all') or of N sampled cases per task, for "
        "the report's drill-down (default: the suite's save_masks, else all; 0: none)",
    )
    run.add_argument(
        "--write-predictions",
        choices=["auto", "nifti", "dicom-seg", "npz"],
        metavar="FORMAT",
        help="write each case's final predicted masks, in the source's geometry, to RUN_DIR/predictions/"
        "ADAPTER/TASK/PROTOCOL/CASE.EXT as units finish: nifti (source affine), dicom-seg (referencing "
        "the source series), npz (CVPR submission: segs, spacing) or auto (the source's own format)",
    )
    run.add_argument("--retry-failed", action="store_true", help="run failed cases of a resumed run again")
    run.add_argument(
        "--fresh",
        action="store_true",
        help="start over in the same run directory: remove its earlier parts, masks and results first",
    )
    run.add_argument(
        "--allow-data-change",
        action="store_true",
        help="resume a run whose data changed since its first session (recorded; default: refuse)",
    )
    run.add_argument(
        "--fail-on-error",
        action="store_true",
        help=f"exit {FAILED_EXIT} when any case failed (default: only when an adapter failed every case)",
    )
    run.add_argument(
        "--no-warmup",
        action="store_true",
        help="skip the untimed warm-up encode/decode of each adapter before its first case",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    scale = run.add_argument_group("executors", "where the units run (README: running a suite on a cluster)")
    scale.add_argument(
        "--executor",
        default="local",
        help="local (default, this process), pipelined (local, reading/scoring/writing on threads), "
        "multigpu (a process per GPU), ray, submitit (Slurm)",
    )
    scale.add_argument("--workers", type=_positive, help="workers (default: one per GPU; ray on CPU: one per node)")
    scale.add_argument(
        "--threads", type=_positive, help="torch threads (and CPUs reserved) per worker (default: the CPUs / workers)"
    )
    scale.add_argument(
        "--address", help="ray: address of an existing cluster (default: $RAY_ADDRESS or a new local instance)"
    )
    scale.add_argument(
        "--max-retries",
        type=_non_negative,
        help="times a unit whose worker died is run again before it is recorded as failed (default 2)",
    )
    scale.add_argument("--slurm-partition", help="submitit: the Slurm partition")
    scale.add_argument(
        "--slurm-time",
        type=int,
        metavar="MINUTES",
        help="submitit: time limit of each job (default 240; jobs requeue themselves)",
    )
    scale.add_argument(
        "--executor-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other option of the executor, e.g. slurm_account=lab or cluster=local (repeatable)",
    )
    run.set_defaults(handler=cmd_run)


def _add_report_command(commands: Any) -> None:
    """``segbench report``."""
    report = commands.add_parser("report", help="publish runs as a static HTML leaderboard")
    report.add_argument("runs", nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", required=True, help="site folder to write (index.html and pages)")
    report.add_argument("--title", default="segbench leaderboard")
    report.add_argument("--base-url", help="where the site will be published (canonical links, leaderboard.json)")
    report.add_argument(
        "--template-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="templates that override the built-in ones (repeatable; plugins can add more)",
    )
    report.set_defaults(handler=cmd_report)


def _add_compare_command(commands: Any) -> None:
    """``segbench compare``."""
    compare = commands.add_parser("compare", help="compare two runs; exit 1 on a speed, memory or accuracy regression")
    compare.add_argument("base", metavar="BASE_RUN")
    compare.add_argument("new", metavar="NEW_RUN")
    compare.add_argument(
        "--fail-speed",
        type=_fraction,
        default=0.10,
        metavar="10%",
        help="fail when a latency grows by more than this, significantly (default 10%%); "
        "'off' reports speed without gating it (shared CI runners)",
    )
    compare.add_argument(
        "--fail-memory",
        type=_fraction,
        default=0.10,
        metavar="10%",
        help="fail when peak memory grows by more than this (default 10%%); 'off' to report only",
    )
    compare.add_argument(
        "--fail-dice",
        type=float,
        default=0.01,
        help="fail when mean Dice drops by more than this, significantly (default 0.01)",
    )
    compare.add_argument(
        "--min-delta-ms",
        type=float,
        default=5.0,
        help="ignore a median latency change smaller than this per case (default 5 ms: below it a case is timed "
        "as much as the scheduler's as the model's)",
    )
    compare.add_argument(
        "--min-delta-mb",
        type=float,
        default=None,
        help="ignore peak-memory changes smaller than this (default 256 MB of host RSS on a CPU, 16 MB on CUDA)",
    )
    compare.add_argument("--html", help="where to write the HTML diff (default: NEW_RUN/compare-BASE.html)")
    compare.set_defaults(handler=cmd_compare)


def _add_throughput_command(commands: Any) -> None:
    """``segbench throughput``."""
    throughput = commands.add_parser("throughput", help="images and prompts per second under batching")
    throughput.add_argument("--adapters", required=True, help="comma-separated adapters")
    throughput.add_argument("--device", default="auto", type=_device)
    throughput.add_argument("--weights", default="pretrained", choices=["pretrained", "random"])
    throughput.add_argument("--batch-sizes", type=_integers, default=[1, 2, 4], help="images per batch (1,2,4)")
    throughput.add_argument("--prompts", type=_integers, default=[1, 4, 16], help="prompts per image (1,4,16)")
    throughput.add_argument("--repeats", type=_positive, default=3)
    throughput.add_argument(
        "--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="autocast on CUDA (default fp32)"
    )
    throughput.add_argument("--json", action="store_true")
    throughput.set_defaults(handler=cmd_throughput)


def _add_adapters_command(commands: Any) -> None:
    """``segbench adapters``."""
    adapters = commands.add_parser("adapters", help="list installed adapters")
    adapters.add_argument("--json", action="store_true")
    adapters.set_defaults(handler=cmd_adapters)


def _add_cards_command(commands: Any) -> None:
    """``segbench cards``."""
    cards = commands.add_parser(
        "cards", help="measure every adapter's parameters and FLOPs (random weights, CPU) for the model cards"
    )
    cards.add_argument("--out", metavar="FILE", help="where to write (default: results/reference/model_cards.json)")
    cards.add_argument(
        "--adapters", help="comma-separated adapters to measure (default: all); the others' entries stay"
    )
    cards.add_argument("--fresh", action="store_true", help="drop the entries of adapters not measured now")
    cards.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "meta"],
        help="cpu (default: the model runs) or meta (shapes only, nothing computed: seconds for the big models)",
    )
    cards.set_defaults(handler=cmd_cards)


def _add_check_adapter_command(commands: Any) -> None:
    """``segbench check-adapter``."""
    check = commands.add_parser(
        "check-adapter", help="check one adapter against the adapter contract (a line per check; exit 1 on a failure)"
    )
    check.add_argument("name", help="the adapter's name (segbench adapters lists them)")
    check.add_argument(
        "--weights",
        default="random",
        choices=["random", "pretrained"],
        help="random (default: no download) or the adapter's checkpoint, verified as for a run",
    )
    check.add_argument("--checkpoint", help="a local checkpoint file to load (implies --weights pretrained)")
    check.add_argument("--device", default="cpu", help="cpu (default), cuda[:N] or auto")
    check.set_defaults(handler=cmd_check_adapter)


def _add_tasks_command(commands: Any) -> None:
    """``segbench tasks``."""
    tasks = commands.add_parser(
        "tasks", help="list task definitions; `tasks init PATH` writes one for a dataset, `tasks check TASK` reads it"
    )
    tasks.add_argument("action", nargs="?", default="list", choices=["list", "init", "check"])
    tasks.add_argument("target", nargs="?", help="init: the dataset folder; check: a task name or task file")
    tasks.add_argument("--json", action="store_true")
    tasks.add_argument("--config", help="suite file whose task_dirs to include")
    tasks.add_argument("--data-root", help="folder holding the datasets (default: $SEGBENCH_DATA)")
    tasks.add_argument("--name", help="init: the task's name (default: from the folder)")
    tasks.add_argument("--write", metavar="FILE", help="init: write the task file here instead of printing it")
    tasks.set_defaults(handler=cmd_tasks)


def _add_suites_command(commands: Any) -> None:
    """``segbench suites``."""
    suites = commands.add_parser("suites", help="list the suites of the config (adapters, tasks, protocols)")
    suites.add_argument("--json", action="store_true")
    suites.add_argument("--config", help="suite file (default: the benchmark.toml shipped with segbench)")
    suites.set_defaults(handler=cmd_suites)


def _add_weights_command(commands: Any) -> None:
    """``segbench weights``."""
    weights = commands.add_parser("weights", help="list or fetch model checkpoints")
    weights_commands = weights.add_subparsers(dest="weights_command", required=True)
    listing = weights_commands.add_parser("list", help="present/missing, path and size of every checkpoint")
    listing.add_argument("--json", action="store_true")
    fetch = weights_commands.add_parser("fetch", help="download a checkpoint into the cache (sha256-checked)")
    fetch.add_argument("name")
    weights.set_defaults(handler=cmd_weights)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="segbench", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--version", action="version", version=f"segbench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_run_command(commands)
    _add_report_command(commands)
    _add_compare_command(commands)
    _add_throughput_command(commands)
    _add_adapters_command(commands)
    _add_check_adapter_command(commands)
    _add_cards_command(commands)
    _add_tasks_command(commands)
    _add_suites_command(commands)
    _add_weights_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.command_line = ["segbench", *(sys.argv[1:] if argv is None else argv)]
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except SegbenchError as error:
        print(f"segbench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("segbench: interrupted; finished cases are kept, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
