"""Where a webhook may point: http(s) URLs whose host resolves only to public addresses.

A webhook makes the server send requests to a URL an admin typed; aimed at the
server's own network (loopback, the cloud metadata service at 169.254.169.254,
private ranges) it would reach services that trust the server's address (SSRF).
The host is checked at registration and again at each delivery against the
addresses then resolved (a name can be re-pointed after registration: DNS
rebinding), and the request goes to the address checked, not to a second lookup.
`CHAT_WEBHOOKS_ALLOW_PRIVATE=1` lifts the rule (tests, a receiver on the same host).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

MAX_URL_CHARS = 2000
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(Exception):
    """The URL is not one the server may call; `code` names why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect: a checked address, and the name the request must carry."""

    url: str  # the URL with the host replaced by the checked address
    host_header: str
    sni_hostname: str | None  # https: the name the certificate must match


def parse_url(url: str) -> SplitResult:
    """`url` split, if it is an absolute http(s) URL the server may store; else raises."""
    if len(url) > MAX_URL_CHARS:
        raise AddressRefused("bad_url", f"the URL is longer than {MAX_URL_CHARS} characters")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise AddressRefused("bad_url", "the URL holds spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise AddressRefused("bad_url", "the URL cannot be parsed") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AddressRefused("bad_url", "the URL must be http:// or https:// with a host")
    if parts.username is not None or parts.password is not None:
        raise AddressRefused("bad_url", "the URL must not carry credentials")
    if port == 0:
        raise AddressRefused("bad_url", "the URL's port must be 1-65535")
    return parts


def is_public(ip: IpAddress) -> bool:
    """Whether `ip` is a public unicast address (not loopback, link-local, private,
    unique-local, shared, reserved, multicast or unspecified)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return ip.is_global and not ip.is_multicast


async def resolve(host: str, port: int) -> list[IpAddress]:
    """Every address `host` resolves to (an IP literal is itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise AddressRefused("bad_url", f"the host {host} does not resolve: {exc}") from None
    found: list[IpAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])  # drop an IPv6 zone
        if ip not in found:
            found.append(ip)
    return found


async def check(url: str, *, allow_private: bool) -> Target:
    """Parse `url` and resolve its host; raises `AddressRefused` when any address it
    resolves to is not public (unless `allow_private`). The answer names the address
    to connect to, so no second lookup can lead elsewhere."""
    parts = parse_url(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if allow_private:
        return Target(url, parts.netloc, None)
    addresses = await resolve(host, port)
    private = [str(ip) for ip in addresses if not is_public(ip)]
    if private or not addresses:
        raise AddressRefused(
            "private_address",
            f"{host} resolves to {', '.join(private) or 'nothing'}: an address in the "
            "server's own network (set CHAT_WEBHOOKS_ALLOW_PRIVATE=1 to allow it)",
        )
    ip = addresses[0]
    named = host != str(ip) and host.strip("[]") != str(ip)  # a name, not an IP literal
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    pinned = parts._replace(netloc=netloc).geturl()
    return Target(pinned, parts.netloc, host if parts.scheme == "https" and named else None)
