"""What every API request passes: the bearer token, the rate limits, one log line, the metrics,
and errors turned into {"error": {"code", "message"}} (never an HTML page, never a traceback).

The guard is the API sub-application's middleware, so it sees only /api/v1/* (the router's own
404 and 405 there included) and nothing of the host's site.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..errors import LayerUnavailableError, StoreUnavailableError
from ..keys import CONNECTIONS_KEY
from ..sockets.ratelimit import TokenBucket, client_ip
from .errors import ApiError, error_response, not_found
from .tokens import TokenTable

log = logging.getLogger("chatbot_server.api")

#: Client addresses remembered at most for their requests without a valid token (a flood of
#: addresses must not grow the table without bound); buckets that have refilled go first.
MAX_ADDRESSES = 10_000
_REALM = 'Bearer realm="chatbot_server"'


class Buckets:
    """A token bucket per key (`per_minute` a minute, as many at once), kept while it matters."""

    def __init__(self, per_minute: int, *, limit: int = MAX_ADDRESSES) -> None:
        self.rate = per_minute / 60.0
        self.burst = per_minute
        self.limit = limit
        # An unused bucket is full again after a minute: forgetting it then changes nothing.
        self._refill = 60.0
        self._buckets: OrderedDict[str, tuple[TokenBucket, float]] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self._buckets)

    @property
    def retry_after(self) -> int:
        """Seconds until an empty bucket has a token again (rounded up): the Retry-After header."""
        return max(1, math.ceil(1 / self.rate))

    def take(self, key: str) -> bool:
        """Take one token from `key`'s bucket; False when it is empty."""
        now = time.monotonic()
        found = self._buckets.pop(key, None)
        bucket = found[0] if found is not None else TokenBucket(self.rate, self.burst, now=now)
        self._buckets[key] = (bucket, now)
        if found is None and len(self._buckets) > self.limit:
            self._forget(now)
        return bucket.take(now)

    def _forget(self, now: float) -> None:
        while len(self._buckets) > self.limit or (self._buckets and now - self._oldest_use() >= self._refill):
            self._buckets.popitem(last=False)

    def _oldest_use(self) -> float:
        return next(iter(self._buckets.values()))[1]


def _bearer(header: str | None) -> tuple[str, str]:
    """(the credential, "") or ("", why it is not one): missing or malformed."""
    if header is None:
        return "", "missing"
    scheme, _, credential = header.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential or " " in credential:
        return "", "malformed"
    return credential, ""


_UNAUTHORIZED = {
    "missing": "send the API token as 'Authorization: Bearer <token>'",
    "malformed": "the Authorization header must be 'Bearer <token>'",
    "unknown": "unknown API token",
}


def make_guard(tokens: TokenTable, per_minute: int, trusted_proxies: Iterable[str]) -> Middleware:
    """The API's middleware: `per_minute` requests per token, and as many requests without a valid
    token per client address (so guessing tokens is bounded too, and costs a valid caller nothing)."""
    per_token = Buckets(per_minute, limit=max(len(tokens), 1))
    per_address = Buckets(per_minute)
    trusted = tuple(trusted_proxies)

    def authenticate(request: web.Request) -> tuple[str, ApiError | None]:
        """Who calls, for the log line ("token=<name>", or why not and from where), and the
        refusal if the request may not go on."""
        credential, problem = _bearer(request.headers.get("Authorization"))
        name = tokens.name_of(credential) if credential else None
        if name is None:
            problem = problem or "unknown"
            address = client_ip(request, trusted)
            who = f"auth={problem} ip={address}"
            if not per_address.take(address):
                return who, ApiError(
                    429,
                    "rate_limited",
                    "too many requests without a valid token from this address; retry later",
                    headers={"Retry-After": str(per_address.retry_after)},
                )
            error = "" if problem == "missing" else ', error="invalid_token"'
            challenge = {"WWW-Authenticate": _REALM + error}
            return who, ApiError(401, "unauthorized", _UNAUTHORIZED[problem], headers=challenge)
        if not per_token.take(name):
            return f"token={name}", ApiError(
                429,
                "rate_limited",
                f"more than {per_minute} requests a minute with this token; retry later",
                headers={"Retry-After": str(per_token.retry_after)},
            )
        return f"token={name}", None

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        route = request.match_info.route.name
        endpoint = route.removeprefix("api_") if route else "unmatched"
        who, refused = authenticate(request)
        try:
            if refused is not None:
                raise refused
            response = await handler(request)
        except ApiError as exc:
            response = error_response(exc)
        except web.HTTPException as exc:  # the router's own: 404, 405 (only these reach here)
            response = error_response(_from_http(exc))
        except StoreUnavailableError as exc:
            log.warning("api.store_unavailable endpoint=%s error=%s", endpoint, exc)
            response = error_response(
                ApiError(503, "store_unavailable", "the conversation store does not answer; retry later")
            )
        except LayerUnavailableError as exc:
            log.warning("api.layer_unavailable endpoint=%s error=%s", endpoint, exc)
            response = error_response(
                ApiError(503, "layer_unavailable", "the channel layer does not answer; retry later")
            )
        except Exception:
            log.exception("api.failed endpoint=%s", endpoint)
            response = error_response(ApiError(500, "internal_error", "the server failed; it has been logged"))
        request.config_dict[CONNECTIONS_KEY].stats.api_request(endpoint, response.status)
        # One line per request, no bodies, no ids (a conversation id lets its holder resume it),
        # and never the token itself: its configured name.
        log.info(
            "api.request %s endpoint=%s status=%d ms=%.1f",
            who,
            endpoint,
            response.status,
            (time.monotonic() - started) * 1000,
        )
        return response

    return guard


def _from_http(exc: web.HTTPException) -> ApiError:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return ApiError(405, "method_not_allowed", f"use {allowed}", headers={"Allow": allowed})
    if exc.status == 404:
        return not_found("no such endpoint (see docs/api.md)")
    return ApiError(exc.status, "http_error", exc.reason)
