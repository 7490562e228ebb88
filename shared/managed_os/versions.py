"""The macOS version and build model. Pure: no I/O.

Version text comes in three spellings that mean the same thing:
- Apple's feeds (gdmf `ProductVersion`, SOFA): `26.3.1`, `26.0`, sometimes a bare `14`;
- with a Background Security Improvement (BSI): `26.3.1 (a)` as shown by `sw_vers` and in
  `mdm/errors/softwareupdate.required.yaml` (`OSVersion`), where gdmf splits it into
  `ProductVersion` `26.3.1` + `ProductVersionExtra` `(a)` and DDM status reports the letter alone
  (`device.operating-system.supplemental.extra-version` = `a`).

`OSVersion` normalises all of them. At most three numeric parts are accepted: macOS has never
shipped a four-part version, and a fourth part almost always means a build, a model number or a
typo slipped into a version field.

Build strings (`25D2128`, `25D771280a`) are modelled by `Build`. A BSI's build is not its base
build plus a letter (`25D2128` -> `25D771280a`), and the build's suffix letter is not the BSI
letter (13.4.1 (a) is `22F770820b`), so never derive one from the other.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, total_ordering
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

__all__ = [
    "MAJOR_NAMES",
    "Build",
    "OSVersion",
    "VersionError",
    "darwin_major_to_macos",
    "macos_to_darwin_major",
    "major_name",
    "normalize_extra",
    "parse_build",
    "parse_version",
]


class VersionError(ValueError):
    """A macOS version or build string that cannot be parsed; the message names the input."""


# [0-9] rather than \d: \d also matches non-ASCII digits such as "٢٦".
_NUM = r"(?:0|[1-9][0-9]{0,5})"
_VERSION_RE = re.compile(
    rf"(?P<major>{_NUM})(?:\.(?P<minor>{_NUM}))?(?:\.(?P<patch>{_NUM}))?"
    r"(?:\s*\((?P<extra>[a-z])\))?"
)
_EXTRA_RE = re.compile(r"\(?([a-z])\)?")
_BUILD_RE = re.compile(
    r"(?P<train>[1-9][0-9]?)(?P<letter>[A-Z])(?P<number>[1-9][0-9]{0,7})(?P<suffix>[a-z])?"
)


def normalize_extra(extra: str | None) -> str | None:
    """The BSI letter from any spelling: `"(a)"` (gdmf, MDM, sw_vers) or `"a"` (DDM status).

    `None` and `""` mean "no BSI" and give `None`; anything else raises `VersionError`.
    """
    if extra is None or not extra.strip():
        return None
    match = _EXTRA_RE.fullmatch(extra.strip())
    if match is None:
        raise VersionError(f"invalid BSI extra {extra!r}: expected one letter such as 'a' or '(a)'")
    return match.group(1)


@total_ordering
@dataclass(frozen=True, eq=False)
class OSVersion:
    """A macOS version, optionally with a BSI letter (`extra`).

    Equality and ordering use (major, minor, patch, extra): numeric per part, missing parts are 0
    (`26.3 == 26.3.0`), and a BSI sorts above its base and below the next patch
    (`26.3.1 < 26.3.1 (a) < 26.3.1 (b) < 26.3.2`). `parts` (2 or 3) only records how many
    numeric parts to print, so `str()` gives back `26.0` for `26.0` and `26.3.0` for `26.3.0`.
    """

    major: int
    minor: int = 0
    patch: int = 0
    extra: str | None = None
    parts: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        for name in ("major", "minor", "patch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise VersionError(f"invalid version {name} {value!r}: expected an integer >= 0")
        if self.extra is not None:
            if not isinstance(self.extra, str):
                raise VersionError(f"invalid BSI extra {self.extra!r}: expected a letter")
            object.__setattr__(self, "extra", normalize_extra(self.extra))
        parts = self.parts or (3 if self.patch else 2)
        if parts not in (2, 3) or (parts == 2 and self.patch):
            raise VersionError(f"invalid part count {self.parts!r} for {self.key}")
        object.__setattr__(self, "parts", parts)

    @classmethod
    def parse(cls, text: str, extra: str | None = None) -> OSVersion:
        """Parse `26.3.1`, `26.0`, `26`, `26.3.1 (a)` or `26.3.1(a)`; `extra` (`a` or `(a)`)
        adds a BSI letter given separately, as gdmf and DDM status do."""
        if not isinstance(text, str):
            raise VersionError(f"invalid macOS version {text!r}: expected a string")
        match = _VERSION_RE.fullmatch(text.strip())
        if match is None:
            raise VersionError(
                f"invalid macOS version {text!r}: expected up to three numbers such as "
                "'26.3.1', optionally followed by a BSI letter such as ' (a)'"
            )
        own_extra = match.group("extra")
        given_extra = normalize_extra(extra)
        if own_extra and given_extra and own_extra != given_extra:
            raise VersionError(f"version {text!r} already has extra {own_extra!r}, not {extra!r}")
        return cls(
            major=int(match.group("major")),
            minor=int(match.group("minor") or 0),
            patch=int(match.group("patch") or 0),
            extra=own_extra or given_extra,
            parts=3 if match.group("patch") is not None else 2,
        )

    @property
    def key(self) -> tuple[int, int, int, str]:
        """The sort key; "" for no extra sorts before any letter."""
        return (self.major, self.minor, self.patch, self.extra or "")

    @property
    def base(self) -> OSVersion:
        """The same version without its BSI letter."""
        return OSVersion(self.major, self.minor, self.patch, None, self.parts)

    @property
    def is_bsi(self) -> bool:
        return self.extra is not None

    @property
    def without_extra_str(self) -> str:
        """Text for DDM `TargetOSVersion`, which never carries the BSI letter."""
        numbers = [self.major, self.minor, self.patch][: self.parts]
        return ".".join(str(n) for n in numbers)

    @property
    def extra_str(self) -> str | None:
        """The letter in Apple's `ProductVersionExtra` spelling, `(a)`."""
        return f"({self.extra})" if self.extra else None

    def with_extra(self, extra: str | None) -> OSVersion:
        return OSVersion(self.major, self.minor, self.patch, normalize_extra(extra), self.parts)

    def __str__(self) -> str:
        text = self.without_extra_str
        return f"{text} ({self.extra})" if self.extra else text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OSVersion) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, OSVersion):
            return NotImplemented
        return self.key < other.key

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return _string_type_schema(cls, cls.parse)


