"""API tokens: made here, kept in config only as their SHA-256, checked in constant time.

A token is `cbs_` and 43 URL-safe characters (256 random bits). The prefix lets secret scanners
(GitHub's, gitleaks) find one that leaked into a repository or a log. Why a plain SHA-256 and not
the agents' PBKDF2: a slow KDF protects guessable secrets (passwords) whose hash leaked; a 256-bit
random token cannot be guessed from its hash with any number of SHA-256 rounds, so the KDF would
only cost CPU on every API call (docs/api.md, "Tokens").

`python -m chatbot_server.api.tokens [--name NAME]` prints a fresh token and its config entry.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import re
import secrets
import sys
from collections.abc import Iterable

PREFIX = "cbs_"
#: Longest Authorization credential looked at: anything longer is refused unhashed.
MAX_TOKEN_LENGTH = 256
_SCHEME = "sha256:"
# Token names go into logs and metrics: plain words.
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def new_token() -> str:
    """A fresh API token: the prefix and 256 random bits, URL-safe."""
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """`sha256:<64 hex>` of a token, the form `api.tokens[].token_hash` takes."""
    return _SCHEME + hashlib.sha256(token.encode()).hexdigest()


class TokenTable:
    """The configured tokens by their hashes: which one (its name) a presented token is."""

    def __init__(self, tokens: Iterable[tuple[str, str]]) -> None:
        # (name, digest); config/rules.py has checked every hash's form.
        self._tokens = [(name, bytes.fromhex(token_hash.removeprefix(_SCHEME))) for name, token_hash in tokens]

    def __len__(self) -> int:
        return len(self._tokens)

    def name_of(self, token: str) -> str | None:
        """The name of the token `token` is, or None. Every entry is compared, each in constant
        time, so the answer's timing says nothing about which entry (if any) matched."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for name, expected in self._tokens:
            if hmac.compare_digest(digest, expected) and found is None:
                found = name
        return found


def main(argv: list[str] | None = None) -> int:
    """Print a new token (for the API client) and the config entry that holds its hash."""
    parser = argparse.ArgumentParser(prog="python -m chatbot_server.api.tokens", description=main.__doc__)
    parser.add_argument("--name", default="backend", help="the client's name, logged with each of its requests")
    args = parser.parse_args(argv)
    name = str(args.name)
    if not _NAME.fullmatch(name):
        print("--name: use 1-64 ASCII letters, digits, '.', '_' or '-'", file=sys.stderr)
        return 1
    token = new_token()
    print("# The token, for the API client (shown once; only its hash is kept):")
    print(token)
    print("# The entry for config.yaml:")
    print("api:")
    print("  tokens:")
    print(f'    - {{name: "{name}", token_hash: "{hash_token(token)}"}}')
    return 0


if __name__ == "__main__":
    sys.exit(main())
