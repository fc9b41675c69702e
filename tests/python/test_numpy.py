"""pickguard.load(backend="numpy") in a venv without torch, checked bit for
bit against the fingerprints test_torch.py took from torch.load."""

import hashlib
import json
import os
import unittest

import numpy as np

import pickguard
from _common import CASES, CORPUS, REFS, flatten, manifest, watched

NO_NUMPY_TYPE = {"bfloat16", "float8_e4m3fn", "float8_e5m2"}
NUMPY_NAME = {"bool": "bool", "complex64": "complex64"}


class NumpyBackend(unittest.TestCase):
    def test_torch_is_not_installed(self):
        with self.assertRaises(ImportError):
            import torch  # noqa: F401

    def test_matches_torch_fingerprints(self):
        with open(REFS) as f:
            refs = json.load(f)
        self.assertGreater(len(refs), 10)
        checked = 0
        for key, tensors in sorted(refs.items()):
            path = os.path.join(os.environ["PICKGUARD_WORK"], key) if key.startswith("cases/") else os.path.join(CORPUS, key)
            with self.subTest(file=key):
                if any(t["dtype"] in NO_NUMPY_TYPE for t in tensors.values()):
                    with watched(self), self.assertRaises(pickguard.UnsupportedError):
                        pickguard.load(path, backend="numpy")
                    continue
                with watched(self):
                    ours = dict(flatten(pickguard.load(path, backend="numpy")))
                for name, ref in tensors.items():
                    a = ours[name]
                    self.assertIsInstance(a, np.ndarray, name)
                    self.assertEqual(a.dtype.name, NUMPY_NAME.get(ref["dtype"], ref["dtype"]), name)
                    self.assertEqual(list(a.shape), ref["shape"], name)
                    self.assertEqual([st // a.itemsize for st in a.strides], ref["strides"], name)
                    raw = np.ascontiguousarray(a).tobytes()
                    self.assertEqual(hashlib.sha256(raw).hexdigest(), ref["sha256"], f"{key}: {name}")
                    checked += 1
        self.assertGreater(checked, 20)

    def test_arrays_share_memory_like_the_checkpoint(self):
        # views.pt (convert_cases.py): views of one storage, and a tied name.
        out = pickguard.load(os.path.join(CASES, "views.pt"), backend="numpy")
        base = out["base"]
        for name in ("transposed", "slice_offset", "step", "row", "tied_a"):
            self.assertTrue(np.shares_memory(base, out[name]), name)
        self.assertFalse(np.shares_memory(base, out["expanded"]))
        self.assertTrue(base.flags.writeable)
        base[0, 0] = 1234.5
        self.assertEqual(out["tied_a"][0, 0], 1234.5)
        self.assertEqual(out["transposed"][0, 0], 1234.5)

    def test_unsafe_fixtures_refused_without_torch_too(self):
        n = 0
        for f in manifest():
            if f["expect"] == "clean":
                continue
            with self.subTest(fixture=f["name"]), watched(self):
                with self.assertRaises(pickguard.PickguardError):
                    pickguard.load(os.path.join(CORPUS, f["name"]), backend="numpy")
            n += 1
        self.assertGreater(n, 80)

    def test_map_location_is_for_torch(self):
        with self.assertRaises(ValueError):
            pickguard.load(os.path.join(CORPUS, "ok-torch-state-dict.pt"), backend="numpy", map_location="cuda:0")


class Scan(unittest.TestCase):
    def test_every_fixture_gets_its_verdict(self):
        for f in manifest():
            with self.subTest(fixture=f["name"]), watched(self):
                r = pickguard.scan(os.path.join(CORPUS, f["name"]))
                self.assertEqual(r.verdict, f["expect"])
                for rule in f["rules"]:
                    self.assertIn(rule.split("-", 1)[0], r.rule_ids)

    def test_bytes_scan_like_the_file(self):
        for f in manifest():
            if f["name"].endswith((".onnx", ".data")):
                continue  # external data is judged beside the file
            path = os.path.join(CORPUS, f["name"])
            with open(path, "rb") as fh:
                data = fh.read()
            with self.subTest(fixture=f["name"]):
                self.assertEqual(pickguard.scan(data, name=f["name"]).verdict, f["expect"])
                self.assertEqual(pickguard.scan(memoryview(data)).verdict, f["expect"])

    def test_a_bytes_path_is_not_scanned_as_content(self):
        path = os.path.join(CORPUS, "mal-append-sys-path.pkl")
        with self.assertRaises(TypeError):
            pickguard.scan(os.fsencode(path))

    def test_directory_is_an_iterator_of_every_file(self):
        reports = list(pickguard.scan(CORPUS))
        self.assertEqual(len(reports), len(os.listdir(CORPUS)))
        self.assertTrue(all(isinstance(r, pickguard.Report) for r in reports))
        self.assertEqual(sum(r.malicious for r in reports), sum(f["expect"] == "malicious" for f in manifest()))

    def test_policy_allow_and_errors(self):
        path = os.path.join(CORPUS, "trust-third-party-class.pkl")
        r = pickguard.scan(path)
        self.assertEqual(r.verdict, "needs-trust")
        g = [x.qualified for x in r.globals if x.klass != "allowed"]
        self.assertTrue(g)
        self.assertEqual(pickguard.scan(path, allow=g).verdict, "clean")
        with self.assertRaises(pickguard.PickguardError):
            pickguard.scan(path, allow=["nodot"])
        with self.assertRaises(TypeError):
            pickguard.scan(path, allow="a.b")
        with self.assertRaises(pickguard.PickguardError):
            pickguard.scan(path, policy="/nonexistent/policy.toml")
        with self.assertRaises(ValueError):
            pickguard.scan(path, timeout=0)

    def test_missing_file_is_an_error_report_not_clean(self):
        r = pickguard.scan("/nonexistent/model.pt")
        self.assertEqual(r.verdict, "error")
        self.assertFalse(r.clean)
        self.assertTrue(r.error)


class ConvertHashVerify(unittest.TestCase):
    def test_convert_then_hash(self):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "m.safetensors")
            [c] = pickguard.convert(os.path.join(CORPUS, "ok-torch-state-dict.pt"), out)
            self.assertEqual(c.status, "converted")
            self.assertGreater(c.tensors, 0)
            self.assertTrue(os.path.isfile(out))
            m = pickguard.hash(out)
            self.assertEqual(len(m.root_digest), 64)
            with open(out, "rb") as fh:
                self.assertEqual(m.resources[0][1], hashlib.sha256(fh.read()).hexdigest())
            with self.assertRaises(pickguard.ConversionError) as cm:
                pickguard.convert(os.path.join(CORPUS, "mal-append-sys-path.pkl"), os.path.join(d, "x.safetensors"))
            self.assertEqual(cm.exception.outcomes[0].status, "refused")
            self.assertFalse(os.path.exists(os.path.join(d, "x.safetensors")))
            with self.assertRaises(ValueError):
                pickguard.verify(out, out)


if __name__ == "__main__":
    unittest.main()
