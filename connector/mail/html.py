"""HTML bodies: make them safe to show, and turn them into readable text.

Both are built on the stdlib's forgiving :class:`html.parser.HTMLParser`, which accepts any
tag soup without raising, so broken mail HTML never stops a message.
"""

from __future__ import annotations

import re
from html import escape
from html.parser import HTMLParser

__all__ = ["html_to_text", "sanitize_html", "text_to_html"]

# Elements removed together with everything inside them.
_DROP_WITH_CONTENT = frozenset(
    {
        "script",
        "style",
        "iframe",
        "frame",
        "frameset",
        "object",
        "applet",
        "noembed",
        "noframes",
        "template",
        "svg",
        "math",
        "select",
        "textarea",
        "title",
    }
)
# Elements removed alone: their text content (if any) stays.
_DROP_TAG_ONLY = frozenset(
    {"embed", "form", "input", "button", "option", "optgroup", "base", "link", "keygen", "param"}
)
_URL_ATTRIBUTES = frozenset(
    {
        "href",
        "src",
        "action",
        "formaction",
        "background",
        "lowsrc",
        "dynsrc",
        "poster",
        "cite",
        "longdesc",
        "usemap",
        "data",
        "codebase",
        "xlink:href",
        "ping",
        "profile",
        "manifest",
    }
)
_SAFE_SCHEMES = frozenset({"http", "https", "mailto", "cid", "tel", "ftp", "callto", "sms"})
_SCRIPT_SCHEME = re.compile(r"^(javascript|vbscript|livescript|mocha):")
_SCHEME = re.compile(r"^([a-z][a-z0-9+.\-]*):")
_INVISIBLE = re.compile(r"[\x00-\x20\x7f-\xa0\u200b-\u200f\u2028\u2029\ufeff]+")
_TAG_NAME = re.compile(r"^[a-z][a-z0-9\-]*(:[a-z][a-z0-9\-]*)?$")
_ATTRIBUTE_NAME = re.compile(r"^[a-zA-Z_:][-a-zA-Z0-9_:.]*$")
_DANGEROUS_STYLE = re.compile(
    r"expression\s*\(|javascript:|vbscript:|behavior\s*:|-moz-binding|@import", re.IGNORECASE
)
# Attributes whose URL the browser fetches on its own when the HTML is shown.
_LOADING_ATTRIBUTES = frozenset(
    {"src", "srcset", "background", "lowsrc", "dynsrc", "poster", "ping", "data", "codebase",
     "profile", "manifest", "imagesrcset"}
)
_CSS_COMMENT = re.compile(r"/\*.*?(?:\*/|$)", re.DOTALL)
_CSS_ESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})[ \t\r\n\f]?|(.))", re.DOTALL)
# CSS that fetches: url() and its image functions, @import, and the IE-era behaviours.
_CSS_LOADS = re.compile(r"url\(|image(?:-set)?\(|src\(|cross-fade\(|element\(|@import|"
                        r"behavior|binding")
_VOID = frozenset(
    {
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
        "keygen",
    }
)


def sanitize_html(html: str, *, remote_content: bool = False) -> str:
    """``html`` without anything that runs, submits, redirects or loads content by itself.

    Removes script/style/iframe/object/embed/form (and kin), ``on*`` handler attributes,
    URLs whose scheme is not http(s)/mailto/cid/tel/ftp (so javascript:, vbscript: and data:
    go; ``data:image/...`` stays in ``<img src>``), ``<meta http-equiv>`` (refresh and the
    like), comments and declarations. Ordinary formatting and ``cid:`` image references stay.

    Unless ``remote_content`` is True, nothing loads from elsewhere when the HTML is shown (a
    tracking pixel tells the sender who read the mail, when and from where): an ``<img>``
    with a remote ``src`` becomes a link to it (``[image: alt]``), and ``srcset``,
    ``background``, ``poster``, other loading attributes with a remote URL and the CSS
    declarations that load (``url()``, ``image-set()``, ``@import``) are removed.
    """
    sanitizer = _Sanitizer(remote_content=remote_content)
    sanitizer.feed(html)
    sanitizer.close()
    return "".join(sanitizer.out)


def html_to_text(html: str) -> str:
    """Readable plain text of an HTML body.

    Block elements and ``<br>`` give line breaks, list items start with "- ", link text is
    kept, entities are decoded, runs of blanks collapse (except in ``<pre>``), and
    script/style/head content is dropped.
    """
    converter = _TextConverter()
    converter.feed(html)
    converter.close()
    return converter.text()


def text_to_html(text: str) -> str:
    """Plain text as an HTML block that keeps its line breaks."""
    return f'<div style="white-space: pre-wrap">{escape(text, quote=False)}</div>'


