#!/usr/bin/env python3
"""Regenerates the results section of BENCHMARKS.md from criterion's output.

Reads target/criterion/<group>/<function>/<param>/new/{benchmark,estimates}.json
(the latest run of each bench), and replaces the text between the
`<!-- results:begin -->` and `<!-- results:end -->` markers of
BENCHMARKS.md with tables of medians and ratios to the SQLite baseline
measured in the same run, and a table of issue 5's targets read off the
same results (met, not met, or not measured in this run). Usage (from
the repository root):

    python3 benches/report.py            # rewrite BENCHMARKS.md
    python3 benches/report.py --print    # print the tables only

Standard library only.
"""

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
CRITERION = TARGET / "criterion"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"

# span-sessions mode -> (SQLite run with the same promise, issue 5's baseline)
INGEST_PAIRS = {
    "without_sync_buffered": "sqlite_normal",
    "with_sync_sync": "sqlite_full",
    "with_sync_group_commit": "sqlite_full",
}
MODE_NAMES = {
    "without_sync_buffered": "Buffered (without sync)",
    "with_sync_sync": "Sync (with sync)",
    "with_sync_group_commit": "GroupCommit (with sync)",
    "sqlite_normal": "SQLite WAL, NORMAL",
    "sqlite_full": "SQLite WAL, FULL",
}


def load():
    """{(group, function, param): record} for every bench of the latest run."""
    results = {}
    for bench in CRITERION.glob("*/*/*/new/benchmark.json"):
        est = bench.with_name("estimates.json")
        if not est.exists():
            continue
        b = json.loads(bench.read_text())
        e = json.loads(est.read_text())
        key = (b["group_id"], b["function_id"], b["value_str"])
        results[key] = {
            "median_ns": e["median"]["point_estimate"],
            "throughput": b.get("throughput"),
            "mtime": est.stat().st_mtime,
        }
    return results


def per_second(rec):
    """(elements/s, bytes/s) from a record's throughput and median."""
    t = rec["throughput"] or {}
    secs = rec["median_ns"] / 1e9
    if "ElementsAndBytes" in t:
        v = t["ElementsAndBytes"]
        return v["elements"] / secs, v["bytes"] / secs
    if "Elements" in t:
        return t["Elements"] / secs, None
    if "Bytes" in t:
        return None, t["Bytes"] / secs
    return None, None


def fmt_time(ns):
    if ns >= 1e9:
        return f"{ns / 1e9:.2f} s"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"


def fmt_rate(x):
    if x is None:
        return "-"
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}"


def fmt_ratio(x):
    if x is None:
        return "-"
    return f"{x:.1f}x" if x < 100 else f"{x:.0f}x"


SUSTAINED = "ingest_sustained"


def mode_order(f):
    order = list(MODE_NAMES)
    return order.index(f) if f in order else 99


def ingest_row(r, g, f, p, lead, note=""):
    """A table row for bench (g, f, p): the `lead` cells, then the mode,
    median, spans/s, MB/s and ratios to SQLite in the same group and
    parameter (same promise, NORMAL)."""
    rec = r[(g, f, p)]
    el, by = per_second(rec)
    same = normal = None
    if f in INGEST_PAIRS:
        base = r.get((g, INGEST_PAIRS[f], p))
        if base:
            same = el / per_second(base)[0]
        base = r.get((g, "sqlite_normal", p))
        if base:
            normal = el / per_second(base)[0]
    name = MODE_NAMES.get(f, f)
    if f.startswith("sqlite"):
        name = f"*{name}*{note}"
    mb = f"{by / 1e6:.1f}" if by is not None else "-"
    cells = lead + [name, fmt_time(rec["median_ns"]), fmt_rate(el), mb,
                    fmt_ratio(same), fmt_ratio(normal)]
    return "| " + " | ".join(cells) + " |"


def ingest_tables(r):
    out = []
    groups = sorted({g for (g, _, _) in r if g.startswith("ingest_") and g != SUSTAINED},
                    key=lambda g: ("concurrent" in g, g))
    for g in groups:
        note = " (4 connections)" if "concurrent" in g else ""
        out.append(f"### `{g}`\n")
        out.append("| batch | mode | median per batch | spans/s | MB/s | vs SQLite, same promise | vs SQLite NORMAL |")
        out.append("|---:|---|---:|---:|---:|---:|---:|")
        batches = sorted({int(p) for (gg, _, p) in r if gg == g})
        for batch in batches:
            funcs = [f for (gg, f, p) in r if gg == g and p == str(batch)]
            for f in sorted(funcs, key=mode_order):
                out.append(ingest_row(r, g, f, str(batch), [str(batch)], note))
        out.append("")
    return out


