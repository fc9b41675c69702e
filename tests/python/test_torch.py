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

    def test_shared_values_cannot_expand_exponentially(self):
        import tempfile
        a = [1.5]
        for _ in range(24):
            a = [a, a]  # 1.4 KB on disk, 2**24 values once expanded
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "amp.pt")
            torch.save({"x": a}, path)
            with watched(self), self.assertRaises(pickguard.UnsupportedError):
                pickguard.load(path)

    def test_keys_that_would_collide_are_refused_not_dropped(self):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "k.pt")
            torch.save({1: torch.arange(3.0), "1": torch.ones(2)}, path)
            with self.assertRaises(pickguard.UnsupportedError):
                pickguard.load(path)
            torch.save({2**70: 1, 2**71: 2}, path)
            with self.assertRaises(pickguard.UnsupportedError):
                pickguard.load(path)
            torch.save({0: torch.ones(1), 1: torch.zeros(1)}, path)
            got = pickguard.load(path)
            self.assertEqual(sorted(got), ["0", "1"])

    def test_legacy_views_follow_torchs_view_cache(self):
        """A legacy checkpoint caches a storage view by its key: the first
        reference decides offset and size for every later one."""
        import collections
        import io
        import pickle
        import struct
        import tempfile

        class Ref:
            def __init__(self, pid):
                self.pid = pid

        class Call:
            def __init__(self, f, args):
                self.f, self.args = f, args

            def __reduce__(self):
                return (self.f, self.args)

        class P(pickle.Pickler):
            def persistent_id(self, o):
                return o.pid if isinstance(o, Ref) else None

        def tensor(view, size):
            st = Ref(("storage", torch.DoubleStorage, "0", "cpu", 4, view))
            return Call(torch._utils._rebuild_tensor_v2,
                        (st, 0, (size,), (1,), False, collections.OrderedDict()))

        def legacy(path, obj):
            out = io.BytesIO()
            for x in (0x1950A86A20F9469CFC6C, 1001,
                      dict(protocol_version=1001, little_endian=True,
                           type_sizes=dict(short=2, int=4, long=4))):
                pickle.dump(x, out, protocol=2)
            P(out, protocol=2).dump(obj)
            pickle.dump(["0"], out, protocol=2)
            out.write(struct.pack("<q", 4))
            out.write(struct.pack("<4d", 0.0, 1.0, 2.0, 3.0))
            with open(path, "wb") as f:
                f.write(out.getvalue())

        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "views.pt")
            legacy(path, {"a": tensor(("v", 1, 2), 2), "b": tensor(("v", 2, 2), 2)})
            theirs = torch.load(path, weights_only=True)
            ours = pickguard.load(path)
            for k in ("a", "b"):
                # torch copies a view into a storage of its own (offset 0);
                # pickguard views the root storage: same values and layout.
                fo, ft = fingerprint(ours[k]), fingerprint(theirs[k])
                fo.pop("offset"), ft.pop("offset")
                self.assertEqual(fo, ft, k)
            # A tensor larger than its view: torch refuses, so must pickguard.
            legacy(path, {"a": tensor(("v", 1, 1), 3)})
            with self.assertRaises(Exception):
                torch.load(path, weights_only=True)
            with self.assertRaises(pickguard.PickguardError):
                pickguard.load(path)

    def test_deep_nesting_is_a_format_error_not_a_recursion_error(self):
        import tempfile
        deep = {"w": torch.ones(2)}
        for _ in range(300):
            deep = {"d": deep}
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "deep.pt")
            torch.save(deep, path)
            with self.assertRaises(pickguard.FormatError):
                pickguard.load(path)
            shallow = {"w": torch.ones(2)}
            for _ in range(50):
                shallow = {"d": shallow}
            torch.save(shallow, path)
            got = pickguard.load(path)
            for _ in range(50):
                got = got["d"]
            self.assertTrue(torch.equal(got["w"], torch.ones(2)))

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
