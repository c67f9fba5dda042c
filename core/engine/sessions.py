"""Log-in sessions (sans-I/O): where a web server keeps them, and how a client notices a logout.

A login answers with a session cookie (``Set-Cookie: sid=<token>``); the user's later requests carry
it (``Cookie: sid=<token>``). The web server that answers looks the token up, in its own memory
(``SessionTable``) or in the shared session store (a ``sessions`` node, real Redis), and says what
it found in ``X-Session``: ``user`` or ``anonymous``. A token nobody knows (its server died, or the
balancer sent the user to another server) answers as anonymous: for the user, a logout. The client
counts that (``UserSessions.answered``) and forgets the token; the user's next login makes a new one.

A sticky balancer (``algorithm: sticky``) adds its own affinity cookie (``lb=<backend>``), which the
client carries per user as browsers do, so that user keeps landing on the server that knows them.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict

SESSION_COOKIE = "sid"
AFFINITY_COOKIE = "lb"  # a sticky balancer's: the backend that served this user
STATE_HEADER = "X-Session"  # the web server's answer: "user" or "anonymous"
KNOWN, ANONYMOUS = "user", "anonymous"
TTL_S = 1800  # a session lives this long in the shared store without a login renewing it
MAX_SESSIONS = 20_000  # sessions one server keeps in memory (the least recently used go first)
MAX_USERS = 10_000  # users whose cookies one client remembers


def store_key(token: str) -> str:
    return f"session:{token}"


def new_token() -> str:
    return secrets.token_urlsafe(12)


class SessionTable:
    """A web server's sessions in its own memory: token -> user, bounded (LRU). A crash loses them."""

    def __init__(self, capacity: int = MAX_SESSIONS) -> None:
        self.capacity = capacity
        self._users: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._users)

    def create(self, user: int, token: str | None = None) -> str:
        token = token or new_token()
        self._users[token] = user
        self._users.move_to_end(token)
        while len(self._users) > self.capacity:
            self._users.popitem(last=False)
        return token

    def get(self, token: str) -> int | None:
        user = self._users.get(token)
        if user is not None:
            self._users.move_to_end(token)
        return user

    def items(self) -> list[tuple[str, int]]:
        return list(self._users.items())

    def clear(self) -> None:
        self._users.clear()


def cookie_header(cookies: dict[str, str]) -> str | None:
    """A ``Cookie`` request header from name -> value (None without any)."""
    return "; ".join(f"{k}={v}" for k, v in cookies.items()) or None


def cookie_value(header: str | None, name: str) -> str | None:
    """One cookie's value from a ``Cookie`` request header (cheaper than parsing them all: every
    request of a logged-in user carries one, at hundreds of requests a second)."""
    if not header or name not in header:
        return None
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None


def parse_set_cookie(values: list[str]) -> dict[str, str]:
    """name -> value of ``Set-Cookie`` header values (attributes after ``;`` ignored)."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if sep and name.strip():
            out[name.strip()] = rest.split(";", 1)[0].strip()
    return out


class UserSessions:
    """What one client remembers of its users' cookies, and the logouts it has seen.

    ``cookies(user)`` goes on a request; ``answered(user, state, set_cookies)`` takes the reply's
    ``X-Session`` and ``Set-Cookie`` and returns True when it is a logout: the request carried a
    session and the server no longer knew it."""

    def __init__(self, capacity: int = MAX_USERS) -> None:
        self.capacity = capacity
        self._cookies: OrderedDict[int, dict[str, str]] = OrderedDict()
        self.logouts = 0

    def cookies(self, user: int) -> dict[str, str]:
        return dict(self._cookies.get(user, {}))

    def logged_in(self, user: int) -> bool:
        return SESSION_COOKIE in self._cookies.get(user, {})

    def answered(self, user: int, sent: dict[str, str], state: str | None, set_cookies: dict[str, str]) -> bool:
        jar = self._cookies.pop(user, {})
        logout = SESSION_COOKIE in sent and state == ANONYMOUS
        if logout and jar.get(SESSION_COOKIE) == sent[SESSION_COOKIE]:
            del jar[SESSION_COOKIE]  # the server forgot it: the user is anonymous until they log in
        jar.update(set_cookies)
        if jar:
            self._cookies[user] = jar
            while len(self._cookies) > self.capacity:
                self._cookies.popitem(last=False)
        if logout:
            self.logouts += 1
        return logout
