"""./scripts/bench: run the contenders side by side; print and save the figures."""

import argparse
import dataclasses
import datetime
import os
import platform
import signal
import statistics
import sys
import time
from pathlib import Path

from . import plan, plot, report, step
from .loadgen import BuiltinLoad
from .measure import Settings, measure, startups
from .wrk import WrkLoad

DEFAULT_DURATION, QUICK_DURATION = 3.0, 1.0
DEFAULT_WARMUP, QUICK_WARMUP = 1.0, 0.5


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="./scripts/bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="short runs: a smoke test, not figures to quote")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="a workload (a..i or tiny, cpu, slow, udp, echo, herd, wsgi, "
                             "scaling, mixed) or "
                             "part of a contender's name (gunicorn, 'sync x2'); repeatable")
    parser.add_argument("--duration", type=float, metavar="S",
                        help=f"measured seconds per row (default {DEFAULT_DURATION:g}, "
                             f"--quick {QUICK_DURATION:g}); not the load step (scaling), "
                             f"whose phases are {step.seconds(step.PHASES)} "
                             f"(--quick {step.seconds(step.QUICK_PHASES)})")
    parser.add_argument("--repeat", type=_at_least_one, default=1, metavar="N",
                        help="measure each row N times, the contenders taking turns, and "
                             "keep the median of each figure: for ratios finer than a "
                             "shared machine's noise (not the load step)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), metavar="DIR",
                        help="results.md, results.json, bench.png, scaling.png and server logs")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "builtin"), default="auto",
                        help="HTTP load: wrk if installed (auto), or the built-in generator")
    return parser.parse_args(argv)


def _at_least_one(text):
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return int(text)


def generators(choice):
    """protocol -> generator: wrk for HTTP when chosen and installed, else built-in."""
    builtin = BuiltinLoad()
    wrk = WrkLoad.find() if choice != "builtin" else None
    if choice == "wrk" and wrk is None:
        sys.exit("--loadgen wrk: wrk is not installed (apt-get install wrk)")
    return {"http": wrk or builtin, "echo": builtin, "udp": builtin}


def describe_run(settings):
    """The header's facts: command, date, machine, Python, load generators, timings."""
    command = os.environ.get("BENCH_COMMAND") or "python -m benchmarks " + " ".join(sys.argv[1:])
    return {"command": command,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(),
            "loadgen": ", ".join(sorted({g.name for g in settings.generators.values()})),
            "warmup": settings.warmup, "duration": settings.duration,
            "repeat": settings.repeat}


def _stop_on_term(signum, frame):
    raise KeyboardInterrupt  # the same clean-up as Ctrl-C


def main(argv=None):
    args = parse_args(argv)
    chosen = plan.select(args.only)
    if not chosen:
        sys.exit(f"--only {' '.join(args.only)}: no workload or contender matches")
    signal.signal(signal.SIGTERM, _stop_on_term)
    started = time.monotonic()
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    settings = Settings(
        python=sys.executable, logs=args.out / "logs",
        warmup=QUICK_WARMUP if args.quick else DEFAULT_WARMUP,
        duration=args.duration or (QUICK_DURATION if args.quick else DEFAULT_DURATION),
        generators=generators(args.loadgen),
        step_phases=step.phases_for(args.quick), repeat=args.repeat)
    gens = settings.generators
    meta = describe_run(settings)
    print(report.header(meta), flush=True)
    sections, loads, printed = [], {}, 0
    try:
        for workload, contenders in chosen:
            loads[workload.key] = (step.describe(settings.step_phases) if workload.step
                                   else gens[workload.protocol].describe(workload))
            rows = []
            sections.append((workload, rows))
            run_rows(contenders, workload, settings, rows)
            if workload.startup_runs:
                time_startups(contenders, rows, workload, settings)
            printed = print_tables(sections, loads, printed)
    except KeyboardInterrupt:
        print("\ninterrupted: writing what was measured", file=sys.stderr)
    finally:
        print_tables(sections, loads, printed)
        finish(args.out, meta, sections, loads, time.monotonic() - started)