@dataclass(frozen=True, order=True)
class Build:
    """An Apple build such as `25D2128` or the supplemental (BSI/RSR) build `25D771280a`.

    Fields: `train` (Darwin major, 25), `letter` (`D`, the minor train), `number` (2128) and the
    optional lowercase `suffix` of a supplemental build. Ordering is numeric per component
    (`25D99 < 25D100`, no suffix below any suffix). It is a mechanical order, not release order:
    `25D771280a` (26.3.1 (a)) sorts above `25D2140` (26.3.2). Compare `OSVersion`s for that.
    """

    train: int
    letter: str
    number: int
    suffix: str = ""

    def __post_init__(self) -> None:
        ints_ok = all(type(value) is int for value in (self.train, self.number))
        if not ints_ok or _BUILD_RE.fullmatch(str(self)) is None:
            raise VersionError(f"invalid build parts {self!r}")

    @classmethod
    def parse(cls, text: str) -> Build:
        if not isinstance(text, str):
            raise VersionError(f"invalid build {text!r}: expected a string")
        match = _BUILD_RE.fullmatch(text.strip())
        if match is None:
            raise VersionError(
                f"invalid build {text!r}: expected a train number, a capital letter, a number "
                "and an optional lowercase letter, such as '25D2128' or '25D771280a'"
            )
        return cls(
            train=int(match.group("train")),
            letter=match.group("letter"),
            number=int(match.group("number")),
            suffix=match.group("suffix") or "",
        )

    @property
    def is_supplemental(self) -> bool:
        """A BSI/RSR build: it ends with a lowercase letter."""
        return bool(self.suffix)

    @property
    def minor_index(self) -> int:
        """0 for `A`, 1 for `B`, ... Often, but not always, the minor version (11.0.1 was 20B29)."""
        return ord(self.letter) - ord("A")

    @property
    def macos_major(self) -> int | None:
        return darwin_major_to_macos(self.train)

    def __str__(self) -> str:
        return f"{self.train}{self.letter}{self.number}{self.suffix}"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return _string_type_schema(cls, cls.parse)


def _string_type_schema(cls: type, parse: Callable[[str], Any]) -> core_schema.CoreSchema:
    """Validate from a string (or an instance in Python), always serialise with `str()`."""

    def coerce(value: Any) -> Any:
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return parse(value)
        raise VersionError(f"expected a {cls.__name__} or a string, got {type(value).__name__}")

    return core_schema.json_or_python_schema(
        json_schema=core_schema.no_info_after_validator_function(parse, core_schema.str_schema()),
        python_schema=core_schema.no_info_plain_validator_function(coerce),
        serialization=core_schema.to_string_ser_schema(when_used="always"),
    )


@lru_cache(maxsize=8192)
def parse_version(text: str, extra: str | None = None) -> OSVersion:
    """`OSVersion.parse`, memoised (versions are immutable and a fleet has few distinct
    ones; every manifest and compliance judgement parses them); raises `VersionError`."""
    return OSVersion.parse(text, extra)


def parse_build(text: str) -> Build:
    """`Build.parse`; raises `VersionError`."""
    return Build.parse(text)


# Darwin (build train) major -> macOS major, for the releases that exist. From 26 on, macOS is
# numbered by year, so Darwin 25 jumped to macOS 26; later trains are left out until they ship.
_DARWIN_TO_MACOS = {20: 11, 21: 12, 22: 13, 23: 14, 24: 15, 25: 26}
_MACOS_TO_DARWIN = {macos: darwin for darwin, macos in _DARWIN_TO_MACOS.items()}

MAJOR_NAMES: dict[int, str] = {
    11: "Big Sur",
    12: "Monterey",
    13: "Ventura",
    14: "Sonoma",
    15: "Sequoia",
    26: "Tahoe",
}


def darwin_major_to_macos(train: int) -> int | None:
    """macOS major for a build train (`25` -> `26`), or `None` for a train not in the table."""
    return _DARWIN_TO_MACOS.get(train)


def macos_to_darwin_major(major: int) -> int | None:
    """Build train for a macOS major (`26` -> `25`), or `None` if unknown."""
    return _MACOS_TO_DARWIN.get(major)


def major_name(major: int) -> str | None:
    """Marketing name of a macOS major (`26` -> `"Tahoe"`), or `None` if unknown."""
    return MAJOR_NAMES.get(major)
