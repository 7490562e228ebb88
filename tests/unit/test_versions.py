"""The macOS version and build model (managed_os.versions)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from managed_os.versions import (
    MAJOR_NAMES,
    Build,
    OSVersion,
    VersionError,
    darwin_major_to_macos,
    macos_to_darwin_major,
    major_name,
    normalize_extra,
    parse_build,
    parse_version,
)

numbers = st.integers(min_value=0, max_value=999)
extras = st.none() | st.sampled_from("abcdefghijklmnopqrstuvwxyz")


@st.composite
def versions(draw: st.DrawFn) -> OSVersion:
    major, minor, patch = draw(numbers), draw(numbers), draw(numbers)
    parts = 3 if patch else draw(st.sampled_from([2, 3]))
    return OSVersion(major, minor, patch, draw(extras), parts)


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("26.3.1", (26, 3, 1, None), "26.3.1"),
        ("26.0", (26, 0, 0, None), "26.0"),
        ("26", (26, 0, 0, None), "26.0"),
        ("26.3.0", (26, 3, 0, None), "26.3.0"),
        ("26.3.1 (a)", (26, 3, 1, "a"), "26.3.1 (a)"),
        ("26.3.1(a)", (26, 3, 1, "a"), "26.3.1 (a)"),
        ("  13.4.1 (c) ", (13, 4, 1, "c"), "13.4.1 (c)"),
        ("17.2 (a)", (17, 2, 0, "a"), "17.2 (a)"),
    ],
)
def test_versions_parse_from_every_spelling_apple_uses(text, expected, canonical):
    version = parse_version(text)
    assert (version.major, version.minor, version.patch, version.extra) == expected
    assert str(version) == canonical


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "abc",
        "26..1",
        "-1",
        "26.3.1 (aa)",
        "26.3.1.4",
        "26.3.1.4.5",
        "26.",
        ".26",
        "026",
        "26.3.1 (A)",
        "26.3.1 a",
        "٢٦",
        "26 .3",
        "26.3.1 ()",
    ],
)
def test_garbage_versions_are_rejected_with_the_input_in_the_message(garbage):
    with pytest.raises(VersionError) as raised:
        parse_version(garbage)
    assert repr(garbage) in str(raised.value)


def test_a_version_error_is_a_value_error():
    assert issubclass(VersionError, ValueError)


def test_version_parts_are_compared_as_numbers_not_text():
    assert parse_version("26.10") > parse_version("26.9")
    assert parse_version("26.3.10") > parse_version("26.3.9")


def test_a_missing_patch_equals_patch_zero():
    assert parse_version("26.3") == parse_version("26.3.0")
    assert hash(parse_version("26.3")) == hash(parse_version("26.3.0"))
    assert parse_version("26") == parse_version("26.0.0")


def test_a_bsi_sorts_above_its_base_and_below_the_next_patch():
    base, a, b = parse_version("26.3.1"), parse_version("26.3.1 (a)"), parse_version("26.3.1 (b)")
    assert base < a < b < parse_version("26.3.2")
    assert a.base == base
    assert a.is_bsi and not base.is_bsi


def test_the_ddm_target_text_never_carries_the_bsi_letter():
    assert parse_version("26.3.1 (a)").without_extra_str == "26.3.1"
    assert parse_version("26.0").without_extra_str == "26.0"


def test_an_extra_given_separately_is_accepted_in_gdmf_and_ddm_spellings():
    assert parse_version("26.3.1", extra="(a)") == parse_version("26.3.1 (a)")
    assert parse_version("26.3.1", extra="a") == parse_version("26.3.1 (a)")
    assert parse_version("26.3.1", extra="") == parse_version("26.3.1")
    assert parse_version("26.3.1 (a)").extra_str == "(a)"


def test_conflicting_extras_are_rejected():
    with pytest.raises(VersionError):
        parse_version("26.3.1 (a)", extra="b")


def test_normalize_extra_treats_empty_as_no_bsi_and_refuses_words():
    assert normalize_extra(None) is None
    assert normalize_extra(" ") is None
    assert normalize_extra("(c)") == "c"
    with pytest.raises(VersionError):
        normalize_extra("beta")


def test_a_version_cannot_be_built_from_negative_or_non_integer_parts():
    with pytest.raises(VersionError):
        OSVersion(26, -1)
    with pytest.raises(VersionError):
        OSVersion(26, True)
    with pytest.raises(VersionError):
        OSVersion(26, 3, 1, parts=2)


@settings(database=None)
@given(versions())
def test_parsing_the_text_of_a_version_gives_the_same_version(version):
    again = parse_version(str(version))
    assert again == version
    assert str(again) == str(version)


@settings(database=None)
@given(versions(), versions())
def test_version_order_is_the_order_of_its_number_and_letter_tuple(left, right):
    def key(v: OSVersion) -> tuple[int, int, int, str]:
        return (v.major, v.minor, v.patch, v.extra or "")

    assert (left < right) == (key(left) < key(right))
    assert (left == right) == (key(left) == key(right))
    assert (left <= right) == (key(left) <= key(right))
    assert sum([left < right, left == right, left > right]) == 1


@settings(database=None)
@given(versions(), st.sampled_from("abcdefghijklmnopqrstuvwxyz"))
def test_any_bsi_lies_between_its_base_and_the_next_patch(version, letter):
    base = version.base
    bsi = base.with_extra(letter)
    next_patch = OSVersion(base.major, base.minor, base.patch + 1)
    assert base < bsi < next_patch


@settings(database=None)
@given(st.text(max_size=12))
def test_arbitrary_text_either_parses_to_a_canonical_version_or_raises_version_error(text):
    try:
        version = parse_version(text)
    except VersionError:
        return
    assert parse_version(str(version)) == version


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("25D2128", (25, "D", 2128, "")),
        ("25G83", (25, "G", 83, "")),
        ("24B2083", (24, "B", 2083, "")),
        ("25A8364", (25, "A", 8364, "")),
        ("25D771280a", (25, "D", 771280, "a")),
        ("20A242a", (20, "A", 242, "a")),
        ("22F770820d", (22, "F", 770820, "d")),
    ],
)
def test_builds_parse_into_train_letter_number_and_suffix(text, parts):
    build = parse_build(text)
    assert (build.train, build.letter, build.number, build.suffix) == parts
    assert str(build) == text


def test_a_build_with_a_lowercase_suffix_is_supplemental():
    assert parse_build("25D771280a").is_supplemental
    assert not parse_build("25D2128").is_supplemental


def test_build_components_compare_numerically():
    assert parse_build("25D99") < parse_build("25D100")
    assert parse_build("24G84") < parse_build("25A354")
    assert parse_build("25C56") < parse_build("25D125")
    assert parse_build("20A242") < parse_build("20A242a") < parse_build("20A242b")


def test_the_build_letter_gives_the_minor_train_index_and_the_train_the_macos_major():
    build = parse_build("25D2128")
    assert build.minor_index == 3
    assert build.macos_major == 26
    assert parse_build("24B2083").macos_major == 15


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "25",
        "D2128",
        "25d2128",
        "25D",
        "25D2128A",
        "25D2128ab",
        "2025D1",
        "25D0128",
        "25 D2128",
        "x25D2128",
    ],
)
def test_garbage_builds_are_rejected_with_the_input_in_the_message(garbage):
    with pytest.raises(VersionError) as raised:
        parse_build(garbage)
    assert repr(garbage) in str(raised.value)


@settings(database=None)
@given(
    st.integers(1, 99),
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    st.integers(1, 99_999_999),
    st.sampled_from(["", *"abcdefghijklmnopqrstuvwxyz"]),
)
def test_parsing_the_text_of_a_build_gives_the_same_build(train, letter, number, suffix):
    build = Build(train, letter, number, suffix)
    assert parse_build(str(build)) == build


def test_darwin_trains_map_to_the_macos_majors_that_shipped_on_them():
    assert {t: darwin_major_to_macos(t) for t in range(20, 26)} == {
        20: 11,
        21: 12,
        22: 13,
        23: 14,
        24: 15,
        25: 26,
    }
    assert darwin_major_to_macos(19) is None
    assert darwin_major_to_macos(26) is None
    assert macos_to_darwin_major(26) == 25


def test_majors_have_their_marketing_names():
    assert major_name(26) == "Tahoe"
    assert major_name(11) == "Big Sur"
    assert major_name(10) is None
    assert set(MAJOR_NAMES) == {11, 12, 13, 14, 15, 26}


class Release(BaseModel):
    version: OSVersion
    build: Build | None = None


def test_versions_and_builds_are_pydantic_fields_that_validate_and_serialise_as_text():
    release = Release.model_validate({"version": "26.3.1 (a)", "build": "25D771280a"})
    assert release.version == OSVersion(26, 3, 1, "a")
    assert release.build == Build(25, "D", 771280, "a")
    assert release.model_dump() == {"version": "26.3.1 (a)", "build": "25D771280a"}
    assert Release.model_validate_json(release.model_dump_json()) == release
    assert Release(version=OSVersion(26)).version == parse_version("26.0")


def test_pydantic_reports_a_bad_version_as_a_validation_error():
    with pytest.raises(ValidationError) as raised:
        Release.model_validate({"version": "26..1"})
    assert "invalid macOS version '26..1'" in str(raised.value)
    with pytest.raises(ValidationError):
        Release.model_validate({"version": 26})
