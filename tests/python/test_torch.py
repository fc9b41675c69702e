"""pickguard.load against torch.load(weights_only=True), with real torch,
on checkpoints made by torch.save (fixtures/gen/convert_cases.py) and on the
fixture corpus. Writes the tensors' fingerprints for test_numpy.py."""

import hashlib
import json
import math
import os
import unittest

import torch

import pickguard
from _common import CASES, CORPUS, REFS, cases, flatten, manifest, watched


def fingerprint(t):
    raw = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return {
        "dtype": str(t.dtype).removeprefix("torch."),
        "shape": list(t.shape),
        "strides": list(t.stride()),
        "offset": t.storage_offset(),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }


def same_value(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def torch_accepts(path):
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception:
        return None


class LoadMatchesTorch(unittest.TestCase):
    refs = {}

    @classmethod
    def tearDownClass(cls):
        with open(REFS, "w") as f:
            json.dump(cls.refs, f, indent=1, sort_keys=True)

    def compare(self, path, weights_only=True):
        with watched(self):
            ours = pickguard.load(path)
        # weights_only=False only for checkpoints this test suite made itself.
        theirs = torch.load(path, weights_only=weights_only, map_location="cpu")
        a, b = dict(flatten(ours)), dict(flatten(theirs))
        self.assertEqual(sorted(a), sorted(b), f"{path}: different names")
        refs = {}
        groups_ours, groups_theirs = {}, {}
        for name, x in b.items():
            y = a[name]
            if isinstance(x, torch.Tensor):
                self.assertIsInstance(y, torch.Tensor, f"{path}: {name}")
                fx, fy = fingerprint(x), fingerprint(y)
                self.assertEqual(fy, fx, f"{path}: {name} differs")
                refs[name] = fx
                groups_theirs.setdefault(x.untyped_storage().data_ptr(), set()).add(name)
                groups_ours.setdefault(y.untyped_storage().data_ptr(), set()).add(name)
            else:
                self.assertTrue(same_value(y, x), f"{path}: {name}: {y!r} != {x!r}")
        # Tensors that share storage in torch share it in pickguard's result.
        self.assertEqual(
            sorted(map(sorted, groups_ours.values())),
            sorted(map(sorted, groups_theirs.values())),
            f"{path}: storage sharing differs",
        )
        self.refs[os.path.relpath(path, os.environ["PICKGUARD_WORK"])
                  if path.startswith(os.environ["PICKGUARD_WORK"]) else os.path.basename(path)] = refs
        return len(refs)

    def test_torch_save_cases(self):
        n = 0
        files = [(c["name"], c["expect"]) for c in cases()]
        shards = os.path.join(CASES, "sharded")
        files += [(f"sharded/{f}", "ok") for f in sorted(os.listdir(shards)) if f.endswith(".bin")]
        for name, expect in files:
            path = os.path.join(CASES, name)
            if not os.path.isfile(path) or path.endswith((".npz", ".npy")):
                continue
            with self.subTest(case=name):
                if expect == "refused":
                    with watched(self), self.assertRaises(pickguard.RefusedError):
                        pickguard.load(path)
                    continue
                # Made here by torch.save: trusted, so compared with the full
                # unpickler where weights_only refuses (pickle protocol 4).
                self.compare(path, weights_only=torch_accepts(path) is not None)
                n += 1
        self.assertGreaterEqual(n, 8, "too few torch.save cases compared")

    def test_clean_corpus_fixtures_torch_accepts(self):
        n = 0
        for f in manifest():
            path = os.path.join(CORPUS, f["name"])
            if f["expect"] != "clean":
                continue
            if torch_accepts(path) is not None:
                with self.subTest(fixture=f["name"]):
                    self.compare(path)
                    n += 1
        self.assertGreaterEqual(n, 3)

    def test_every_unsafe_fixture_raises_without_running(self):
        n = 0
        for f in manifest():
            if f["expect"] == "clean":
                continue
            path = os.path.join(CORPUS, f["name"])
            with self.subTest(fixture=f["name"]):
                with watched(self), self.assertRaises(pickguard.PickguardError):
                    pickguard.load(path)
                n += 1
        self.assertGreater(n, 80)

    def test_refusal_names_global_and_offset(self):
        with self.assertRaises(pickguard.RefusedError) as cm:
            pickguard.load(os.path.join(CORPUS, "mal-append-sys-path.pkl"))
        e = cm.exception
        self.assertEqual(e.globals, ["sys.path"])
        self.assertEqual(e.findings[0].rule_id, "PG101")
        self.assertEqual(e.findings[0].location.offset, 2)
        self.assertIn("sys.path", str(e))
        self.assertEqual(e.report.verdict, "malicious")

    def test_map_location_keeps_sharing_and_key_selects(self):
        path = os.path.join(CORPUS, "ok-torch-training-checkpoint.pt")
        full = pickguard.load(path, map_location=torch.device("cpu"))
        theirs = torch.load(path, weights_only=True)
        key = next(k for k, v in theirs.items() if isinstance(v, dict))
        sub = pickguard.load(path, key=key)
        self.assertEqual(sorted(sub), sorted(full[key]))
        with self.assertRaises(KeyError):
            pickguard.load(path, key="no.such.key")
        with self.assertRaises(TypeError):
            pickguard.load(path, map_location={"cuda:0": "cpu"})

    def test_bad_input_is_an_exception_not_a_crash(self):
        with self.assertRaises(FileNotFoundError):
            pickguard.load("/nonexistent/model.pt")
        with self.assertRaises((OSError, pickguard.PickguardError)):
            pickguard.load(CORPUS)
        with self.assertRaises(pickguard.FormatError):
            pickguard.load(os.path.join(CORPUS, "ok-gguf-chatml.gguf"))
        with self.assertRaises(ValueError):
            pickguard.load(os.path.join(CORPUS, "ok-torch-state-dict.pt"), backend="jax")


if __name__ == "__main__":
    unittest.main()
