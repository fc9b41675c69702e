#!/usr/bin/env python3
"""Fail when a crate declares a dependency its code never names.

The check cargo-machete makes, without installing it: every name in a
crate's [dependencies] (and [dev-dependencies], against its tests, benches
and examples too) must appear in its sources as `name::`, `use name` or
`extern crate name` (dashes as underscores). A dependency used only for its
side effects (a feature switch, a linker input) is listed in IGNORED with
the reason.
"""
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
# crate -> {dependency: why it is needed without being named}
IGNORED = {
    "pickguard": {"libbpf-sys": "links the static libbpf watch needs (feature switch)"},
}


def sources(crate_dir, dev):
    dirs = ["src", "build.rs"] + (["tests", "benches", "examples"] if dev else [])
    for d in dirs:
        p = crate_dir / d
        if p.is_file():
            yield p
        elif p.is_dir():
            yield from p.rglob("*.rs")


def main():
    bad = []
    for manifest in sorted((ROOT / "crates").glob("*/Cargo.toml")):
        doc = tomllib.loads(manifest.read_text())
        crate = doc["package"]["name"]
        ignored = IGNORED.get(crate, {})
        for section, dev in (("dependencies", False), ("build-dependencies", False), ("dev-dependencies", True)):
            deps = doc.get(section, {})
            if not deps:
                continue
            text = "\n".join(p.read_text(errors="replace") for p in sources(manifest.parent, dev))
            for name, spec in deps.items():
                real = spec.get("package", name) if isinstance(spec, dict) else name
                ident = name.replace("-", "_")
                if name in ignored or real in ignored:
                    continue
                if not re.search(rf"\b{re.escape(ident)}(::|\s*[;{{,]|!)|use\s+{re.escape(ident)}\b|extern crate {re.escape(ident)}\b", text):
                    bad.append(f"{manifest.relative_to(ROOT)}: [{section}] {name} is never used")
    for b in bad:
        print(b, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
