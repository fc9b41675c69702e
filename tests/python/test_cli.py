"""The `pickguard` command the wheel installs, in a venv without Rust."""

import json
import os
import shutil
import subprocess
import sys
import unittest

import pickguard
from _common import CORPUS, manifest


def run(*args):
    return subprocess.run(["pickguard", *args], capture_output=True, text=True, timeout=300)


class WheelCli(unittest.TestCase):
    def test_no_rust_toolchain_here(self):
        self.assertIsNone(shutil.which("cargo"))
        self.assertIsNone(shutil.which("rustc"))

    def test_command_is_the_wheels(self):
        exe = shutil.which("pickguard")
        self.assertTrue(exe and exe.startswith(sys.prefix), exe)
        r = run("--version")
        self.assertEqual(r.returncode, 0)
        self.assertEqual(r.stdout.strip(), f"pickguard {pickguard.__version__}")

    def test_scans_the_corpus_with_the_right_verdicts(self):
        r = run("scan", CORPUS, "--format", "json")
        self.assertEqual(r.returncode, 1, r.stderr)  # malicious files present
        doc = json.loads(r.stdout)
        got = {os.path.basename(f["path"]): f["verdict"] for f in doc["files"]}
        for f in manifest():
            self.assertEqual(got.get(f["name"]), f["expect"], f["name"])

    def test_exit_statuses(self):
        self.assertEqual(run("scan", os.path.join(CORPUS, "ok-torch-state-dict.pt")).returncode, 0)
        self.assertEqual(run("scan", os.path.join(CORPUS, "mal-append-sys-path.pkl")).returncode, 1)
        self.assertEqual(run("scan", "/nonexistent").returncode, 2)
        self.assertEqual(run("no-such-command").returncode, 2)
        r = run("rules", "PG101")
        self.assertEqual(r.returncode, 0)
        self.assertIn("PG101", r.stdout)

    def test_python_dash_m(self):
        r = subprocess.run([sys.executable, "-m", "pickguard", "--version"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0)
        self.assertIn(pickguard.__version__, r.stdout)

    def test_closed_pipe_is_quiet(self):
        r = subprocess.run(f"pickguard scan {CORPUS} | head -c 10", shell=True, capture_output=True, text=True)
        self.assertEqual(r.stderr, "")

    def test_watch_says_why_it_cannot_run(self):
        r = run("watch")
        self.assertEqual(r.returncode, 2)
        self.assertIn("without the eBPF program", r.stderr)

    def test_completions_and_man(self):
        for shell in ("bash", "zsh", "fish"):
            r = run("completions", shell)
            self.assertEqual(r.returncode, 0)
            self.assertIn("scan", r.stdout)
        r = run("man")
        self.assertEqual(r.returncode, 0)
        self.assertTrue(r.stdout.startswith(".ie"), r.stdout[:40])
        self.assertIn(".SH NAME", r.stdout)


if __name__ == "__main__":
    unittest.main()
