"""Print a password hash for config.yaml: `python -m chatbot_server.agents.hashpw` (asks twice)."""

from __future__ import annotations

import argparse
import getpass
import sys

from .passwords import hash_password


def main(argv: list[str] | None = None) -> int:
    """Read a password (prompt, or one line of stdin with --stdin) and print its hash."""
    parser = argparse.ArgumentParser(prog="python -m chatbot_server.agents.hashpw", description=__doc__)
    parser.add_argument("--stdin", action="store_true", help="read the password from standard input")
    args = parser.parse_args(argv)
    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Again: "):
            print("the passwords differ", file=sys.stderr)
            return 1
    if len(password) < 8:
        print("use at least 8 characters", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


if __name__ == "__main__":
    sys.exit(main())
