from __future__ import annotations

import os.path
import unicodedata
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from flowxfer import protocol
from flowxfer.transfer._names import (
    UnsafePathError,
    archive_member_target,
    flatten_relative_path,
    remote_name_problem,
    safe_join,
    safe_local_name,
)

ROOT = Path("/data/out")

_WINDOWS_FORBIDDEN = set('<>:"/\\|?*')
_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{p}{d}" for p in ("COM", "LPT") for d in "123456789\u00b9\u00b2\u00b3"
}


def assert_safe_component(name: str) -> None:
    """What every result of safe_local_name must be, on every platform."""
    assert name
    assert name not in (".", "..")
    assert not set(name) & _WINDOWS_FORBIDDEN
    assert all(unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in name)
    assert len(name.encode("utf-8")) <= 255
    assert name == unicodedata.normalize("NFC", name)
    assert not name.endswith((".", " "))
    assert not name[0].isspace()
    assert not name.startswith("-")
    assert name.split(".")[0].rstrip(" ").upper() not in _RESERVED
    # One component wherever it is joined: it never climbs and never names a drive or a root.
    for pure in (PurePosixPath, PureWindowsPath):
        joined = pure("root") / name
        assert joined.parent == pure("root"), (pure, name)
        assert joined.name == name
    assert os.path.normpath(os.path.join("root", name)) == os.path.join("root", name)


# --- safe_local_name ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        ("Sample1_S1_L001_R1_001.fastq.gz", "Sample1_S1_L001_R1_001.fastq.gz"),
        ("report (final).pdf", "report (final).pdf"),
        ("a/b", "a_b"),
        ("../../etc/passwd", ".._.._etc_passwd"),
        ("..\\..\\boot.ini", ".._.._boot.ini"),
        ("C:\\Windows\\x.dll", "C__Windows_x.dll"),
        ("what?.txt", "what_.txt"),
        ('a<b>c:d"e|f*g', "a_b_c_d_e_f_g"),
        ("tab\there", "tab_here"),
        ("line\nbreak", "line_break"),
        ("nul\x00byte", "nul_byte"),
        ("esc\x1b[31mred", "esc_[31mred"),
        ("del\x7f", "del_"),
        ("c1\x85ctrl", "c1_ctrl"),
        ("abc\u202etxt.exe", "abctxt.exe"),
        ("zero\u200bwidth", "zerowidth"),
        ("bom\ufeff.txt", "bom.txt"),
        ("trailing.", "trailing"),
        ("trailing. . ", "trailing"),
        ("  leading.txt", "leading.txt"),
        ("-rf", "_rf"),
        ("--help", "_-help"),
        ("CON", "_CON"),
        ("con", "_con"),
        ("aux.txt", "_aux.txt"),
        ("Com1.tar.gz", "_Com1.tar.gz"),
        ("LPT9", "_LPT9"),
        ("CONOUT$", "_CONOUT$"),
        ("COM\u00b9", "_COM\u00b9"),
        ("CON .txt", "_CON .txt"),
        ("console.txt", "console.txt"),
        ("COM10", "COM10"),
        (".hidden", ".hidden"),
        ("e\u0301.txt", "\u00e9.txt"),  # NFD becomes NFC
        ("nbsp\u00a0name", "nbsp_name"),
        ("\x00", "_"),
        ("\x00", "_"),
    ],
)
def test_safe_local_name_examples(remote: str, expected: str) -> None:
    assert safe_local_name(remote) == expected
    assert_safe_component(safe_local_name(remote))


@pytest.mark.parametrize("remote", ["", ".", "..", "...", " ", ". .", "\u200b", "\u202e", " \u200b. "])
def test_safe_local_name_never_empty(remote: str) -> None:
    # Names that are nothing once cleaned fall back to data-<hash>; control characters, by
    # contrast, become "_" and so are not empty.
    name = safe_local_name(remote)
    assert name.startswith("data-")
    assert_safe_component(name)
    assert safe_local_name(remote) == name  # deterministic


def test_fallback_names_differ_for_different_inputs() -> None:
    assert safe_local_name("") != safe_local_name("..")