def _url_is_safe(tag: str, attribute: str, value: str) -> bool:
    cleaned = _INVISIBLE.sub("", value).lower()
    scheme = _SCHEME.match(cleaned)
    if scheme is None:
        return True  # relative URL or fragment
    if scheme.group(1) == "data":
        return (
            tag == "img"
            and attribute == "src"
            and cleaned.startswith("data:image/")
            and (not cleaned.startswith("data:image/svg"))
        )
    return scheme.group(1) in _SAFE_SCHEMES


def _srcset_is_safe(tag: str, value: str) -> bool:
    for candidate in value.split(","):
        url = candidate.strip().split(" ", 1)[0]
        if url and not _url_is_safe(tag, "srcset", url):
            return False
    return True


def _is_local(value: str) -> bool:
    """A URL that loads nothing from the network: ``cid:`` (an attachment of the mail) or an
    inline ``data:image``."""
    cleaned = _INVISIBLE.sub("", value).lower()
    return cleaned.startswith("cid:") or (cleaned.startswith("data:image/")
                                          and not cleaned.startswith("data:image/svg"))


def _css_plain(value: str) -> str:
    """CSS as a browser reads it for matching: comments gone, escapes decoded, lower case."""
    value = _CSS_COMMENT.sub("", value)
    value = _CSS_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)) if m.group(1) and
                            int(m.group(1), 16) < 0x110000 else (m.group(2) or ""), value)
    return _INVISIBLE.sub("", value).lower()


def _style_without_loads(value: str) -> str:
    """The declarations of a style attribute that load nothing."""
    kept = [d for d in value.split(";") if d.strip() and not _CSS_LOADS.search(_css_plain(d))]
    return "; ".join(d.strip() for d in kept)


class _Sanitizer(HTMLParser):
    def __init__(self, *, remote_content: bool = False) -> None:
        super().__init__(convert_charrefs=True)
        self.remote_content = remote_content
        self.out: list[str] = []
        # Names of the dropped elements we are inside of; their content is skipped.
        self.skipping: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, self_closing=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, self_closing=True)

    def _start(self, tag: str, attrs: list[tuple[str, str | None]], *, self_closing: bool) -> None:
        if self.skipping:
            if tag == self.skipping[-1] and not self_closing:
                self.skipping.append(tag)
            return
        if tag in _DROP_WITH_CONTENT:
            if not self_closing:
                self.skipping.append(tag)
            return
        if tag in _DROP_TAG_ONLY or not _TAG_NAME.match(tag):
            return
        if tag == "meta" and any(name == "http-equiv" for name, _ in attrs):
            return
        if tag == "img" and not self.remote_content and self._remote_image(attrs):
            return
        kept = self._safe_attributes(tag, attrs)
        ending = " /" if self_closing else ""
        self.out.append(f"<{tag}{kept}{ending}>")

    def _remote_image(self, attrs: list[tuple[str, str | None]]) -> bool:
        """An ``<img>`` whose ``src`` loads from elsewhere: written as a link the agent may
        follow instead (True), or left to the attribute rules (False)."""
        src = next((v for k, v in attrs if k == "src" and v), None)
        if src is None or _is_local(src):
            return False
        alt = next((v for k, v in attrs if k in ("alt", "title") and v and v.strip()), "")
        label = escape(f"[image: {alt.strip()}]" if alt else "[image]", quote=False)
        if _url_is_safe("a", "href", src) and _SCHEME.match(_INVISIBLE.sub("", src).lower()):
            href = escape(src, quote=True)
            self.out.append(f'<a href="{href}" rel="noopener noreferrer nofollow" '
                            f'target="_blank">{label}</a>')
        else:
            self.out.append(label)
        return True

    def _safe_attributes(self, tag: str, attrs: list[tuple[str, str | None]]) -> str:
        parts: list[str] = []
        for name, value in attrs:
            if not _ATTRIBUTE_NAME.match(name) or name.startswith("on"):
                continue
            if value is None:
                parts.append(f" {name}")
                continue
            if not self.remote_content and name in _LOADING_ATTRIBUTES and \
                    not (name != "srcset" and _is_local(value)):
                continue  # loads by itself when shown (srcset: never needed for cid/data)
            if not self.remote_content and name == "xlink:href" and tag != "a":
                continue
            if name in _URL_ATTRIBUTES and not _url_is_safe(tag, name, value):
                continue
            if _SCRIPT_SCHEME.match(_INVISIBLE.sub("", value).lower()):
                continue  # no attribute needs a script URL, whatever its name
            if name == "srcset" and not _srcset_is_safe(tag, value):
                continue
            if name == "style" and _DANGEROUS_STYLE.search(value):
                continue
            if name == "style" and not self.remote_content:
                value = _style_without_loads(value)
                if not value:
                    continue
            parts.append(f' {name}="{escape(value, quote=True)}"')
        return "".join(parts)

    def handle_endtag(self, tag: str) -> None:
        if self.skipping:
            if tag == self.skipping[-1]:
                self.skipping.pop()
            return
        if tag in _DROP_WITH_CONTENT or tag in _DROP_TAG_ONLY or tag in _VOID:
            return
        if not _TAG_NAME.match(tag):
            return
        self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.out.append(escape(data, quote=False))

    # Comments (including conditional comments), doctype, processing instructions and CDATA
    # are dropped: none of them carries visible text a reader needs.
    def handle_comment(self, data: str) -> None:
        return

    def handle_decl(self, decl: str) -> None:
        return

    def handle_pi(self, data: str) -> None:
        return

    def unknown_decl(self, data: str) -> None:
        return


