"""The figures as Markdown tables and JSON, and the issue's acceptance checks."""

import collections
import json
import statistics
from dataclasses import dataclass

from .plan import TIMES, WSGI_PAIRS
from .work import CPU_SECONDS

OPS = {"<=": ("\u2264", lambda a, b: a <= b), ">=": ("\u2265", lambda a, b: a >= b),
       "<": ("<", lambda a, b: a < b)}


def add_ratios(workload, rows):
    """Each row's requests/s and CPU/request as a multiple of its reference row's."""
    if workload.step:
        return   # a time series: no steady rate to compare
    measured = {r["contender"]: r for r in rows if "failed" not in r}
    for row in rows:
        reference = measured.get(workload.reference_for(row["contender"]))
        for key, ratio in (("rps", "rps_ratio"), ("cpu_us", "cpu_ratio")):
            ok = reference and reference.get(key) and row.get(key) is not None
            row[ratio] = row[key] / reference[key] if ok else None


# Summed, not the median, over the runs of a row (--repeat).
SUMMED = ("requests", "seconds", "errors")


def median_row(runs):
    """One row from a contender's runs (--repeat): the median of each figure,
    requests, seconds and errors summed, each run's req/s kept (rps_runs).  A
    run that failed fails the row: a server that died once is news."""
    if len(runs) == 1:
        return runs[0]
    for number, run in enumerate(runs, 1):
        if "failed" in run:
            return {**run, "failed": f"run {number} of {len(runs)}: {run['failed']}"}
    row = dict(runs[-1])
    for key, value in runs[-1].items():
        if key in SUMMED:
            row[key] = sum(run[key] for run in runs)
        elif isinstance(value, float):
            values = [run[key] for run in runs if run.get(key) is not None]
            row[key] = statistics.median(values) if values else None
    row["error_kinds"] = dict(sum((collections.Counter(run["error_kinds"]) for run in runs),
                                  collections.Counter()))
    row["rps_runs"] = [run["rps"] for run in runs]
    return row


# -- Markdown ------------------------------------------------------------------

def _num(value, digits=1):
    return "–" if value is None else f"{value:,.{digits}f}"


def _times(value):
    return "–" if value is None else f"{value:.2f}{TIMES}"


def _errors(row):
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(row["error_kinds"].items()))
    return f"{row['errors']} ({kinds})" if kinds else "0"


COLUMNS = (
    ("contender", lambda r: r["contender"]),
    ("req/s", lambda r: _num(r["rps"], 0)),
    (f"{TIMES} req/s", lambda r: _times(r["rps_ratio"])),
    ("p50 ms", lambda r: _num(r["p50_ms"], 2)),
    ("p99 ms", lambda r: _num(r["p99_ms"], 2)),
    ("errors", _errors),
    ("CPU µs/req", lambda r: _num(r["cpu_us"])),
    (f"{TIMES} CPU/req", lambda r: _times(r["cpu_ratio"])),
    ("USS/worker MiB", lambda r: _num(r.get("uss_worker"))),
    ("PSS/worker MiB", lambda r: _num(r.get("pss_worker"))),
    ("USS total MiB", lambda r: _num(r.get("uss_total"))),
    ("PSS total MiB", lambda r: _num(r.get("pss_total"))),
    ("load CPU", lambda r: _num(r["loadgen_cores"], 2)),
    ("other CPU", lambda r: _num(r["other_cores"], 2)),
)


def header(meta):
    return "\n".join([
        "# prefork benchmark",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}",
        f"- machine: {meta['cpus']} CPUs, {meta['platform']}",
        f"- Python {meta['python']}",
        f"- load generator: {meta['loadgen']}",
        f"- each row: {meta['warmup']:g} s warm-up, then {meta['duration']:g} s measured"
        + (f", {meta['repeat']} times in turns (the median kept)" if meta["repeat"] > 1 else "")
        + "; CPU = user+sys of the server's whole process tree; memory read under load",
        f"- CPU-bound work: Python loops until the handler's thread has run {CPU_SECONDS * 1000:g} ms of CPU",
        "",
    ])


def _against(workload):
    if not workload.pairs:
        return f"against **{workload.reference}**"
    return "each row against the other of its pair (" + "; ".join(
        f"**{a}** vs **{b}**" for a, b in workload.pairs) + ")"


def _ms_list(samples):
    return ", ".join(f"{ms:.0f}" for ms in samples)


def pair_lines(workload, rows):
    """For each pair both measured: the ratios first/second, and the start-up times."""
    measured = {r["contender"]: r for r in rows if "failed" not in r}
    lines = []
    for first, second in workload.pairs:
        a, b = measured.get(first), measured.get(second)
        if not (a and b):
            continue
        rps = a["rps"] / b["rps"] if b["rps"] else None
        cpu = a["cpu_us"] / b["cpu_us"] if a["cpu_us"] and b["cpu_us"] else None
        lines.append(f"- {first} / {second}: req/s {_times(rps)} ({_num(a['rps'], 0)} vs "
                     f"{_num(b['rps'], 0)}), CPU/req {_times(cpu)} ({_num(a['cpu_us'])} vs "
                     f"{_num(b['cpu_us'])} µs), p99 {_num(a['p99_ms'], 2)} vs "
                     f"{_num(b['p99_ms'], 2)} ms, errors {_errors(a)} vs {_errors(b)}")
        if "startup_ms" in a and "startup_ms" in b:
            lines.append(f"  - start-up to first response: {a['family']} "
                         f"{a['startup_ms']:.0f} ms, {b['family']} {b['startup_ms']:.0f} ms "
                         f"(median of {len(a['startup_runs_ms'])}; runs: "
                         f"{_ms_list(a['startup_runs_ms'])} vs {_ms_list(b['startup_runs_ms'])})")
    return lines


