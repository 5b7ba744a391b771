"""``python -m exl2_enforcer``: the same command line as ``exl2-enforcer``."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
