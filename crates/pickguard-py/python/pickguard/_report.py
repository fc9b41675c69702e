"""Scan reports: the same fields as ``pickguard scan --format json``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class Location:
    """Where a finding is."""

    #: Archive member (``archive/data.pkl``; nested members joined by ``!``).
    member: Optional[str] = None
    #: Index of the pickle stream in the file or member.
    stream: Optional[int] = None
    #: Byte offset (in the member's bytes when ``member`` is set).
    offset: Optional[int] = None
    #: The reading of the bytes in which this was seen, when it matters.
    view: Optional[str] = None

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> "Location":
        view = d.get("view")
        return cls(
            member=d.get("member"),
            stream=d.get("stream"),
            offset=d.get("offset"),
            view=view if view is None or isinstance(view, str) else str(view),
        )


@dataclass(frozen=True)
class Finding:
    """One finding: ``pickguard rules RULE_ID`` explains the rule."""

    #: Full rule name, e.g. ``PG101-dangerous-global``.
    rule: str
    #: ``critical``, ``high``, ``medium``, ``low`` or ``info``.
    severity: str
    message: str
    location: Location
    #: The global concerned, ``module.name``.
    global_name: Optional[str] = None
    #: Readable call chains, e.g. ``posix.system('id')``.
    calls: tuple[str, ...] = ()

    @property
    def rule_id(self) -> str:
        """The short rule id, e.g. ``PG101``."""
        return self.rule.split("-", 1)[0]

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> "Finding":
        return cls(
            rule=d["rule"],
            severity=d["severity"],
            message=d["message"],
            location=Location._from_dict(d.get("location") or {}),
            global_name=d.get("global"),
            calls=tuple(d.get("calls") or ()),
        )


@dataclass(frozen=True)
class GlobalUse:
    """A global the file imports, with its judgement."""

    module: str
    name: str
    #: ``allowed``, ``dangerous``, ``stdlib-gadget``, ``library``...
    klass: str
    imports: int
    calls: int
    first: Location

    @property
    def qualified(self) -> str:
        return f"{self.module}.{self.name}"

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> "GlobalUse":
        return cls(
            module=d["module"],
            name=d["name"],
            klass=d["class"],
            imports=d["imports"],
            calls=d["calls"],
            first=Location._from_dict(d.get("first") or {}),
        )


@dataclass(frozen=True)
class Report:
    """Everything pickguard says about one file.

    ``verdict`` is one of ``clean``, ``needs-trust``, ``malicious``,
    ``inconclusive`` (part of the file could not be analysed: never treat as
    clean) and ``error`` (the file could not be read).
    """

    path: str
    format: str
    verdict: str
    size: int
    findings: tuple[Finding, ...] = ()
    globals: tuple[GlobalUse, ...] = ()
    tensors: Optional[int] = None
    streams: int = 0
    error: Optional[str] = None
    _raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def clean(self) -> bool:
        """True only for the verdict ``clean``."""
        return self.verdict == "clean"

    @property
    def malicious(self) -> bool:
        return self.verdict == "malicious"

    @property
    def rule_ids(self) -> list[str]:
        """Short ids of the findings, in order, without repeats."""
        out: list[str] = []
        for f in self.findings:
            if f.rule_id not in out:
                out.append(f.rule_id)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The report as ``pickguard scan --format json`` writes it."""
        return dict(self._raw)

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> "Report":
        return cls(
            path=d["path"],
            format=d["format"],
            verdict=d["verdict"],
            size=d["size"],
            findings=tuple(Finding._from_dict(f) for f in d.get("findings") or ()),
            globals=tuple(GlobalUse._from_dict(g) for g in d.get("globals") or ()),
            tensors=d.get("tensors"),
            streams=d.get("streams", 0),
            error=d.get("error"),
            _raw=d,
        )
