"""Lesson Markdown to HTML, through an allow-list sanitiser."""

from __future__ import annotations

import markdown  # the library (imports are absolute), not this module
import nh3
from markdown.extensions.toc import slugify_unicode

ALLOWED_TAGS = {
    "a",
    "abbr",
    "blockquote",
    "br",
    "code",
    "dd",
    "div",
    "dl",
    "dt",
    "em",
    "figcaption",
    "figure",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "img",
    "kbd",
    "li",
    "ol",
    "p",
    "pre",
    "span",
    "strong",
    "sub",
    "sup",
    "table",
    "tbody",
    "td",
    "th",
    "thead",
    "tr",
    "ul",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "td": {"align"},
    "th": {"align"},
    "code": {"class"},
    "span": {"class"},
    "div": {"class"},
    **{f"h{i}": {"id"} for i in range(1, 7)},
}


# Every id in lesson HTML gets this prefix, and no id of the page's own starts with it (templates/
# and static/js/ use `steps`, `lab`, `progress`…), so a heading "Steps" or a `{#lab}` cannot take one
# over. Always added, even to an id that has it already, so that `lesson-x` and `x` stay apart.
ID_PREFIX = "lesson-"


def _namespace_ids(tag: str, attr: str, value: str) -> str:
    if attr == "id":
        return ID_PREFIX + value
    if tag == "a" and attr == "href" and value.startswith("#") and len(value) > 1:
        return "#" + ID_PREFIX + value[1:]  # an in-lesson link (`[see](#steps)`) follows its heading
    return value


def render_markdown(text: str) -> str:
    """Markdown to HTML, then an allow-list sanitiser: lesson text is trusted-ish, pages are not.

    Every id, whether a heading's from its text, a `{#id}` or raw HTML, comes out as `lesson-<id>`,
    and links to `#<id>` as `#lesson-<id>`.
    """
    html = markdown.markdown(
        text,
        extensions=["fenced_code", "tables", "sane_lists", "toc", "attr_list"],
        extension_configs={"toc": {"slugify": slugify_unicode}},  # Bulgarian headings get readable ids
    )
    return nh3.clean(html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES, attribute_filter=_namespace_ids)
