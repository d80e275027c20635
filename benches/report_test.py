#!/usr/bin/env python3
"""Tests of benches/report.py's tables: `python3 benches/report_test.py`.

The verdicts it writes into BENCHMARKS.md say which of issue 5's targets a
run met; these check them on made-up criterion results, read back from
files laid out as criterion writes them. Standard library only.
"""

import json
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402


def spans(n, total_bytes):
    return {"ElementsAndBytes": {"elements": n, "bytes": total_bytes}}


def write_bench(root, group, function, param, median_ns, throughput=None):
    """One bench's result, where criterion puts it."""
    d = Path(root) / "criterion" / group / function / param / "new"
    d.mkdir(parents=True)
    (d / "benchmark.json").write_text(json.dumps({
        "group_id": group, "function_id": function, "value_str": param,
        "throughput": throughput,
    }))
    (d / "estimates.json").write_text(json.dumps({"median": {"point_estimate": median_ns}}))


def rows(r):
    """{target text: (measured, verdict)} of the targets table for results r."""
    out = {}
    for line in report.targets_table(r):
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("target", "---"):
            out[cells[0]] = (cells[1], cells[2])
    return out


def target(prefix):
    return next(t[0] for t in report.TARGETS if t[0].startswith(prefix))


def load(benches):
    """report.load() of made-up results, written where criterion puts them."""
    with tempfile.TemporaryDirectory() as root:
        for b in benches:
            write_bench(root, *b)
        old = report.CRITERION
        report.CRITERION = Path(root) / "criterion"
        try:
            return report.load()
        finally:
            report.CRITERION = old


class TargetsTable(unittest.TestCase):
    def test_verdicts_follow_the_figures(self):
        r = load([
            # 500,000 spans in 0.4 s: 1.25M spans/s, 30x SQLite NORMAL's 12 s.
            ("ingest_sustained", "with_sync_group_commit", "500B", 0.4e9, spans(500_000, 2.6e8)),
            ("ingest_sustained", "sqlite_normal", "500B", 12e9, spans(500_000, 2.6e8)),
            # 1,000 spans in 0.5 ms: 2M spans/s, but only 20x SQLite NORMAL.
            ("ingest_500B", "with_sync_group_commit", "1000", 0.5e6, spans(1000, 5.2e5)),
            ("ingest_500B", "sqlite_normal", "1000", 10e6, spans(1000, 5.2e5)),
            # Exactly 200,000 spans/s meets the floor; no SQLite baseline.
            ("ingest_4KiB", "with_sync_group_commit", "1000", 5e6, spans(1000, 4.1e6)),
            ("history", "span_sessions_full", "100", 50e3),
            ("history", "span_sessions_page100", "10000", 100.5e3),
            ("recovery", "span_sessions", "1024MiB", 1.9e9),
        ])
        t = rows(r)
        sustained = target("~500 B spans, batches of 1,000, group commit, sustained")
        self.assertEqual(t[sustained], ("1.25 M spans/s, 30.0x SQLite NORMAL", "met"))
        bursts = target("~500 B spans, batches of 1,000, group commit, bursts")
        self.assertEqual(t[bursts], ("2.00 M spans/s, 20.0x SQLite NORMAL", "**not met**"))
        kib = target("~4 KiB spans, batches of 1,000, group commit, bursts")
        self.assertEqual(t[kib], ("200.0 k spans/s, no SQLite baseline", "met"))
        missing = target("~4 KiB spans, batches of 1,000, group commit, sustained")
        self.assertEqual(t[missing], ("not in this run", "not measured"))
        self.assertEqual(t[target("`session_history` of 100 turns")], ("50.0 µs", "met"))
        self.assertEqual(t[target("10,000 turns")], ("100.5 µs", "**not met**"))
        self.assertEqual(t[target("reopen with 1 GiB")], ("1.90 s", "met"))

    def test_a_rate_below_its_floor_is_not_met(self):
        r = load([
            # 25x SQLite NORMAL, but 999,000 spans/s.
            ("ingest_sustained", "with_sync_group_commit", "500B", 1e9 / 999, spans(1000, 5.2e5)),
            ("ingest_sustained", "sqlite_normal", "500B", 25e9 / 999, spans(1000, 5.2e5)),
        ])
        measured, verdict = rows(r)[target("~500 B spans, batches of 1,000, group commit, sustained")]
        self.assertEqual(verdict, "**not met**")
        self.assertIn("999.0 k spans/s", measured)
        self.assertIn("25.0x", measured)

    def test_the_table_ends_the_generated_section(self):
        r = load([("history", "span_sessions_full", "100", 30e3)])
        text = report.render(r)
        self.assertIn("## Issue 5's targets in this run", text)
        self.assertTrue(text.rstrip().endswith("| not in this run | not measured |"))



class ReceiverTable(unittest.TestCase):
    def test_each_path_is_a_ratio_to_the_in_process_export(self):
        r = load([
            ("receiver_otlp_http_500B", "in_process_export", "512", 0.25e9, spans(100_000, 5.2e7)),
            ("receiver_otlp_http_500B", "http_protobuf", "512", 0.5e9, spans(100_000, 5.2e7)),
            ("receiver_otlp_http_500B", "http_json", "512", 1e9, spans(100_000, 5.2e7)),
        ])
        lines = [l for l in report.receiver_table(r) if l.startswith("| 512 ")]
        cells = [[c.strip() for c in l.strip("|").split("|")] for l in lines]
        # The baseline first, then the paths over HTTP in a fixed order.
        self.assertEqual([c[2] for c in cells], [
            "*`otlp::export` in process*", "`serve`, protobuf", "`serve`, OTLP/JSON"])
        self.assertEqual(cells[0][3:], ["250.00 ms", "400.0 k", "208.0", "1.0x"])
        self.assertEqual(cells[1][3:], ["500.00 ms", "200.0 k", "104.0", "0.5x"])
        self.assertEqual(cells[2][1], "100,000")
        self.assertEqual(cells[2][3:], ["1.00 s", "100.0 k", "52.0", "0.2x"])

    def test_no_results_no_table(self):
        r = load([("history", "span_sessions_full", "100", 30e3)])
        self.assertEqual(report.receiver_table(r), [])
        self.assertNotIn("receiver_otlp_http", report.render(r))

if __name__ == "__main__":
    unittest.main()
