"""HTML sanitizing: the bridge's sanitizer (connector/mail/html.py) against nh3 (Ammonia).

Both are asked for the same policy as far as nh3 can express it: formatting kept, active
content and its content dropped, only safe URL schemes, and nothing that loads remote content
(remote ``img src``, ``srcset``, ``background``, loading CSS). nh3 cannot turn a remote image
into a link (it only keeps or drops attributes), keeps only CSS properties named in an
allow-list, and needs a Python callback per attribute to tell a ``cid:``/``data:image`` src
from a remote one; the callback is included because without it nh3 cannot hold the policy.

Input: the HTML bodies of the benchmark corpus (bench/corpus.py, parsed by the bridge's
parser) plus the test HTML with remote content of tests/test_security_agents.py, repeated.

    python3 bench/sanitize.py [--count 2000] [--repeat 5]

Prints bodies/s and MB/s per sanitizer (best of ``--repeat``), one core.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import generate  # noqa: E402

from connector.mail.html import sanitize_html  # noqa: E402
from connector.mail.parse import parse_message  # noqa: E402

_TAGS = {"a", "abbr", "b", "blockquote", "br", "caption", "center", "code", "col", "colgroup",
         "dd", "del", "div", "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
         "i", "img", "ins", "li", "ol", "p", "pre", "q", "s", "small", "span", "strike",
         "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u",
         "ul", "section", "article", "header", "footer", "figure", "figcaption", "main", "nav",
         "address", "cite", "kbd", "mark", "time", "var", "wbr", "html", "body", "head",
         "meta", "picture", "source", "video", "audio", "label", "big", "map", "area"}
_DROP_CONTENT = {"script", "style", "iframe", "object", "applet", "noembed", "noframes",
                 "template", "svg", "math", "select", "textarea", "title"}
_ATTRIBUTES = {"*": {"class", "style", "title", "dir", "lang", "align", "valign", "width",
                     "height", "bgcolor", "color", "border", "cellpadding", "cellspacing",
                     "face", "size", "colspan", "rowspan", "id", "name"},
               "a": {"href"}, "img": {"src", "alt"}}
_STYLE_PROPERTIES = {"color", "background-color", "font", "font-family", "font-size",
                     "font-weight", "font-style", "text-align", "text-decoration",
                     "text-indent", "line-height", "margin", "margin-top", "margin-bottom",
                     "margin-left", "margin-right", "padding", "padding-top", "padding-bottom",
                     "padding-left", "padding-right", "border", "border-top", "border-bottom",
                     "border-left", "border-right", "border-collapse", "width", "height",
                     "vertical-align", "white-space", "display"}


def _attribute_filter(tag: str, name: str, value: str) -> str | None:
    if tag == "img" and name == "src":
        lowered = value.strip().lower()
        if lowered.startswith("cid:") or (lowered.startswith("data:image/")
                                          and not lowered.startswith("data:image/svg")):
            return value
        return None
    return value


def nh3_clean(html: str) -> str:
    import nh3

    return nh3.clean(html, tags=_TAGS, clean_content_tags=_DROP_CONTENT,
                     attributes=_ATTRIBUTES, attribute_filter=_attribute_filter,
                     url_schemes={"http", "https", "mailto", "cid", "tel", "ftp", "data"},
                     filter_style_properties=_STYLE_PROPERTIES, link_rel=None)


def bodies(count: int) -> list[str]:
    found = []
    for mail in generate(count, scale=0.05):
        html = parse_message(mail.raw).html_body
        if html:
            found.append(html)
    from test_security_agents import TRACKING_HTML  # type: ignore[import-not-found]

    return found + [TRACKING_HTML] * max(1, len(found) // 10)


def best_rate(clean: Callable[[str], str], items: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for html in items:
            clean(html)
        best = min(best, time.perf_counter() - started)
    return len(items) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    items = bodies(args.count)
    size = sum(len(h.encode()) for h in items)
    print(f"{len(items)} HTML bodies, {size / 1e6:.1f} MB, mean {size / len(items):.0f} bytes")
    for label, clean in (("connector.mail.html.sanitize_html", sanitize_html),
                         ("nh3.clean (same policy, attribute callback)", nh3_clean)):
        rate = best_rate(clean, items, args.repeat)
        print(f"{label:48s} {rate:8.0f} bodies/s  {rate * size / len(items) / 1e6:6.1f} MB/s")


if __name__ == "__main__":
    main()
