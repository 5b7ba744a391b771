"""``python -m exl2_enforcer``: the same command line as ``exl2-enforcer``."""

from exl2_enforcer.cli.app import main

if __name__ == "__main__":
    raise SystemExit(main())