# Blocks separated by a blank line, and blocks that only start a new line.
_PARAGRAPHS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table", "ul", "ol", "dl"}
)
_LINES = frozenset(
    {
        "div",
        "li",
        "tr",
        "dt",
        "dd",
        "section",
        "article",
        "header",
        "footer",
        "nav",
        "aside",
        "address",
        "hr",
        "form",
        "fieldset",
        "figure",
        "figcaption",
        "main",
        "center",
        "caption",
        "tbody",
        "thead",
        "tfoot",
        "body",
        "html",
    }
)
_HIDDEN = frozenset(
    {
        "script",
        "style",
        "head",
        "title",
        "template",
        "noframes",
        "select",
        "textarea",
        "svg",
        "iframe",
    }
)
_BLANKS = re.compile(r"[ \t\n\r\f\v\xa0\u200b]+")


class _TextConverter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.hidden: list[str] = []
        self.pre_depth = 0
        self.list_depth = 0
        # True while nothing but blanks has been written since the last line break.
        self.at_line_start = True

    def _newlines(self, count: int) -> None:
        if not self.out:
            return
        tail = 0
        for chunk in reversed(self.out):
            stripped = chunk.rstrip("\n")
            tail += len(chunk) - len(stripped)
            if stripped:
                break
        if tail < count:
            self.out.append("\n" * (count - tail))
        self.at_line_start = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.hidden:
            if tag == self.hidden[-1]:
                self.hidden.append(tag)
            return
        if tag in _HIDDEN:
            self.hidden.append(tag)
            return
        self._open(tag, attrs)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if not self.hidden and tag not in _HIDDEN:
            self._open(tag, attrs)

    def _open(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.out.append("\n")
            self.at_line_start = True
        elif tag in ("ul", "ol"):
            self._newlines(1 if self.list_depth else 2)
            self.list_depth += 1
        elif tag == "li":
            self._newlines(1)
            self.out.append("  " * max(self.list_depth - 1, 0) + "- ")
            self.at_line_start = True
        elif tag in _PARAGRAPHS:
            self._newlines(2)
            if tag == "pre":
                self.pre_depth += 1
        elif tag in _LINES:
            self._newlines(1)
        elif tag in ("td", "th"):
            if not self.at_line_start:
                self.out.append(" ")
        elif tag == "img":
            alt = next((v for k, v in attrs if k == "alt" and v), None)
            if alt and alt.strip():
                self.handle_data(f"[{alt.strip()}]")

    def handle_endtag(self, tag: str) -> None:
        if self.hidden:
            if tag == self.hidden[-1]:
                self.hidden.pop()
            return
        if tag in ("ul", "ol"):
            self.list_depth = max(self.list_depth - 1, 0)
            self._newlines(1 if self.list_depth else 2)
        elif tag in _PARAGRAPHS:
            if tag == "pre":
                self.pre_depth = max(self.pre_depth - 1, 0)
            self._newlines(2)
        elif tag in _LINES:
            self._newlines(1)

    def handle_data(self, data: str) -> None:
        if self.hidden or not data:
            return
        if self.pre_depth:
            self.out.append(data.replace("\r\n", "\n").replace("\xa0", " "))
            self.at_line_start = data.endswith("\n")
            return
        text = _BLANKS.sub(" ", data)
        if self.at_line_start:
            text = text.lstrip(" ")
        elif self.out and self.out[-1].endswith(" ") and text.startswith(" "):
            text = text[1:]
        if text:
            self.out.append(text)
            self.at_line_start = False

    def text(self) -> str:
        lines = [line.rstrip() for line in "".join(self.out).split("\n")]
        joined = "\n".join(lines)
        return re.sub(r"\n{3,}", "\n\n", joined).strip("\n").strip()