def print_tables(sections, loads, printed):
    """Print the tables of sections[printed:]; return how many are printed now."""
    for workload, rows in sections[printed:]:
        report.add_ratios(workload, rows)
        print(report.table(workload, rows, loads[workload.key]), flush=True)
    return len(sections)


def run_rows(contenders, workload, settings, rows):
    """Each contender's row, into rows.  Measured once; or several times --
    every row with settings.repeat > 1 (not the load step), the workload's
    `turns` in any run (plan.TURNS) -- the contenders concerned taking turns,
    in an order reversed every other turn (a, b, c, c, b, a, a, ...) so that a
    busy moment of the shared machine, or what a run leaves to the next one,
    falls on them alike; report.median_row() makes the row."""
    plans = {contender.name: runs_of(contender, workload, settings) for contender in contenders}
    runs = {contender.name: [] for contender in contenders}
    for turn in range(max(count for count, _ in plans.values())):
        for contender in (contenders if turn % 2 == 0 else contenders[::-1]):
            count, run_settings = plans[contender.name]
            if turn < count:
                runs[contender.name].append(run_row(contender, workload, run_settings))
    rows += [report.median_row(runs[contender.name]) for contender in contenders]


def runs_of(contender, workload, settings):
    """(how many runs, with which settings) make contender's row."""
    if workload.step:
        return 1, settings
    if contender.name in workload.turns and settings.repeat < plan.TURNS:
        return plan.TURNS, dataclasses.replace(settings,
                                               duration=settings.duration * plan.TURN_SHARE)
    return settings.repeat, settings


def run_row(contender, workload, settings):
    """measure(), with progress on stderr; a failure is a row, not the end."""
    print(f"  ({workload.key}) {contender.name} ...", end="", file=sys.stderr, flush=True)
    try:
        if workload.step:
            row = step.measure_step(contender, workload, settings, settings.step_phases)
        else:
            row = measure(contender, workload, settings)
    except (OSError, RuntimeError) as error:
        print(f" FAILED: {error}", file=sys.stderr)
        return {"workload": workload.key, "contender": contender.name,
                "family": contender.family, "failed": str(error).splitlines()[0]}
    if workload.step:
        high = max(row["phases"], key=lambda p: p["clients"])
        print(f" {high['clients']} clients: p99 {high['p99_ms']:,.0f} ms, "
              f"{high['workers_max']} workers at most", file=sys.stderr)
    else:
        print(f" {row['rps']:,.0f} req/s", file=sys.stderr)
    return row


def time_startups(contenders, rows, workload, settings):
    """Each contender's start-up to its first response, runs interleaved; into its row."""
    print(f"  ({workload.key}) start-up to first response, {workload.startup_runs} runs each ...",
          end="", file=sys.stderr, flush=True)
    try:
        times = startups(contenders, workload, settings)
    except (OSError, RuntimeError) as error:
        print(f" FAILED: {error}", file=sys.stderr)
        return
    for row in rows:
        samples = times.get(row["contender"])
        if samples and "failed" not in row:
            row["startup_ms"] = statistics.median(samples)
            row["startup_runs_ms"] = samples
    print(" " + ", ".join(f"{name} {statistics.median(s):.0f} ms" for name, s in times.items()),
          file=sys.stderr)


def finish(out, meta, sections, loads, elapsed):
    """Print the acceptance checks; write results.md, results.json, bench.png and
    (if the load step ran) scaling.png."""
    results = report.acceptance(sections, elapsed, meta["repeat"])
    print(report.checks_text(results))
    report.write(out, meta, sections, loads, results)
    drawn = plot.plot(sections, out / "bench.png", f"prefork benchmark · {meta['date']} · "
                      f"{meta['cpus']} CPUs · {meta['loadgen']}")
    stepped = plot.plot_step(sections, out / "scaling.png", f"prefork load step · "
                             f"{meta['date']} · {meta['cpus']} CPUs")
    written = (["results.md", "results.json"] + (["bench.png"] if drawn else [])
               + (["scaling.png"] if stepped else []))
    print(f"wrote {', '.join(str(out / name) for name in written)}")


if __name__ == "__main__":
    main()
