"""HTML sanitizing (nh3) and HTML-to-text for message bodies."""
from __future__ import annotations

import html as html_lib
import re

import nh3

_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd", "del", "div", "dl", "dt",
    "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "ol", "p", "pre",
    "q", "s", "small", "span", "strike", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th",
    "thead", "tr", "tt", "u", "ul", "center",
}
_ATTRS = {
    "*": {"title", "dir", "lang", "align"},
    "a": {"href", "name"},
    "img": {"src", "alt", "width", "height", "data-remote-src"},
    "td": {"colspan", "rowspan", "valign"},
    "th": {"colspan", "rowspan", "valign", "scope"},
    "font": {"color"},
    "ol": {"start", "type"},
    "blockquote": {"cite", "type"},
}
_REMOTE_IMG = re.compile(r'(<img\b[^>]*?)\bsrc="(https?://[^"]*)"', re.IGNORECASE)


def sanitize_html(value: str) -> str:
    """Allow-list sanitizing: no script, styles, event handlers or javascript:
    URLs. Remote images are not loaded until the agent asks: their `src`
    becomes `data-remote-src` (no tracking pixel fires on open)."""
    if not value:
        return ""
    cleaned = nh3.clean(
        value,
        tags=_TAGS,
        attributes=_ATTRS,
        url_schemes={"http", "https", "mailto", "tel", "cid", "data"},
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
    return _REMOTE_IMG.sub(r'\1data-remote-src="\2"', cleaned)


_BLOCK = re.compile(r"</?(p|div|br|tr|li|h[1-6]|blockquote|pre|table)\b[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")
_STYLE = re.compile(r"<(script|style|head)\b.*?</\1>", re.IGNORECASE | re.DOTALL)
_SPACES = re.compile(r"[ \t\r\f\v]+")
_NEWLINES = re.compile(r"\n{3,}")


def html_to_text(value: str) -> str:
    if not value:
        return ""
    text = _STYLE.sub("", value)
    text = _BLOCK.sub("\n", text)
    text = _TAG.sub("", text)
    text = html_lib.unescape(text)
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.splitlines())
    return _NEWLINES.sub("\n\n", text).strip()