def sustained_table(r):
    """`ingest_sustained`: one sample is a whole ingest; the parameter is the
    span size. Empty when the run has no such results."""
    benches = [(f, p) for (g, f, p) in r if g == SUSTAINED]
    if not benches:
        return []

    def size(p):
        """(spans per sample, bytes per span) of span size p, from its throughput."""
        for f, pp in benches:
            t = (r[(SUSTAINED, f, pp)]["throughput"] or {}).get("ElementsAndBytes")
            if pp == p and t:
                return t["elements"], t["bytes"] / t["elements"]
        return None, 0

    out = [
        f"### `{SUSTAINED}`\n",
        "Per sample: one whole ingest in batches of 1,000 spans, one appender, "
        "into a fresh store, ending with a read (every span indexed). At the default "
        "counts that is many index groups and several checkpoints, which the bursts "
        "above are too short to reach.",
        "",
        "| span size | spans per sample | mode | median per sample | spans/s | MB/s "
        "| vs SQLite, same promise | vs SQLite NORMAL |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for p in sorted({p for _, p in benches}, key=lambda p: size(p)[1]):
        n = size(p)[0]
        lead = [p, f"{n:,}" if n is not None else "-"]
        for f in sorted({f for f, pp in benches if pp == p}, key=mode_order):
            out.append(ingest_row(r, SUSTAINED, f, p, lead))
    out.append("")
    return out


RECEIVER = "receiver_otlp_http_500B"
RECEIVER_BASELINE = "in_process_export"
RECEIVER_NAMES = {
    RECEIVER_BASELINE: "*`otlp::export` in process*",
    "http_protobuf": "`serve`, protobuf",
    "http_protobuf_gzip": "`serve`, protobuf, gzip",
    "http_json": "`serve`, OTLP/JSON",
}


def receiver_table(r):
    """`benches/receiver.rs`: the OTLP/HTTP receiver against the same requests
    exported in process. Empty when the run has no such results."""
    benches = sorted(((f, p) for (g, f, p) in r if g == RECEIVER),
                     key=lambda fp: (list(RECEIVER_NAMES).index(fp[0])
                                     if fp[0] in RECEIVER_NAMES else 99, fp[1]))
    if not benches:
        return []
    out = [
        f"### `{RECEIVER}`\n",
        "Per sample: one whole ingest of ~500 B spans into a fresh store, as OTLP requests "
        "of the parameter's spans sent by four clients (each on one keep-alive connection, "
        "waiting for each answer), until the last answer: the spans are durable (group "
        "commit), their indexing may still be under way. The baseline is `otlp::export` of "
        "the same requests, decoded beforehand, from four threads in the bench's process.",
        "",
        "| request spans | spans per sample | path | median per sample | spans/s | MB/s "
        "| vs in process |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for f, p in benches:
        rec = r[(RECEIVER, f, p)]
        el, by = per_second(rec)
        base = r.get((RECEIVER, RECEIVER_BASELINE, p))
        ratio = el / per_second(base)[0] if base and el else None
        t = (rec["throughput"] or {}).get("ElementsAndBytes")
        n = f"{t['elements']:,}" if t else "-"
        mb = f"{by / 1e6:.1f}" if by is not None else "-"
        out.append(f"| {p} | {n} | {RECEIVER_NAMES.get(f, f)} | {fmt_time(rec['median_ns'])} "
                   f"| {fmt_rate(el)} | {mb} | {fmt_ratio(ratio) if ratio else '-'} |")
    out.append("")
    return out

QUERY_ROWS = [
    # (group, span-sessions function, SQLite function, description)
    ("history", "span_sessions_full", "sqlite_full", "`session_history`, whole session"),
    ("history", "span_sessions_page100", "sqlite_page100", "`session_history_page`, first 100 turns"),
    ("sessions_first_page_50", "span_sessions", "sqlite", "`sessions`, first page of 50 by start"),
    ("session_summary", "span_sessions", "sqlite", "`session` summary"),
    ("trace", "span_sessions", "sqlite", "`trace`"),
    ("search_first_page_50", "span_sessions", "sqlite", "sessions page of 50, substring search"),
    ("recovery", "span_sessions", "sqlite_wal", "reopen after a crash, log past checkpoint"),
]


def sort_param(p):
    digits = "".join(ch for ch in p if ch.isdigit())
    return (int(digits) if digits else 0, p)


def query_table(r):
    out = [
        "| query | case | span-sessions median | SQLite median | SQLite / span-sessions |",
        "|---|---|---:|---:|---:|",
    ]
    for g, ours, theirs, what in QUERY_ROWS:
        params = sorted({p for (gg, f, p) in r if gg == g and f in (ours, theirs)}, key=sort_param)
        for p in params:
            a, b = r.get((g, ours, p)), r.get((g, theirs, p))
            if a is None and b is None:
                continue
            case = p.replace("_", " ")
            if g == "history":
                case = f"{p} turns"
            elif g == "session_summary":
                case = f"{p} turns"
            ratio = b["median_ns"] / a["median_ns"] if a and b else None
            out.append(
                f"| {what} | {case} | {fmt_time(a['median_ns']) if a else 'not measured'} "
                f"| {fmt_time(b['median_ns']) if b else '-'} | {fmt_ratio(ratio)} |"
            )
    out.append("")
    return out


# Issue 5's targets: (what, (group, function, param), per-second floor,
# ratio-to-SQLite-NORMAL floor, time ceiling in ns). Per-second targets
# read spans/s from the bench's throughput; time targets its median.
TARGETS = [
    ("~500 B spans, batches of 1,000, group commit, sustained: 1,000,000 spans/s and 25x SQLite NORMAL",
     (SUSTAINED, "with_sync_group_commit", "500B"), 1e6, 25.0, None),
    ("~500 B spans, batches of 1,000, group commit, bursts: 1,000,000 spans/s and 25x SQLite NORMAL",
     ("ingest_500B", "with_sync_group_commit", "1000"), 1e6, 25.0, None),
    ("~4 KiB spans, batches of 1,000, group commit, sustained: 200,000 spans/s",
     (SUSTAINED, "with_sync_group_commit", "4KiB"), 2e5, None, None),
    ("~4 KiB spans, batches of 1,000, group commit, bursts: 200,000 spans/s",
     ("ingest_4KiB", "with_sync_group_commit", "1000"), 2e5, None, None),
    ("`session_history` of 100 turns: at most 50 µs median",
     ("history", "span_sessions_full", "100"), None, None, 50e3),
    ("10,000 turns, first page of 100: at most 100 µs median",
     ("history", "span_sessions_page100", "10000"), None, None, 100e3),
    ("reopen with 1 GiB of log past the checkpoint: at most 2 s",
     ("recovery", "span_sessions", "1024MiB"), None, None, 2e9),
]


def target_verdict(r, key, min_rate, min_ratio, max_ns):
    """(measured text, verdict) of one target against the run's record."""
    rec = r.get(key)
    if rec is None:
        return "not in this run", "not measured"
    g, _, p = key
    parts, met = [], True
    rate = per_second(rec)[0]
    if min_rate is not None:
        parts.append(f"{fmt_rate(rate)} spans/s")
        met &= rate is not None and rate >= min_rate
    if min_ratio is not None or g.startswith("ingest"):
        base = r.get((g, "sqlite_normal", p))
        base_rate = per_second(base)[0] if base else None
        ratio = rate / base_rate if rate and base_rate else None
        parts.append(f"{fmt_ratio(ratio)} SQLite NORMAL" if ratio is not None
                     else "no SQLite baseline")
        if min_ratio is not None:
            met &= ratio is not None and ratio >= min_ratio
    if max_ns is not None:
        parts.append(fmt_time(rec["median_ns"]))
        met &= rec["median_ns"] <= max_ns
    return ", ".join(parts), "met" if met else "**not met**"


def targets_table(r):
    out = [
        "## Issue 5's targets in this run",
        "",
        "| target | this run | |",
        "|---|---|---|",
    ]
    for what, key, min_rate, min_ratio, max_ns in TARGETS:
        measured, verdict = target_verdict(r, key, min_rate, min_ratio, max_ns)
        out.append(f"| {what} | {measured} | {verdict} |")
    out.append("")
    return out


def fixtures():
    out = []
    root = TARGET / "bench-stores"
    for complete in sorted(root.glob("*/COMPLETE")):
        fields = dict(l.split("=", 1) for l in complete.read_text().split() if "=" in l)
        out.append(f"- `{complete.parent.name}`: " + ", ".join(f"{k} {v}" for k, v in fields.items()))
    return out


def render(r):
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    times = [rec["mtime"] for rec in r.values()]
    span = ""
    if times:
        fmt = "%Y-%m-%d %H:%M UTC"
        lo = datetime.datetime.fromtimestamp(min(times), datetime.timezone.utc).strftime(fmt)
        hi = datetime.datetime.fromtimestamp(max(times), datetime.timezone.utc).strftime(fmt)
        span = f"{lo} to {hi}"
    out = [
        f"Generated by `benches/report.py` from `target/criterion` (runs {span}, "
        f"commit `{commit}`). Medians; ratios are against SQLite measured in the same "
        "bench process. A ratio above 1 means span-sessions is faster.",
        "",
        "## Ingest",
        "",
        "Per batch: one `append` (one transaction for SQLite) into a fresh store. "
        "MB/s counts encoded span records (10^6 bytes). \"Same promise\": Buffered is "
        "compared with SQLite NORMAL (neither fsyncs a commit), Sync and GroupCommit "
        "with SQLite FULL (both fsync every commit); issue 5's baseline is NORMAL.",
        "",
    ]
    out += ingest_tables(r)
    out += sustained_table(r)
    out += receiver_table(r)
    out += ["## Queries and recovery", ""]
    out += query_table(r)
    fx = fixtures()
    if fx:
        out += ["Stores measured (from `target/bench-stores/*/COMPLETE`):", ""] + fx + [""]
    out += targets_table(r)
    return "\n".join(out)


def main():
    r = load()
    if not r:
        sys.exit(f"no criterion results under {CRITERION}; run cargo bench first")
    text = render(r)
    if "--print" in sys.argv:
        print(text)
        return
    doc = ROOT / "BENCHMARKS.md"
    body = doc.read_text()
    if BEGIN not in body or END not in body:
        sys.exit(f"{doc} lacks the {BEGIN} / {END} markers")
    head, rest = body.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    print(f"updated {doc}")


if __name__ == "__main__":
    main()
