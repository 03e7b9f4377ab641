from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowxfer.transfer._globs import PathFilter, Rule


def inc(pattern: str) -> tuple[str, str]:
    return ("include", pattern)


def exc(pattern: str) -> tuple[str, str]:
    return ("exclude", pattern)


RUN = [
    "RunInfo.xml",
    "RunParameters.xml",
    "RTAComplete.txt",
    "InterOp/QMetricsOut.bin",
    "Data/Intensities/BaseCalls/L001/C1.1/L001_1.cbcl",
    "Data/Intensities/BaseCalls/L001/s_1_1101.bcl.gz",
    "Logs/CopyComplete.log",
    "Logs/keep.txt",
    "Thumbnail_Images/L001/C1.1/s_1_1101_a.jpg",
    "Fastq/Sample1_S1_L001_R1_001.fastq.gz",
    "Fastq/Sample1_S1_L001_R2_001.fastq.gz",
    "Fastq/Undetermined_S0_L001_R1_001.fastq.gz",
    ".hidden/x.fastq.gz",
]


def selected(rules: list[tuple[str, str]]) -> list[str]:
    path_filter = PathFilter(rules)
    return [p for p in RUN if path_filter.matches(p)]


def test_no_rules_include_everything() -> None:
    assert selected([]) == RUN


def test_excludes_only() -> None:
    assert selected([exc("Thumbnail_Images/"), exc("Logs")]) == [
        p for p in RUN if not p.startswith(("Thumbnail_Images/", "Logs/"))
    ]


def test_an_include_makes_the_default_exclude() -> None:
    assert selected([inc("*.fastq.gz")]) == [p for p in RUN if p.endswith(".fastq.gz")]


def test_last_matching_rule_wins() -> None:
    rules = [inc("*.fastq.gz"), exc("Undetermined_*")]
    assert "Fastq/Undetermined_S0_L001_R1_001.fastq.gz" not in selected(rules)
    rules = [exc("Undetermined_*"), inc("*.fastq.gz")]
    assert "Fastq/Undetermined_S0_L001_R1_001.fastq.gz" in selected(rules)


def test_a_later_include_reopens_an_excluded_directory() -> None:
    rules = [exc("Logs/"), inc("Logs/keep.txt")]
    result = selected(rules)
    assert "Logs/keep.txt" in result
    assert "Logs/CopyComplete.log" not in result
    # An include exists, so a file no rule decides is excluded, excludes or not.
    assert "RunInfo.xml" not in result
    assert result == ["Logs/keep.txt"]


@pytest.mark.parametrize(
    ("pattern", "path", "is_dir", "expected"),
    [
        ("*.xml", "RunInfo.xml", False, True),
        ("*.xml", "a/b/RunInfo.xml", False, True),  # no slash: the name at any depth
        ("*.xml", "a.xml/inner", False, True),  # a directory named like it excludes its contents
        ("Run*.xml", "RunInfo.xml", False, True),
        ("Run*.xml", "xRunInfo.xml", False, False),
        ("*", ".hidden", False, True),  # dotfiles too
        ("?.txt", "a.txt", False, True),
        ("?.txt", "ab.txt", False, False),
        ("[ab].txt", "b.txt", False, True),
        ("[ab].txt", "c.txt", False, False),
        ("[!ab].txt", "c.txt", False, True),
        ("[^ab].txt", "a.txt", False, False),
        ("[a-c]1", "b1", False, True),
        ("[]]x", "]x", False, True),
        ("\\*.txt", "*.txt", False, True),
        ("\\*.txt", "a.txt", False, False),
        ("a.b", "axb", False, False),  # a dot is a dot
        ("(x)+", "(x)+", False, True),  # regex specials are literal
        ("Data/*.xml", "Data/a.xml", False, True),  # with a slash: anchored
        ("Data/*.xml", "x/Data/a.xml", False, False),
        ("Data/*.xml", "Data/sub/a.xml", False, False),  # * does not cross /
        ("/RunInfo.xml", "RunInfo.xml", False, True),
        ("/RunInfo.xml", "sub/RunInfo.xml", False, False),
        ("**/L001", "Data/Intensities/L001", True, True),
        ("**/L001", "L001", True, True),
        ("Data/**/*.cbcl", "Data/x.cbcl", False, True),
        ("Data/**/*.cbcl", "Data/a/b/c/x.cbcl", False, True),
        ("Data/**/*.cbcl", "Other/a/x.cbcl", False, False),
        ("Data/**", "Data/a/b", False, True),
        ("Data/**", "Data", True, False),  # everything inside, not the directory itself
        ("**", "anything/at/all", False, True),
        ("a**b", "axxb", False, True),  # ** inside a component is *
        ("a**b", "ax/xb", False, False),
        ("Logs/", "Logs", True, True),
        ("Logs/", "Logs", False, False),  # a file named Logs is not a directory
        ("Logs/", "Logs/x.log", False, True),  # ... but everything inside the directory is
        ("Logs/", "a/Logs/x.log", False, True),
        ("InterOp", "InterOp", True, True),
        ("a*", "b/ab/c", False, True),  # the parent directory "ab" matches
        ("a*", "b/xa/c", False, False),
    ],
)
def test_pattern_semantics(pattern: str, path: str, is_dir: bool, expected: bool) -> None:
    assert PathFilter([exc(pattern)]).matches(path, is_dir) is (not expected)
    assert PathFilter([inc(pattern)]).matches(path, is_dir) is expected


def test_case_sensitive() -> None:
    assert not PathFilter([inc("*.XML")]).matches("RunInfo.xml")


