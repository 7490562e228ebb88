"""One function per Managed OS rule (DESIGN.md, "From policy to per-device enforcement").

Each returns `Rule`s: a target, a deadline and a version window, for the board ids that
share them. Boards are grouped so that every Mac — each board id, and a Mac whose board id
is not known yet — falls in at most one window per rule: it gets one declaration, never two.
Nothing here reads a clock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from declarations.compiler.support import Board, MajorView
from declarations.compiler.timing import add_within, at_local, shown
from declarations.schemas import LibraryItem, Minimum, Rolling, Specific
from managed_os.events import ReleaseData
from managed_os.versions import parse_version


@dataclass(frozen=True)
class Rule:
    kind: str  # update | upgrade | bsi | self_service
    target_version: str
    target_build: str | None  # set when the declaration pins TargetBuildVersion
    deadline: datetime
    reason: str
    majors: tuple[int, ...]
    below: str | None = None  # device version < below
    at_least: str | None = None  # device version >= at_least
    builds: tuple[str, ...] | None = None
    extra_below: str | None = None
    enrollment_ids: tuple[str, ...] | None = None


def grouped(rules: Iterable[tuple[Rule, list[Board]]]) -> list[tuple[Rule, list[Board]]]:
    """Merge identical rules across board groups, keeping the first-seen order."""
    boards: dict[Rule, list[Board]] = defaultdict(list)
    for rule, group in rules:
        boards[rule].extend(group)
    return list(boards.items())


def _to(rel: ReleaseData, pin_build: bool) -> tuple[str, str | None]:
    return rel.version, rel.build if pin_build else None


def _v(rel: ReleaseData) -> str:
    return rel.version


def _released(rel: ReleaseData) -> date | None:
    return rel.release_date


def rolling(item: LibraryItem, view: MajorView, ve: Rolling) -> Iterable[tuple[Rule, list[Board]]]:
    """Target L (the latest that supports the Mac); deadline = release date of the oldest
    release newer than the Mac's version that supports it, + `within`, at `at`."""
    for boards in view.groups:
        board = boards[0]
        chain = view.chain(board)
        if not chain:
            continue
        latest = chain[-1]
        previous: ReleaseData | None = None
        for anchor in chain:
            released = _released(anchor)
            if released is not None:
                due = at_local(add_within(released, ve.within), ve.at)
                reason = (
                    f"{anchor.version} released {released} + {ve.within} → due {shown(due)}; "
                    f"target {latest.version}"
                )
                yield (
                    Rule(
                        "update",
                        *_to(latest, False),
                        due,
                        reason,
                        (view.major,),
                        below=_v(anchor),
                        at_least=_v(previous) if previous else None,
                    ),
                    boards,
                )
                previous = anchor  # an undated release is no anchor: its window joins the next


def minimum(item: LibraryItem, view: MajorView, ve: Minimum) -> Iterable[tuple[Rule, list[Board]]]:
    """Below `version`: target L by the fixed deadline. Never below what the Mac can run."""
    floor = parse_version(ve.version)
    due = at_local(ve.deadline, ve.at)
    for boards in view.groups:
        board = boards[0]
        latest = view.latest(board)
        if latest is None:
            continue
        below = min(floor, parse_version(latest.version))
        reason = f"below the minimum {ve.version}: update to {latest.version} by {shown(due)}"
        yield (
            Rule("update", *_to(latest, False), due, reason, (view.major,), below=str(below)),
            boards,
        )


def specific(
    item: LibraryItem, view: MajorView, ve: Specific
) -> Iterable[tuple[Rule, list[Board]]]:
    """Below `version`: exactly that version (and the build made for the Mac); never a
    downgrade; nothing for a Mac that version does not support."""
    version = parse_version(ve.version)
    due = at_local(ve.deadline, ve.at)
    for boards in view.groups:
        board = boards[0]
        target = view.of_version(version, board)
        if target is None:
            continue
        reason = f"pinned to {target.version} ({target.build or 'any build'}) by {shown(due)}"
        yield (
            Rule("update", *_to(target, True), due, reason, (view.major,), below=target.version),
            boards,
        )


def upgrade_target(item: LibraryItem, view: MajorView, board: Board) -> ReleaseData | None:
    ve = item.version_enforcement
    if isinstance(ve, Specific):
        return view.of_version(parse_version(ve.version), board)
    return view.latest(board)


def upgrade(item: LibraryItem, view: MajorView) -> Iterable[tuple[Rule, list[Board]]]:
    """Older majors under continuously-enforce: upgrade to L (or the specific version). For
    rolling, the window opens when upgrade enforcement was switched on, not at the major's
    first release."""
    ve = item.version_enforcement
    if item.installation_method != "continuously_enforce" or item.major <= 11:
        return
    if isinstance(ve, Rolling):
        since = (item.upgrade_enforced_since or item.created_at).date()
        due = at_local(add_within(since, ve.within), ve.at)
        why = f"upgrade enforced since {since} + {ve.within} → due {shown(due)}"
    elif isinstance(ve, Minimum | Specific):
        due = at_local(ve.deadline, ve.at)
        why = f"upgrade due {shown(due)}"
    else:
        return
    older = tuple(range(11, item.major))
    for boards in view.groups:
        board = boards[0]
        target = upgrade_target(item, view, board)
        if target is not None:
            reason = f"macOS {older[-1]} or older → {target.version}: {why}"
            yield (
                Rule("upgrade", *_to(target, isinstance(ve, Specific)), due, reason, older),
                boards,
            )


def self_service(
    item: LibraryItem, view: MajorView, requests: Iterable[tuple[str, datetime]]
) -> Iterable[tuple[Rule, list[Board]]]:
    """One Mac asked (through the API) to upgrade now: a short deadline just for it."""
    older = tuple(range(11, item.major))
    for enrollment_id, due in requests:
        for boards in view.groups:
            board = boards[0]
            target = upgrade_target(item, view, board)
            if target is not None:
                reason = f"self-service upgrade to {target.version} requested, due {shown(due)}"
                yield (
                    Rule(
                        "self_service",
                        *_to(target, isinstance(item.version_enforcement, Specific)),
                        due,
                        reason,
                        older,
                        enrollment_ids=(enrollment_id,),
                    ),
                    boards,
                )


def bsi(
    item: LibraryItem, view: MajorView, within: str, at: str
) -> Iterable[tuple[Rule, list[Board]]]:
    """A BSI for L applies to a Mac exactly on L's build (its prerequisite): target the BSI's
    version without the letter and its build. Macs below L get L first, by version rules."""
    for boards in view.groups:
        board = boards[0]
        latest = view.latest(board)
        if latest is None or latest.build is None:
            continue
        candidates = [
            b
            for b in view.bsis
            if b.prerequisite_build == latest.build and b.build and view.supports(b, board)
        ]
        if not candidates:
            continue
        newest = max(candidates, key=lambda b: (b.extra or "", b.build or ""))
        released = newest.release_date
        if released is None:
            continue  # no date, no deadline: it waits for the catalog to learn one
        due = at_local(add_within(released, within), at)
        letter = (newest.extra or "").strip("()")
        reason = (
            f"{newest.version} {newest.extra} released {released} + {within} → due {shown(due)}"
        )
        yield (
            Rule(
                "bsi",
                *_to(newest, True),
                due,
                reason,
                (view.major,),
                builds=(latest.build,),
                extra_below=letter or None,
            ),
            boards,
        )