def table(workload, rows, load):
    if workload.step:
        return step_table(workload, rows, load)
    lines = [f"## ({workload.key}) {workload.title}", "",
             f"{workload.clients} clients · load: {load} · "
             f"{TIMES} columns: {_against(workload)} · "
             f"load CPU, other CPU: cores used by the load generator, "
             f"and by anything else on the machine", "",
             "| " + " | ".join(name for name, _ in COLUMNS) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(COLUMNS))) + "|"]
    for row in rows:
        if "failed" in row:
            cells = [row["contender"], f"failed: {row['failed']}"] + [""] * (len(COLUMNS) - 2)
        else:
            cells = [cell(row) for _, cell in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    pairs = pair_lines(workload, rows)
    if pairs:
        lines += ["", "Side by side, prefork / gunicorn:", ""] + pairs
    runs = [row for row in rows if "rps_runs" in row]
    if runs:
        lines += ["", "Measured several times, taking turns, each figure the median of its "
                  "runs; the req/s of each run, in order:", ""]
        lines += [f"- {row['contender']} ({len(row['rps_runs'])} runs of "
                  f"{row['seconds'] / len(row['rps_runs']):.0f} s): "
                  f"{', '.join(_num(r, 0) for r in row['rps_runs'])}" for row in runs]
    return "\n".join(lines) + "\n"


def _cell(value, digits=0):
    return "\u2013" if value is None else f"{value:,.{digits}f}"


def step_table(workload, rows, load):
    """The load step, second by second: the clients, then for each contender the
    workers at the second's end and the p99 of the requests that ended in it;
    then each contender's phases."""
    measured = [r for r in rows if "failed" not in r]
    lines = [f"## ({workload.key}) {workload.title}", "", f"load: {load}", ""]
    if measured:
        head = ["second", "clients"]
        for row in measured:
            head += [f"workers: {row['contender']}", f"p99 ms: {row['contender']}"]
        lines += ["| " + " | ".join(head) + " |",
                  "|" + "|".join(["---:"] * len(head)) + "|"]
        for i, first in enumerate(measured[0]["per_second"]):
            cells = [f"{first['t']:g}\u2013{first['t'] + 1:g}", str(first["clients"])]
            for row in measured:
                sample = row["per_second"][i] if i < len(row["per_second"]) else {}
                cells += [_cell(sample.get("workers")), _cell(sample.get("p99_ms"))]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    for row in rows:
        if "failed" in row:
            lines.append(f"- {row['contender']}: failed: {row['failed']}")
            continue
        lines.append(f"- {row['contender']}: errors {_errors(row)}")
        for p in row["phases"]:
            lines.append(
                f"  - {p['clients']} client{'s' * (p['clients'] > 1)}, "
                f"{p['from']:g}\u2013{p['from'] + p['seconds']:g} s: "
                f"{p['rps']:,.0f} req/s, p50 {p['p50_ms']:,.1f} ms, "
                f"p99 {p['p99_ms']:,.1f} ms; workers {p['workers_start']} \u2192 "
                f"{p['workers_end']} (at most {p['workers_max']})")
    return "\n".join(lines) + "\n"


# -- acceptance checks -----------------------------------------------------------

METRICS = {"rps": ("requests/s", "/s"), "cpu_us": ("CPU/request", " µs"),
           "p99_ms": ("p99", " ms"), "errors": ("errors", ""),
           "pss_total": ("PSS in total", " MiB"),
           "startup_ms": ("start-up to first response", " ms")}


def _figure(value):
    return f"{value:,.0f}" if value >= 100 or value == int(value) else f"{value:.1f}"


@dataclass(frozen=True)
class Check:
    """subject's metric in workload, alone or as a multiple of other's, against target."""

    item: str
    workload: str
    subject: str
    metric: str
    op: str
    target: float
    other: str = None

    def evaluate(self, found):
        """(line, verdict); found(workload, contender) gives a row or None."""
        label, unit = METRICS[self.metric]
        sign, holds = OPS[self.op]
        where = f" in ({self.workload})" if self.item != f"({self.workload})" else ""
        text = f"{self.item} {self.subject} {label}{where}"
        row = found(self.workload, self.subject)
        other = found(self.workload, self.other) if self.other else None
        value = row.get(self.metric) if row else None
        if self.other:
            text += f" vs {self.other}"
            base = other.get(self.metric) if other else None
            if not value or not base:
                return f"{text}: SKIP (not measured in this run)", "SKIP"
            ratio = value / base
            verdict = "PASS" if holds(ratio, self.target) else "FAIL"
            return (f"{text} = {ratio:.3f}{TIMES} ({_figure(value)} vs {_figure(base)}{unit}; "
                    f"target {sign} {self.target:g}{TIMES}): {verdict}", verdict)
        if value is None:
            return f"{text}: SKIP (not measured in this run)", "SKIP"
        verdict = "PASS" if holds(value, self.target) else "FAIL"
        return (f"{text} = {_figure(value)}{unit} (target {sign} {self.target:g}{unit}): "
                f"{verdict}", verdict)


SYNC2, THREADING2 = f"prefork sync {TIMES}2", f"prefork threading {TIMES}2"
CHECKS = (
    Check("(a)", "a", SYNC2, "cpu_us", "<=", 1.1, "stdlib TCPServer"),
    Check("(a)", "a", SYNC2, "rps", ">=", 2.0, f"gunicorn sync {TIMES}2"),
    Check("(b)", "b", SYNC2, "rps", ">=", 1.8, "stdlib TCPServer"),
    Check("(b)", "b", SYNC2, "rps", ">=", 1.2, f"gunicorn sync {TIMES}2"),
    Check("(c)", "a", THREADING2, "cpu_us", "<=", 2.0, SYNC2),
    Check("(c)", "c", THREADING2, "p99_ms", "<=", 100),
    Check("(c)", "c", THREADING2, "errors", "<=", 0),
    Check("memory:", "a", SYNC2, "pss_total", "<=", 15),
)
# The WSGI row: the prefork command against gunicorn, the same app, pair by pair.
CHECKS += tuple(check for prefork_name, gunicorn_name in WSGI_PAIRS for check in (
    Check("(g)", "g", prefork_name, "rps", ">=", 1.5, gunicorn_name),
    Check("(g)", "g", prefork_name, "cpu_us", "<=", 1.0, gunicorn_name),
    Check("(g)", "g", prefork_name, "startup_ms", "<=", 1.0, gunicorn_name)))
# Thread balance: threading workers against sync ones, and against themselves
# without adaptive_threads ("static").
STATIC2 = f"{THREADING2} (adaptive_threads off)"
CHECKS += (
    Check("balance:", "b", THREADING2, "rps", ">=", 0.95, SYNC2),
    Check("balance:", "b", THREADING2, "p99_ms", "<=", 1.2, SYNC2),
    Check("balance:", "c", THREADING2, "rps", ">=", 0.95, STATIC2),
    Check("balance:", "e", THREADING2, "rps", ">=", 0.95, STATIC2),
    Check("balance:", "i", THREADING2, "p99_ms", "<", 1.0, STATIC2),
    Check("balance:", "i", THREADING2, "p99_ms", "<", 1.0, SYNC2),
)
TIME_LIMIT = 300   # seconds, the whole default run


def acceptance(sections, elapsed, repeat=1):
    """[(line, verdict)] for the issue's acceptance figures, computed from the rows;
    the time limit is the default run's (repeat 1)."""
    by_key = {(w.key, r["contender"]): r for w, rows in sections for r in rows
              if "failed" not in r}
    results = [check.evaluate(lambda w, name: by_key.get((w, name))) for check in CHECKS]
    prefork_rows = [(w.key, r) for w, rows in sections for r in rows if r["family"] == "prefork"]
    bad = [f"({w}) {r['contender']}: {r.get('failed') or _errors(r)}" for w, r in prefork_rows
           if "failed" in r or r["errors"]]
    if prefork_rows:
        verdict = "FAIL" if bad else "PASS"
        detail = "; ".join(bad) if bad else f"{len(prefork_rows)} prefork rows"
        results.append((f"no errors in any prefork row ({detail}): {verdict}", verdict))
    if repeat > 1:
        results.append((f"the bench ran in {elapsed:.0f} s, each row {repeat} times "
                        f"(the target, < {TIME_LIMIT} s, is for one): SKIP", "SKIP"))
    else:
        verdict = "PASS" if elapsed < TIME_LIMIT else "FAIL"
        results.append((f"the bench ran in {elapsed:.0f} s (target < {TIME_LIMIT} s): "
                        f"{verdict}", verdict))
    return results


def checks_text(results):
    return "\n".join(["## Acceptance (issue 4, the WSGI row, thread balance)", ""]
                     + [f"- {line}" for line, _ in results]) + "\n"


def write(out_dir, meta, sections, loads, results):
    """results.md (what was printed) and results.json (every figure)."""
    text = "\n".join([header(meta)] + [table(w, rows, loads[w.key]) for w, rows in sections]
                     + [checks_text(results)])
    (out_dir / "results.md").write_text(text)
    data = {"meta": meta,
            "workloads": [{"key": w.key, "name": w.name, "title": w.title,
                           "clients": w.clients, "reference": w.reference,
                           "load": loads[w.key], "rows": rows} for w, rows in sections],
            "acceptance": [{"check": line, "verdict": verdict} for line, verdict in results]}
    (out_dir / "results.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
