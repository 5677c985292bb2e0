"""``init DIR``: a new install's starting files, from the examples the package carries.

DIR gets ``config.yaml`` (``config.example.yaml``, under the name every command looks for by
default, so ``cd DIR && postmaster-bridge check`` reads it) and ``filters/`` with the example
filters, which that config's ``filters.filter_dirs: [filters]`` names. Nothing is overwritten:
when any of these files exists, nothing at all is written (exit 73).
"""

from __future__ import annotations

import argparse
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TextIO

from connector.exitcodes import EX_CANTCREAT, EX_OK

#: Where the package keeps the examples (symlinks in git, real files in the wheel).
EXAMPLES = "_examples"


def example_files() -> list[tuple[str, Traversable]]:
    """(path relative to DIR, packaged file) for everything ``init`` writes."""
    examples = files("connector") / EXAMPLES
    filters = sorted((f for f in (examples / "filters").iterdir() if f.name.endswith(".yaml")),
                     key=lambda f: f.name)
    return [("config.yaml", examples / "config.example.yaml")] + [
        (f"filters/{f.name}", f) for f in filters]


def cmd_init(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    target = Path(args.dir)
    plan = [(target / relative, source) for relative, source in example_files()]
    existing = [path for path, _ in plan if path.exists() or path.is_symlink()]
    if existing:
        print(f"postmaster-bridge: init writes nothing: {len(existing)} file(s) exist "
              "already and are not overwritten:", file=err)
        for path in existing:
            print(f"  {path}", file=err)
        return EX_CANTCREAT
    written: list[Path] = []
    try:
        for path, source in plan:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("xb") as handle:  # "x": never replace a file made meanwhile
                handle.write(source.read_bytes())
            written.append(path)
    except OSError as exc:
        print(f"postmaster-bridge: init: cannot write {exc.filename}: {exc.strerror}"
              + (f" (written before it: {', '.join(map(str, written))})" if written else ""),
              file=err)
        return EX_CANTCREAT
    for path in written:
        print(f"wrote {path}", file=out)
    config = target / "config.yaml"
    print(f"next: edit {config} (accounts, helpdesk; secrets as ${{ENV}} or *_file), then "
          f"'postmaster-bridge -c {config} check'", file=err)
    return EX_OK
