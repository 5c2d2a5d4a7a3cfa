"""The round-trip editor: span edits that keep everything but the reference, and the
verification that refuses any other change."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from conveyor.configs.pin import plan_file
from conveyor.configs.rewrite import (
    EditError,
    KeyInsert,
    TextEditor,
    YamlSubstitution,
    compose,
    set_mapping_value,
    split_lines,
    verify_yaml,
)
from tests.unit._pin_support import FakeResolver, fake_digest

DIGEST = fake_digest("a")


def _set_digest(text: str, parent: tuple[str | int, ...] = (0, "image")) -> str:
    documents = compose(text, what="values.yaml")
    editor = TextEditor(text, what="values.yaml")
    change = KeyInsert(parent, "digest", DIGEST, ("repository", "tag"))
    set_mapping_value(editor, documents, change, what="values.yaml")
    result = editor.result()
    verify_yaml(
        text,
        result,
        [YamlSubstitution(parent, DIGEST, key="digest", after=("repository", "tag"))],
        what="values.yaml",
    )
    return result


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ('digest: ""', f'digest: "{DIGEST}"'),
        ("digest: ''", f"digest: '{DIGEST}'"),
        ("digest:", f"digest: {DIGEST}"),
        ("digest: ~", f"digest: {DIGEST}"),
        ("digest: null  # set by CI", f"digest: {DIGEST}  # set by CI"),
        (f"digest: sha256:{'0' * 64}", f"digest: {DIGEST}"),
        (f'digest: "sha256:{"0" * 64}" # old', f'digest: "{DIGEST}" # old'),
    ],
)
def test_existing_digest_key_is_filled_in_place(before: str, after: str) -> None:
    text = f"image:\n  repository: nginx\n  tag: '1.25'\n  {before}\n  pullPolicy: Always\n"
    assert _set_digest(text) == text.replace(before, after)


def test_digest_goes_after_tag_with_its_indentation_and_comment_kept() -> None:
    text = "app:\n    image:\n        repository: nginx   # upstream\n        tag: 1.25 # pinned\n"
    result = _set_digest(text, (0, "app", "image"))
    assert result == text + f"        digest: {DIGEST}\n"


def test_no_trailing_newline_stays_without_one() -> None:
    text = "image:\n  repository: nginx\n  tag: '1.25'"
    assert _set_digest(text) == text + f"\n  digest: {DIGEST}"


def test_crlf_inserted_line_uses_crlf() -> None:
    text = "image:\r\n  repository: nginx\r\n  tag: '1.25'\r\n  pullPolicy: Always\r\n"
    assert _set_digest(text) == text.replace("'1.25'\r\n", f"'1.25'\r\n  digest: {DIGEST}\r\n")


@pytest.mark.parametrize(
    ("flow", "expected"),
    [
        ("{repository: nginx, tag: 1.25}", f"{{repository: nginx, tag: 1.25, digest: {DIGEST}}}"),
        (
            "{ repository: nginx, tag: 'a,b' }",
            f"{{ repository: nginx, tag: 'a,b', digest: {DIGEST} }}",
        ),
        (
            '{tag: "1.25", repository: nginx}',
            f'{{tag: "1.25", repository: nginx, digest: {DIGEST}}}',
        ),
    ],
)
def test_flow_mapping_gets_the_key_inline(flow: str, expected: str) -> None:
    text = f"image: {flow}\nother: 1\n"
    assert _set_digest(text) == f"image: {expected}\nother: 1\n"


def test_block_scalar_tag_is_refused() -> None:
    text = "image:\n  repository: nginx\n  tag: |\n    1.25\n"
    with pytest.raises(EditError, match="by hand"):
        _set_digest(text)


def test_verify_refuses_any_other_change() -> None:
    before = "a: 'x'  # c\nb: [1, 2]\n"
    with pytest.raises(EditError, match="beyond the image references"):
        verify_yaml(before, "a: 'x'  # c\nb: [1, 3]\n", [], what="f.yaml")
    with pytest.raises(EditError, match="beyond the image references"):
        verify_yaml(before, 'a: "x"  # c\nb: [1, 2]\n', [], what="f.yaml")  # quoting changed
    with pytest.raises(EditError, match="beyond the image references"):
        verify_yaml(before, "a: 'x'  # c\nb: [1, 2.0]\n", [], what="f.yaml")  # as written
    with pytest.raises(EditError, match="beyond the image references"):
        verify_yaml(before, "b: [1, 2]\na: 'x'\n", [], what="f.yaml")  # key order changed
    with pytest.raises(EditError, match="number of YAML documents"):
        verify_yaml(before, before + "---\nc: 1\n", [], what="f.yaml")
    verify_yaml(before, "a: 'y'  # c\nb: [1, 2]\n", [YamlSubstitution((0, "a"), "y")], what="f")


def test_two_different_edits_on_one_span_are_refused() -> None:
    editor = TextEditor("image: nginx:1.25\n", what="f")
    editor.replace(1, 8, "nginx:1.25", "nginx:1.25@" + DIGEST)
    editor.replace(1, 8, "nginx:1.25", "nginx:1.25@" + DIGEST)  # the same edit: merged
    assert editor.result() == f"image: nginx:1.25@{DIGEST}\n"
    with pytest.raises(EditError, match="same text"):
        editor.replace(1, 8, "nginx:1.25", "nginx:1.25@" + fake_digest("b"))


def test_an_anchored_image_used_through_aliases_is_pinned_once(tmp_path: Path) -> None:
    target = tmp_path / "deploy.yaml"
    text = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
        "  - name: a\n    image: &img nginx:1.25\n  - name: b\n    image: *img\n"
    )
    target.write_text(text)
    result = plan_file(target, str(target), FakeResolver())
    assert result.error is None, result.error
    assert result.after == text.replace("&img nginx:1.25", f"&img nginx:1.25@{DIGEST}").encode()


def test_locate_picks_the_occurrence_at_the_column() -> None:
    line = "image: nginx:1.25 # was nginx:1.25 before; mynginx:1.25 no\n"
    editor = TextEditor(line, what="f")
    editor.replace(1, 8, "nginx:1.25", "nginx:1.25@x")
    assert editor.result() == line.replace("image: nginx:1.25", "image: nginx:1.25@x")
    editor = TextEditor(line, what="f")
    editor.replace(1, 25, "nginx:1.25", "N")
    assert editor.result() == "image: nginx:1.25 # was N before; mynginx:1.25 no\n"
    with pytest.raises(EditError, match="cannot find"):
        TextEditor("image: mynginx:1.25x\n", what="f").replace(1, 8, "nginx:1.25", "N")


def test_split_lines_matches_yaml_line_breaks() -> None:
    text = "a\r\nb\rc\nd"
    assert split_lines(text) == ["a\r\n", "b\r", "c\n", "d"]
    assert "".join(split_lines(text)) == text


def test_byte_order_mark_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "docker-compose.yml"
    target.write_bytes(b"\xef\xbb\xbfservices:\n  web:\n    image: nginx:1.25\n")
    result = plan_file(target, str(target), FakeResolver())
    assert result.error is None, result.error
    assert result.after == (
        b"\xef\xbb\xbfservices:\n  web:\n    image: nginx:1.25@" + DIGEST.encode() + b"\n"
    )


# --- property: random layouts of a Deployment, only the reference changes ------------------

_QUOTES = st.sampled_from(["", "'", '"'])
_INDENTS = st.sampled_from([2, 4])
_COMMENTS = st.sampled_from(["", "  # note", " #x: y", "   # image: busybox:1.36"])
_IMAGES = st.sampled_from(
    ["nginx:1.25", "docker.io/library/nginx:1.25", "registry.example.com/team/web:1.4.2"]
)


@settings(max_examples=60, deadline=None)
@given(
    quote=_QUOTES,
    indent=_INDENTS,
    comment=_COMMENTS,
    image=_IMAGES,
    crlf=st.booleans(),
    trailing_newline=st.booleans(),
    dash_inline=st.booleans(),
)
def test_only_the_reference_changes(
    tmp_path_factory: pytest.TempPathFactory,
    quote: str,
    indent: int,
    comment: str,
    image: str,
    crlf: bool,
    trailing_newline: bool,
    dash_inline: bool,
) -> None:
    pad = " " * indent
    item = f"{pad}- name: web\n{pad}  image: {quote}{image}{quote}{comment}"
    if not dash_inline:
        item = f"{pad}-\n{pad}  name: web\n{pad}  image: {quote}{image}{quote}{comment}"
    text = (
        "# top\napiVersion: v1\nkind: Pod\nmetadata:\n"
        f"{pad}name: p  # keep\nspec:\n{pad}containers:\n{item}"
    )
    if trailing_newline:
        text += "\n"
    if crlf:
        text = text.replace("\n", "\r\n")
    target = tmp_path_factory.mktemp("prop") / "pod.yaml"
    target.write_bytes(text.encode())
    result = plan_file(target, str(target), FakeResolver())
    assert result.error is None, result.error
    digest = FakeResolver().tags["docker.io/library/nginx:1.25" if "nginx" in image else f"{image}"]
    expected = text.replace(
        f"{quote}{image}{quote}{comment}", f"{quote}{image}@{digest}{quote}{comment}"
    )
    assert result.after == expected.encode()


def test_unusual_line_breaks_count_as_each_parser_counts_them(tmp_path: Path) -> None:
    # libyaml counts U+2028 as a line break (a YAML site's line is after it); str.splitlines
    # counts a form feed (a Dockerfile site's line is after it).
    compose_file = tmp_path / "docker-compose.yml"
    text = 'x-note: "odd\u2028text"\nservices:\n  web:\n    image: nginx:1.25\n'
    compose_file.write_text(text, encoding="utf-8")
    result = plan_file(compose_file, str(compose_file), FakeResolver())
    assert result.error is None, result.error
    assert result.after == text.replace("nginx:1.25", f"nginx:1.25@{DIGEST}").encode()
    dockerfile = tmp_path / "Dockerfile"
    text = "# x\x0cy\nFROM nginx:1.25\n"
    dockerfile.write_text(text, encoding="utf-8")
    result = plan_file(dockerfile, str(dockerfile), FakeResolver())
    assert result.error is None, result.error
    assert result.after == text.replace("nginx:1.25", f"nginx:1.25@{DIGEST}").encode()
