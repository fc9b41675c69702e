"""The ``pickguard`` console script of the wheel: the Rust command line,
run in this process."""

from __future__ import annotations

import signal
import sys


def main() -> None:
    # The Rust code does not return to the interpreter while it runs, so
    # Python's SIGINT handler would only fire afterwards: restore the default
    # action, as the native binary has (Ctrl-C ends it at once). SIGPIPE
    # stays ignored, as in the binary: a closed pipe is handled as an error
    # the command line reports (`pickguard scan | head` ends quietly).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    from . import _native

    sys.stdout.flush()
    code = _native.cli(["pickguard", *sys.argv[1:]])
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