def test_long_names_keep_their_extension_and_stay_distinct() -> None:
    a = "x" * 300 + "a.fastq.gz"
    b = "x" * 300 + "b.fastq.gz"
    name_a, name_b = safe_local_name(a), safe_local_name(b)
    assert len(name_a.encode()) <= 255 and len(name_b.encode()) <= 255
    assert name_a.endswith(".fastq.gz") and name_b.endswith(".fastq.gz")
    assert name_a != name_b
    assert name_a.startswith("x" * 200)


def test_long_multibyte_names_are_cut_between_characters() -> None:
    name = safe_local_name("\u00e9" * 200 + "\U0001f9ec" * 30 + ".bam")
    assert len(name.encode("utf-8")) <= 255
    assert name.endswith(".bam")
    name.encode("utf-8")  # no half characters
    assert_safe_component(name)


def test_exactly_255_bytes_is_kept() -> None:
    assert safe_local_name("y" * 255) == "y" * 255
    assert safe_local_name("y" * 256) != "y" * 256


def test_lone_surrogates_are_replaced() -> None:
    name = safe_local_name("bad\udcffname")
    assert name == "bad_name"
    name.encode("utf-8")


_hostile = st.text(
    alphabet=st.one_of(
        st.sampled_from(list('./\\:*?"<>| -_~\x00\t\n\x7f\x85\u202e\u200b\ufeff\u00a0\u2028\u0301eE')),
        st.characters(),
    ),
    max_size=300,
)


@given(_hostile)
@example("CON")
@example("aux.txt.")
@example(" -x")
@example("a" * 254 + "\u0301" * 5)
@example("con" + "\u00e9" * 200)
def test_safe_local_name_properties(remote: str) -> None:
    name = safe_local_name(remote)
    assert_safe_component(name)
    assert safe_local_name(name) == name  # idempotent
    assert safe_local_name(remote) == name  # deterministic


@given(st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=60))
def test_ordinary_names_pass_unchanged(remote: str) -> None:
    remote = unicodedata.normalize("NFC", remote)
    if remote.split(".")[0].upper() in _RESERVED:
        return
    assert safe_local_name(remote) == remote


# --- safe_join ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ((), ROOT),
        (("a",), ROOT / "a"),
        (("a/b", "c"), ROOT / "a" / "b" / "c"),
        (("a\\b",), ROOT / "a" / "b"),
        (("./a//b/",), ROOT / "a" / "b"),
        (("a/../b",), ROOT / "b"),
        (("a", ".."), ROOT),
        ((".",), ROOT),
        (("ab:c",), ROOT / "ab:c"),  # not a drive: a colon after more than one letter
    ],
)
def test_safe_join(parts: tuple[str, ...], expected: Path) -> None:
    assert safe_join(ROOT, *parts) == expected


@pytest.mark.parametrize(
    "parts",
    [
        ("..",),
        ("../x",),
        ("a/../../x",),
        ("a", "../../x"),
        ("/etc/passwd",),
        ("a", "/etc"),
        ("\\\\server\\share",),
        ("\\windows",),
        ("C:",),
        ("C:\\x",),
        ("c:x",),
        ("a/D:/b",),
        ("a\x00b",),
        ("...",),
        (". .",),
        ("a/.. /b",),
        (" ",),
        ("..\\..\\x",),
    ],
)
def test_safe_join_refuses(parts: tuple[str, ...]) -> None:
    with pytest.raises(UnsafePathError):
        safe_join(ROOT, *parts)


def test_unsafe_path_error_is_a_value_error_with_the_name() -> None:
    with pytest.raises(ValueError) as info:
        safe_join(ROOT, "../x")
    assert isinstance(info.value, UnsafePathError)
    assert info.value.name == "../x"


_path_text = st.lists(st.sampled_from(["a", "b", "..", ".", "", "c.d", "..a", "a..", "\\", "/"]), max_size=8).map(
    "".join
)


