"""Where a webhook may go: http(s) URLs whose host is a public address (private ones only when allowed).

The host is resolved right before each attempt and the connection is made to the address that was checked,
so a name cannot pass the check and then resolve elsewhere (DNS rebinding). Redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit

from core.errors import InvalidInput

MAX_URL_CHARS = 2048


class WebhookRefused(Exception):
    """The target is not allowed (a private address, say); retrying will not help."""


def check_url(url: object, *, allow_private: bool, field: str = "webhook") -> str:
    """A caller's webhook URL, checked for shape and, for literal addresses and localhost, privacy."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput(field, "must be an http or https URL")
    if len(url) > MAX_URL_CHARS:
        raise InvalidInput(field, f"is longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise InvalidInput(field, "is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(field, "must be an http or https URL with a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(field, "must not carry credentials (user:password@); they would be stored")
    if port == 0:
        raise InvalidInput(field, "has port 0")
    if not allow_private:
        host = parts.hostname
        literal = _literal(host)
        if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
            raise InvalidInput(field, "points at this machine; set LORAPOD_WEBHOOK_ALLOW_PRIVATE=1 to allow it")
        if literal is not None and not is_public(literal):
            raise InvalidInput(
                field, "points at a private or loopback address; set LORAPOD_WEBHOOK_ALLOW_PRIVATE=1 to allow it"
            )
    return url.strip()


def resolve(url: str, *, allow_private: bool) -> tuple[SplitResult, str, int]:
    """The URL's parts and the one address (and port) to connect to; WebhookRefused for a private one."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise OSError(f"{host} has no address")
    if not allow_private:
        for address in addresses:
            if not is_public(ipaddress.ip_address(address)):
                raise WebhookRefused(f"{host} resolves to the private or loopback address {address}")
    return parts, addresses[0], port


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A globally routable unicast address (IPv4 mapped into IPv6 judged as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:  # forms the resolver also reads as an address: 2130706433, 0x7f.1, 127.1
        return ipaddress.ip_address(socket.inet_aton(host))
    except OSError:
        return None
