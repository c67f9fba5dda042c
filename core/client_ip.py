"""Which address a request or a WebSocket came from: for the admin log-in throttle (django-axes)
and for the cap on labs per address."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    """The browser's address: REMOTE_ADDR, or behind the TLS proxy the proxy's own entry in
    X-Forwarded-For.

    Behind the proxy every request comes from 127.0.0.1, which would lock everyone out together.
    nginx's $proxy_add_x_forwarded_for appends the address it saw to whatever the client sent, so
    only the right-most entry is the proxy's word; the ones before it are the client's own claim.
    """
    return address_from(request.META.get("REMOTE_ADDR", ""), request.META.get("HTTP_X_FORWARDED_FOR", ""))


def address_from(peer: str, forwarded_for: str) -> str:
    """The browser's address, from the socket's peer and the X-Forwarded-For header ("" if none)."""
    if settings.BEHIND_TLS_PROXY:
        forwarded = forwarded_for.rsplit(",", 1)[-1].strip()
        if forwarded:
            peer = forwarded
    try:
        return str(ipaddress.ip_address(peer))
    except ValueError:
        return ""