@given(st.lists(_path_text, max_size=4))
def test_safe_join_never_leaves_root(parts: list[str]) -> None:
    try:
        result = safe_join(ROOT, *parts)
    except UnsafePathError:
        # Refused: then plain path arithmetic would indeed leave the root (or it had a bad component).
        joined = os.path.normpath(os.path.join(*(["/data/out"] + [p.replace("\\", "/") for p in parts])))
        components = [c for p in parts for c in p.replace("\\", "/").split("/")]
        assert (
            not (joined + "/").startswith("/data/out/")
            or any(p.replace("\\", "/").startswith("/") for p in parts)
            or any(c not in ("", ".", "..") and not c.strip(". ") for c in components)
        )
        return
    assert result == ROOT or ROOT in result.parents
    assert ".." not in result.relative_to(ROOT).parts
    assert str(result) == os.path.normpath(str(result))


# --- archive_member_target -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "expected"),
    [
        ("a.txt", ROOT / "a.txt"),
        ("dir/a.txt", ROOT / "dir" / "a.txt"),
        ("dir\\a.txt", ROOT / "dir" / "a.txt"),
        ("./dir//a.txt", ROOT / "dir" / "a.txt"),
        ("dir/", ROOT / "dir"),
        ("name (12).fastq.gz", ROOT / "name (12).fastq.gz"),
        ("..a/b..", ROOT / "..a" / "b.."),
    ],
)
def test_archive_member_target(member: str, expected: Path) -> None:
    assert archive_member_target(ROOT, member) == expected


@pytest.mark.parametrize(
    "member",
    [
        "",
        ".",
        "./",
        "/",
        "//",
        "/etc/passwd",
        "\\etc\\passwd",
        "../x",
        "a/../b",  # refused even though it stays inside: archives have no business climbing
        "a/..",
        "..\\x",
        "C:\\x",
        "C:x",
        "a/C:/x",
        "a\x00b",
        "a\nb",
        "esc\x1b]0;x\x07",
        "...",
        "a/ /b",
        "a/. ./b",
    ],
)
def test_archive_member_target_refuses(member: str) -> None:
    with pytest.raises(UnsafePathError) as info:
        archive_member_target(ROOT, member)
    assert info.value.name == member
    assert repr(member)[1:-1][:10] in str(info.value) or member == ""


@given(st.text(alphabet=st.sampled_from(list("ab./\\:C\x00 ")), max_size=20))
def test_archive_member_target_stays_strictly_inside(member: str) -> None:
    try:
        target = archive_member_target(ROOT, member)
    except UnsafePathError:
        return
    assert ROOT in target.parents
    assert ".." not in target.parts
    assert "\x00" not in str(target)
    assert not any(part[:1].isalpha() and part[1:2] == ":" for part in target.relative_to(ROOT).parts)


# --- flatten_relative_path ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "expected"),
    [
        ("Fastq/L001/x.fq.gz", "Fastq__L001__x.fq.gz"),
        ("x.fq.gz", "x.fq.gz"),
        ("Fastq\\L001\\x.fq.gz", "Fastq__L001__x.fq.gz"),
        ("./a//b", "a__b"),
        ("My Run/sample 1.fq", "My_Run__sample_1.fq"),
    ],
)
def test_flatten_relative_path(rel: str, expected: str) -> None:
    assert flatten_relative_path(rel) == expected
    assert protocol.filename_problem(expected) is None


def test_flatten_with_another_separator() -> None:
    assert flatten_relative_path("a/b/c", sep="-") == "a-b-c"
    with pytest.raises(ValueError):
        flatten_relative_path("a/b", sep="/")
    assert flatten_relative_path("a/b", sep=" ") == "a_b"  # spaces become "_", the separator's too
    with pytest.raises(ValueError):
        flatten_relative_path("a/b", sep="\x00")


@pytest.mark.parametrize("rel", ["", ".", "/abs/x", "\\abs", "C:/x", "../x", "a/../b", "a/b\x00", "x" * 256, "a/\tb"])
def test_flatten_refuses(rel: str) -> None:
    with pytest.raises(ValueError):
        flatten_relative_path(rel)


def test_remote_name_problem_is_protocols() -> None:
    for name in ("ok.txt", "has space", "a/b", "", "..", "x" * 256):
        assert remote_name_problem(name) == protocol.filename_problem(name)
