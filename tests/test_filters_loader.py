"""Loading validates everything before any mail is touched; every error names file and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from connector.errors import ConfigError
from connector.filters import FilterLoadError, load_chain, load_text


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def errors_of(text: str) -> list[str]:
    with pytest.raises(FilterLoadError) as info:
        load_text(textwrap.dedent(text), "f.yaml")
    return info.value.errors


def test_valid_file_loads_in_written_order_with_lines():
    chain = load_text(
        textwrap.dedent(
            """\
            - name: second-by-name-first-by-order
              match:
                - header: Subject
                  regex: 'x'
              set:
                X-OTRS-Queue: Raw
            - name: a-first-by-name
              match:
                - field: body
                  contains: y
              add_tags: [t]
              stop_after_match: true
            """
        ),
        "f.yaml",
    )
    assert [f.name for f in chain.filters] == ["second-by-name-first-by-order", "a-first-by-name"]
    first, second = chain.filters
    assert (first.line, first.conditions[0].line, first.sets[0].line) == (1, 3, 6)
    assert first.sets[0].control == "X-OTOBO-Queue"  # the X-OTRS alias is canonicalised
    assert second.stop_after_match is True and second.add_tags == ("t",)


def test_files_run_in_name_order_and_directories_in_given_order(tmp_path):
    shipped, local = tmp_path / "shipped", tmp_path / "local"
    shipped.mkdir()
    local.mkdir()
    rule = "- name: {n}\n  match:\n    - header: Subject\n      contains: x\n  add_tags: [t]\n"
    write(shipped, "20-b.yaml", rule.format(n="b"))
    write(shipped, "10-a.yml", rule.format(n="a"))
    write(shipped, ".hidden.yaml", "not: [valid")
    write(shipped, "notes.txt", "ignored")
    write(local, "05-c.yaml", rule.format(n="c"))
    chain = load_chain([shipped, local])
    assert [f.name for f in chain.filters] == ["a", "b", "c"]
    assert chain.files == (
        str(shipped / "10-a.yml"),
        str(shipped / "20-b.yaml"),
        str(local / "05-c.yaml"),
    )


def test_comment_only_file_is_empty_not_an_error(tmp_path):
    write(tmp_path, "00-empty.yaml", "# nothing yet\n")
    assert load_chain([tmp_path]).filters == ()


def test_unknown_key_is_reported_with_line_and_suggestion():
    errors = errors_of(
        """\
        - name: x
          match:
            - header: Subject
              contains: a
          add_tags: [t]
          stop_after_matches: true
        """
    )
    assert errors == [
        "f.yaml:6: unknown filter key 'stop_after_matches' (did you mean 'stop_after_match'?)"
    ]


def test_unknown_control_header_in_set_suggests_the_right_one():
    errors = errors_of(
        """\
        - name: x
          match:
            - header: Subject
              contains: a
          set:
            X-OTOBO-Priorty: 3 normal
        """
    )
    assert errors == [
        "f.yaml:6: filter 'x': unknown control header 'X-OTOBO-Priorty' "
        "(did you mean X-OTOBO-Priority?)"
    ]


def test_non_control_header_cannot_be_set():
    errors = errors_of(
        """\
        - name: x
          match: [{header: Subject, contains: a}]
          set:
            Subject: changed
        """
    )
    assert errors == [
        "f.yaml:4: filter 'x': 'Subject' is not a control header (X-OTOBO-*, X-Bridge-*)"
    ]


def test_bad_regex_is_reported_at_the_operator_line():
    errors = errors_of(
        """\
        - name: x
          match:
            - header: Subject
              regex: '(unclosed'
          add_tags: [t]
        """
    )
    assert len(errors) == 1
    assert errors[0].startswith("f.yaml:4: filter 'x': regex '(unclosed' does not compile")


def test_empty_and_missing_match_lists():
    errors = errors_of(
        """\
        - name: empty
          match: []
          add_tags: [t]
        - name: missing
          add_tags: [t]
        """
    )
    assert errors == [
        "f.yaml:2: filter 'empty': match must be a non-empty list of conditions",
        "f.yaml:4: filter 'missing': filter has no match list "
        "(a filter without conditions never runs)",
    ]


def test_condition_shape_errors():
    errors = errors_of(
        """\
        - name: x
          match:
            - header: Subject
            - header: Subject
              field: body
              contains: a
            - field: bodi
              contains: a
            - header: body
              contains: a
            - header: Subject
              contains: a
              is: b
            - header: Subject
              contains: a
              nott: true
          add_tags: [t]
        """
    )
    assert errors == [
        "f.yaml:3: filter 'x': a condition has exactly one operator of: regex, contains, is, "
        "starts_with, ends_with, is_any_of, exists",
        "f.yaml:4: filter 'x': a condition names exactly one of header: or field:",
        "f.yaml:7: filter 'x': unknown pseudo-field 'bodi' (did you mean 'body'?)",
        "f.yaml:9: filter 'x': 'body' is a pseudo-field: write field: body",
        "f.yaml:11: filter 'x': a condition has exactly one operator of: regex, contains, is, "
        "starts_with, ends_with, is_any_of, exists",
        "f.yaml:16: filter 'x': unknown condition key 'nott' (did you mean 'not'?)",
    ]


def test_values_are_checked_against_the_vocabulary():
    errors = errors_of(
        """\
        - name: x
          match: [{header: Subject, contains: a}]
          set:
            X-OTOBO-Ignore: maybe
            X-OTOBO-AttachmentCount: "3"
            X-OTOBO-Queue: a
            X-OTRS-Queue: b
        """
    )
    assert errors == [
        "f.yaml:4: filter 'x': X-OTOBO-Ignore takes one of yes, no, true, false, not 'maybe'",
        "f.yaml:5: filter 'x': X-OTOBO-AttachmentCount is set by the bridge; "
        "filters can match it, not set it",
        "f.yaml:7: filter 'x': X-OTOBO-Queue is set twice (first at line 6)",
    ]


def test_yes_stays_a_string_value():
    chain = load_text(
        "- name: x\n  match: [{header: Subject, contains: a}]\n  set:\n    X-OTOBO-Ignore: yes\n"
    )
    assert chain.filters[0].sets[0].value == "yes"


def test_placeholders_need_a_capturing_condition():
    errors = errors_of(
        """\
        - name: x
          match:
            - header: Subject
              regex: 'no group'
            - header: From
              regex: '(?P<who>\\w+)@'
              not: true
          set:
            X-OTOBO-Title: "[***] and [***who]"
            X-OTOBO-Queue: "[***ok]"
        """
    )
    assert errors == [
        "f.yaml:9: filter 'x': [***] has no capture: no regex condition defines group 1",
        "f.yaml:9: filter 'x': [***who] has no capture: no regex condition defines group who",
        "f.yaml:10: filter 'x': [***ok] has no capture: no regex condition defines group ok",
    ]


def test_tags_and_booleans_are_typed():
    errors = errors_of(
        """\
        - name: x
          match:
            - header: Subject
              contains: a
              not: "yes please"
          add_tags: [good, "two words"]
          stop_after_match: 1
        """
    )
    assert errors == [
        "f.yaml:5: filter 'x': not must be true or false",
        "f.yaml:6: filter 'x': add_tags: tags cannot contain spaces or commas: ['two words']",
        "f.yaml:7: filter 'x': stop_after_match must be true or false",
    ]


def test_filter_that_does_nothing_and_duplicate_keys():
    errors = errors_of(
        """\
        - name: idle
          match: [{header: Subject, contains: a}]
        - name: dup
          name: dup2
          match: [{header: Subject, contains: a}]
          add_tags: [t]
        """
    )
    assert errors == [
        "f.yaml:1: filter 'idle': filter does nothing: give set, add_tags or remove_tags",
        "f.yaml:4: duplicate filter key 'name'",
    ]


def test_yaml_syntax_error_names_the_line():
    errors = errors_of("- name: x\n  match: [unclosed\n")
    assert len(errors) == 1
    assert errors[0].startswith("f.yaml:3: YAML syntax error")


def test_top_level_must_be_a_list():
    assert errors_of("name: x\n") == ["f.yaml:1: a filter file is a list of filters"]


def test_duplicate_names_across_files_and_missing_directory(tmp_path):
    rule = "- name: same\n  match:\n    - header: Subject\n      contains: x\n  add_tags: [t]\n"
    first = write(tmp_path, "10-a.yaml", rule)
    second = write(tmp_path, "20-b.yaml", "# a comment\n" + rule)
    with pytest.raises(FilterLoadError) as info:
        load_chain([tmp_path, tmp_path / "nope"])
    assert info.value.errors == [
        f"{tmp_path / 'nope'}: filter directory does not exist",
        f"{second}:2: filter name 'same' is already used at {first}:1",
    ]
    assert isinstance(info.value, ConfigError)
    assert "2 errors in filter files" in str(info.value)


def test_all_files_are_checked_before_failing(tmp_path):
    write(tmp_path, "10-a.yaml", "- name: a\n  match: []\n  add_tags: [t]\n")
    write(tmp_path, "20-b.yaml", "- name: b\n  match: [{header: X-OTOBO-Quee, is: x}]\n"
          "  add_tags: [t]\n")
    with pytest.raises(FilterLoadError) as info:
        load_chain([tmp_path])
    assert [e.split(":")[1] for e in info.value.errors] == ["2", "2"]
    assert "did you mean X-OTOBO-Queue?" in info.value.errors[1]


def test_host_errors_report_values_the_host_cannot_take():
    chain = load_text(
        textwrap.dedent(
            """\
            - name: x
              match:
                - header: Subject
                  regex: 'queue=(\\w+)'
              set:
                X-OTOBO-Queue: Nowhere
                X-OTOBO-Priority: "[***]"
                X-OTOBO-DynamicField-Contract: c
            """
        ),
        "f.yaml",
    )
    seen = []

    def accepts(control: str, value: str | None) -> str | None:
        seen.append((control, value))
        if control == "X-OTOBO-Queue" and value == "Nowhere":
            return "queue 'Nowhere' is not mapped to a group"
        if control.startswith("X-OTOBO-DynamicField-"):
            return f"{control} is not mapped to a custom field"
        return None

    assert chain.host_errors(accepts) == [
        "f.yaml:6: filter 'x': queue 'Nowhere' is not mapped to a group",
        "f.yaml:8: filter 'x': X-OTOBO-DynamicField-Contract is not mapped to a custom field",
    ]
    assert ("X-OTOBO-Priority", None) in seen  # placeholder values are checked by name only
