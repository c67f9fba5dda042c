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


def render_markdown(text: str) -> str:
    """Markdown to HTML, then an allow-list sanitiser: lesson text is trusted-ish, pages are not."""
    html = markdown.markdown(
        text,
        extensions=["fenced_code", "tables", "sane_lists", "toc", "attr_list"],
        extension_configs={"toc": {"slugify": slugify_unicode}},  # Bulgarian headings get readable ids
    )
    return nh3.clean(html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES)