def test_paths_are_normalised() -> None:
    path_filter = PathFilter([inc("Data/*.xml")])
    assert path_filter.matches("./Data/a.xml")
    assert path_filter.matches("/Data/a.xml")
    assert path_filter.matches("Data/sub/", is_dir=True) is False


@pytest.mark.parametrize(
    "rule",
    [
        ("include", ""),
        ("exclude", "/"),
        ("exclude", "//"),
        ("keep", "*.x"),
        ("include", "a//b"),
        ("include", "[abc"),
        ("include", "a\\"),
        ("include", "[z-a]"),
    ],
)
def test_bad_rules(rule: tuple[str, str]) -> None:
    with pytest.raises(ValueError):
        PathFilter([rule])


def test_rules_compile_once() -> None:
    rule = Rule.compile("include", "Data/**/*.xml")
    assert rule.anchored and not rule.dir_only
    assert rule.regex.fullmatch("Data/a/b.xml")
    assert repr(PathFilter([inc("*.x")])) == "PathFilter([('include', '*.x')])"


# --- prune_dir -------------------------------------------------------------------------


def test_prune_an_excluded_directory() -> None:
    path_filter = PathFilter([exc("Thumbnail_Images/")])
    assert path_filter.prune_dir("Thumbnail_Images")
    assert path_filter.prune_dir("Thumbnail_Images/L001")  # decided by its parent
    assert not path_filter.prune_dir("Data")
    assert not path_filter.prune_dir("")


def test_no_prune_when_a_later_include_may_match_inside() -> None:
    assert not PathFilter([exc("Logs/"), inc("Logs/keep.txt")]).prune_dir("Logs")
    assert not PathFilter([exc("Logs/"), inc("*.txt")]).prune_dir("Logs")  # unanchored: anywhere
    assert not PathFilter([exc("Data/"), inc("Data/**/*.xml")]).prune_dir("Data/Intensities")
    assert not PathFilter([exc("Data/"), inc("**/*.xml")]).prune_dir("Data")


def test_prune_when_later_includes_cannot_match_inside() -> None:
    assert PathFilter([exc("Logs/"), inc("Data/*.xml")]).prune_dir("Logs")
    assert PathFilter([exc("Logs/"), inc("Logs")]).prune_dir("Other") is False  # nothing excludes it
    # An include before the exclude loses to it anyway.
    assert PathFilter([inc("Logs/keep.txt"), exc("Logs/")]).prune_dir("Logs")
    assert PathFilter([exc("Data/"), inc("Data/L001/*.bcl")]).prune_dir("Data/L002")


def test_no_prune_without_an_exclude_rule() -> None:
    # With includes the default is exclude, but nothing was *excluded*: stay conservative.
    assert not PathFilter([inc("*.fastq.gz")]).prune_dir("Thumbnail_Images")


_segments = st.sampled_from(["a", "b", "ab", "x.y", ".h"])
_paths = st.lists(_segments, min_size=1, max_size=4).map("/".join)
_pattern_parts = st.sampled_from(["a", "b", "*", "?", "**", "a*", "*.y", "[ab]", ".h", "x.y"])
_patterns = st.tuples(st.booleans(), st.lists(_pattern_parts, min_size=1, max_size=3), st.booleans()).map(
    lambda t: ("/" if t[0] else "") + "/".join(t[1]) + ("/" if t[2] else "")
)
_rules = st.lists(st.tuples(st.sampled_from(["include", "exclude"]), _patterns), max_size=5)


@given(_rules, _paths, st.lists(_segments, min_size=1, max_size=3).map("/".join))
def test_prune_is_never_wrong(rules: list[tuple[str, str]], directory: str, below: str) -> None:
    """If a directory is pruned, nothing inside it is included."""
    path_filter = PathFilter(rules)
    if path_filter.prune_dir(directory):
        assert not path_filter.matches(f"{directory}/{below}")
        assert not path_filter.matches(f"{directory}/{below}", is_dir=True)


@given(_rules, _paths)
def test_matches_agrees_with_a_reference(rules: list[tuple[str, str]], path: str) -> None:
    """A slow reference built on fnmatch per component, for the patterns without ** or [!...]."""
    path_filter = PathFilter(rules)

    def component_match(pattern: str, name: str) -> bool:
        return fnmatch.fnmatchcase(name, pattern)

    def rule_matches(pattern: str, target: str, is_dir: bool) -> bool:
        dir_only = pattern.endswith("/")
        body = pattern.rstrip("/")
        if dir_only and not is_dir:
            return False
        anchored = "/" in body
        pattern_parts = body.lstrip("/").split("/")
        parts = target.split("/")

        def match_from(p: list[str], t: list[str]) -> bool:
            if not p:
                return not t
            if p[0] == "**":
                if len(p) == 1:
                    return len(t) >= 1
                return any(match_from(p[1:], t[i:]) for i in range(len(t) + 1))
            return bool(t) and component_match(p[0].replace("**", "*"), t[0]) and match_from(p[1:], t[1:])

        if anchored:
            return match_from(pattern_parts, parts)
        return any(match_from(pattern_parts, parts[i:]) for i in range(len(parts)))

    components = path.split("/")
    targets = [("/".join(components[:n]), True) for n in range(1, len(components))] + [(path, False)]
    decided = None
    for kind, pattern in rules:
        if any(rule_matches(pattern, target, is_dir) for target, is_dir in targets):
            decided = kind
    expected = decided == "include" if decided else not any(kind == "include" for kind, _ in rules)
    assert path_filter.matches(path) is expected
