"""benches/plot.py: the numbers it plots are the ones in benches/results/*.md (the committed
benches/results/plot-data.json is what a fresh extraction gives), and it writes readable PNGs."""
import importlib.util
import json
import struct
import subprocess
import sys
import tempfile
import unittest
import pathlib

from common import ROOT

try:
    import matplotlib  # noqa: F401
except ImportError:  # pragma: no cover
    matplotlib = None

PLOT = ROOT / "benches" / "plot.py"
PLOTS = ("load", "cache", "semantic", "budgets", "savings")


def load_plot():
    spec = importlib.util.spec_from_file_location("bench_plot", PLOT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def png_size(path):
    """(width, height) from the IHDR chunk; raises unless the file is a PNG."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise AssertionError(f"{path} is not a PNG")
    if not data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82"):
        raise AssertionError(f"{path}: truncated PNG")
    return struct.unpack(">II", data[16:24])


class ExtractionTest(unittest.TestCase):
    """Extraction needs only the standard library."""

    def test_committed_data_matches_the_markdown(self):
        committed = json.loads((ROOT / "benches" / "results" / "plot-data.json").read_text())
        self.assertEqual(load_plot().extract(), committed,
                         "benches/results/*.md changed since the plots were drawn: run `make plots`")

    def test_numbers_are_the_tables(self):
        d = load_plot().extract()
        load = {(r["prompt"], r["envoy"]): r for r in d["load"]["rows"]}
        self.assertEqual(12, len(load))
        self.assertEqual(30744, load[("2 KB en+code", "no filter")]["req_s"])
        self.assertEqual(2666, load[("32 KB multilingual", "Tollgate, defaults")]["req_s"])
        admit = {(r["entries"], r["c"]): r for r in d["cache_admit"]["rows"]}
        self.assertEqual({"p50": 8.8, "p99": 15.9}, admit[("100k", 1)]["semantic_miss_ms"])
        self.assertEqual({"p50": 0.026, "p99": 0.055}, admit[("10k", 1)]["exact_hit_ms"])
        e2e = [r for r in d["cache_e2e"]["rows"] if r["path"] == "exact hit"]
        self.assertEqual([0.33, 0.31], [r["p50_ms"] for r in e2e])
        sem = d["semantic"]["sets"]
        self.assertLessEqual({"holdout2", "holdout", "test"}, set(sem))
        at95 = next(r for r in sem["test"] if r["threshold"] == 0.95)
        self.assertEqual((36.7, 0.0), (at95["hit_rate_guards"], at95["false_hits_guards"]))
        budgets = d["budgets"]["rows"]
        self.assertGreaterEqual(len(budgets), 30)
        self.assertEqual({"embedded", "redis"}, {r["backend"] for r in budgets})
        self.assertLessEqual({10, 1000, 10000}, {r["scopes"] for r in budgets})
        fixed = next(r for r in d["budgets_fixes"]["rows"]
                     if (r["backend"], r["scopes"], r["c"]) == ("redis", 10000, "open 500/s"))
        self.assertEqual((1401.78, 3.027, 3939, 0), (fixed["admit_p99_ms_before"], fixed["admit_p99_ms_after"],
                                                     fixed["errors_before"], fixed["errors_after"]))
        savings = {r["name"]: r for r in d["savings"]["rows"]}
        self.assertEqual(0.528, savings["A: no routing (gpt-4o for all)"]["cost_usd"])
        self.assertTrue(any(r["kind"] == "policy" and r["saved"] for r in savings.values()))


@unittest.skipIf(matplotlib is None, "matplotlib not installed (scripts/requirements.txt; make setup)")
class PlotScriptTest(unittest.TestCase):
    def test_writes_pngs(self):
        with tempfile.TemporaryDirectory() as tmp:
            out, data = pathlib.Path(tmp, "plots"), pathlib.Path(tmp, "data.json")
            subprocess.run([sys.executable, str(PLOT), "--out", str(out), "--data", str(data)], check=True,
                           capture_output=True, timeout=300)
            for name in PLOTS:
                with self.subTest(plot=name):
                    w, h = png_size(out / f"{name}.png")
                    self.assertGreaterEqual(w, 800)
                    self.assertGreaterEqual(h, 300)
            self.assertEqual(json.loads((ROOT / "benches" / "results" / "plot-data.json").read_text()),
                             json.loads(data.read_text()))

    def test_committed_pngs(self):
        for name in PLOTS:
            with self.subTest(plot=name):
                png_size(ROOT / "benches" / "results" / "plots" / f"{name}.png")


if __name__ == "__main__":
    unittest.main()
