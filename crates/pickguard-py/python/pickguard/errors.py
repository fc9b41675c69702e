"""Exceptions raised by pickguard. All derive from :class:`PickguardError`."""

from __future__ import annotations

import json
from typing import Any, Optional


class PickguardError(Exception):
    """Something pickguard could not do (bad input, unreadable policy...)."""


class InternalError(PickguardError):
    """A bug in pickguard (a Rust panic, caught before it reached Python)."""


class RefusedError(PickguardError):
    """The file is not pure tensor data: loading it would run code.

    Nothing was executed and nothing was loaded. ``report`` is the scan
    report; ``findings`` its findings (rule id, global, offset, call chain).
    """

    def __init__(self, message: str, report_json: Optional[str] = None) -> None:
        super().__init__(message)
        from ._report import Report

        self.report: Optional[Report] = (
            Report._from_dict(json.loads(report_json)) if report_json else None
        )

    @property
    def findings(self) -> list[Any]:
        return list(self.report.findings) if self.report else []

    @property
    def globals(self) -> list[str]:
        """The globals (``module.name``) that loading would call or import."""
        seen: list[str] = []
        for f in self.findings:
            if f.global_name and f.global_name not in seen:
                seen.append(f.global_name)
        return seen


class FormatError(PickguardError):
    """The file is malformed, or not a format this function reads."""


class UnsupportedError(PickguardError):
    """The file is valid but uses something pickguard does not rebuild
    (a big-endian checkpoint, a dtype NumPy has no type for...)."""

    def __init__(self, message: str, offset: Optional[int] = None) -> None:
        super().__init__(message)
        self.offset = offset


class VerificationError(PickguardError):
    """The signature could not be checked at all (unreadable bundle, bad key).

    A signature that is checked and does not match is not an exception:
    :func:`pickguard.verify` returns a report whose ``ok`` is False.
    """


class ConversionError(PickguardError):
    """At least one checkpoint was refused or failed to convert.

    ``outcomes`` holds every outcome, the successful ones included.
    """

    def __init__(self, message: str, outcomes: list[Any]) -> None:
        super().__init__(message)
        self.outcomes = outcomes
