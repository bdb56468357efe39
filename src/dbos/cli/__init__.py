"""The `dbos` command. This first version prints the version; the full CLI comes with the operations issue."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from .._dbos import __version__

    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("--version", "version", "-V"):
        print(f"dbosx {__version__}")
        return 0
    print(f"dbos: unknown command {args[0]!r} (this version supports: --version)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
