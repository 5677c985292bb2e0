"""How well follow-up trimming finds a reply's own text: mail-parser-reply against quotequail.

Runs both, and the product's combination, on the real replies in tests/data/replies, whose new
text the source's tests state (expected.json), and prints for each how many it trimmed exactly
right (whitespace normalised), how many it left whole, how many it cut wrongly, and the cost per
reply. The product
uses connector/mail/quoting.py (mail-parser-reply, then quotequail where the first kept the
text whole, with guards against cutting too much); `quotequail` is run as its
documentation describes, with the intro line ("On ... wrote:") counted as quoted.

    python3 bench/reply_trimming.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import quotequail  # noqa: E402

from connector.mail.parse import parse_message  # noqa: E402
from connector.mail.quoting import _parser, new_text  # noqa: E402

REPLIES = ROOT / "tests" / "data" / "replies"


def normalized(text: str) -> str:
    return " ".join(text.split())


def with_quotequail(body: str) -> str:
    parts = quotequail.quote(body, quote_intro_line=True)
    return "".join(text for keep, text in parts[:1] if keep) or body


def with_mail_parser_reply(body: str) -> str:
    return _parser().parse_reply(text=body) or body


def with_product(body: str) -> str:
    return new_text(body).text


def corpus() -> list[tuple[str, str, str]]:
    expected = json.loads((REPLIES / "expected.json").read_text(encoding="utf-8"))
    out = []
    for name, want in sorted(expected.items()):
        if name.startswith("_"):
            continue
        body = parse_message((REPLIES / name).read_bytes()).text_body or ""
        out.append((name, body, want))
    return out


def judge(trim: Callable[[str], str], items: list[tuple[str, str, str]],
          repeat: int) -> dict[str, object]:
    right, whole, wrong = [], [], []
    for name, body, want in items:
        got = normalized(trim(body))
        if got == normalized(want):
            right.append(name)
        elif got == normalized(body):
            whole.append(name)
        else:
            wrong.append(name)
    start = time.perf_counter()
    for _ in range(repeat):
        for _, body, _ in items:
            trim(body)
    per_reply_ms = (time.perf_counter() - start) * 1000 / (repeat * len(items))
    return {"right": right, "left_whole": whole, "cut_wrongly": wrong,
            "ms_per_reply": round(per_reply_ms, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args(argv)
    items = corpus()
    for label, trim in (("mail-parser-reply", with_mail_parser_reply),
                        ("quotequail", with_quotequail),
                        ("product (connector/mail/quoting.py)", with_product)):
        result = judge(trim, items, args.repeat)
        print(f"{label}: {len(result['right'])}/{len(items)} right, "  # type: ignore[arg-type]
              f"{len(result['left_whole'])} left whole, "  # type: ignore[arg-type]
              f"{len(result['cut_wrongly'])} cut wrongly, "  # type: ignore[arg-type]
              f"{result['ms_per_reply']} ms per reply")
        for key in ("left_whole", "cut_wrongly"):
            if result[key]:
                print(f"  {key}: {', '.join(result[key])}")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
