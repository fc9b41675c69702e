"""Shared by the Python API tests (scripts/test-wheel.sh runs them)."""

import contextlib
import json
import os
import sys
import tempfile

ROOT = os.environ["PICKGUARD_ROOT"]
WORK = os.environ["PICKGUARD_WORK"]
CORPUS = os.path.join(ROOT, "fixtures", "corpus")
CASES = os.path.join(WORK, "cases")
REFS = os.path.join(WORK, "refs.json")

# Audit events that mean a process was started, a connection made, or an
# unpickler looked up a global: none may fire while pickguard loads or scans
# anything. (exec, compile and marshal.loads also fire for ordinary imports,
# which torch makes lazily; a payload that gets that far is caught by the
# marker file every malicious fixture's payload writes.)
FORBIDDEN = {
    "os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn",
    "os.fork", "os.forkpty", "pickle.find_class", "socket.connect", "ctypes.dlopen",
    "os.remove", "shutil.rmtree", "urllib.Request",
}
_seen = []
_armed = [False]


def _hook(event, args):
    if _armed[0] and event in FORBIDDEN:
        _seen.append((event, repr(args)[:200]))


sys.addaudithook(_hook)


@contextlib.contextmanager
def watched(test):
    """Run the body in an empty directory (fixture payloads touch
    ./pickguard-marker) and fail the test if a forbidden event fired or the
    marker appeared."""
    old = os.getcwd()
    with tempfile.TemporaryDirectory() as d:
        os.chdir(d)
        _seen.clear()
        _armed[0] = True
        try:
            yield
        finally:
            _armed[0] = False
            os.chdir(old)
            marker = os.path.exists(os.path.join(d, "pickguard-marker"))
        test.assertEqual(_seen, [], "code ran while pickguard read the file")
        test.assertFalse(marker, "the fixture's payload ran")


def manifest():
    with open(os.path.join(CORPUS, "manifest.json")) as f:
        return json.load(f)["fixtures"]


def cases():
    with open(os.path.join(CASES, "cases.json")) as f:
        return json.load(f)


def flatten(tree, prefix=""):
    """(dotted path, leaf) pairs of nested dicts/lists/tuples."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from flatten(v, f"{prefix}.{i}" if prefix else str(i))
    else:
        yield prefix, tree
