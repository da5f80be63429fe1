"""Where webhooks may go. Pure rules, plus the socket guard the webhook client connects with.

A notify_url must not reach into the engine's own network (SSRF): unless `[webhooks]
allow_private` is set, a destination whose address is not globally routable — loopback,
link-local (169.254.169.254, the cloud metadata service), RFC 1918, carrier-grade NAT,
unique-local IPv6, IPv4-mapped forms of those, `localhost` — is never called. An order whose
notify_url names such an address literally (in any spelling the resolver takes, such as
`0x7f000001`, `2130706433`, `127.1` or `[::ffff:127.0.0.1]`) is refused with 422; a name is
checked at connect time, on the address actually connected to, so DNS rebinding cannot get
around it. `[[storefronts]] notify_hosts`, when set, lists the only hosts allowed.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def literal_address(host: str) -> Address | None:
    """The address a host names literally (every spelling inet_aton takes: 127.1, 0x7f000001,
    2130706433, 0177.0.0.1; IPv6 with or without brackets), or None for a name."""
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare.split("%")[0])
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(bare))
    except OSError:
        return None


# IPv6 prefixes that carry an IPv4 address in their last 32 bits: NAT64 (RFC 6052) reaches
# 169.254.169.254 as 64:ff9b::a9fe:a9fe on an IPv6-only host; IPv4-translated (RFC 2765);
# IPv4-compatible (deprecated, RFC 4291).
_EMBEDDING = tuple(ipaddress.IPv6Network(n) for n in ("64:ff9b::/96", "::ffff:0:0:0/96",
                                                        "::/96"))
# never public, whatever Python's tables say: local-use NAT64, deprecated site-local
_NOT_PUBLIC = tuple(ipaddress.IPv6Network(n) for n in ("64:ff9b:1::/48", "fec0::/10"))


def is_public(address: Address) -> bool:
    """Globally routable; an IPv6 address that carries an IPv4 one (mapped, translated,
    NAT64, 6to4, compatible) is judged by that IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is None and any(address in net for net in _EMBEDDING):
            mapped = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if mapped is not None:
            return is_public(mapped)
        if any(address in net for net in _NOT_PUBLIC):
            return False
    return bool(address.is_global) and not address.is_multicast


def _is_local_name(host: str) -> bool:
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def refusal(url: str, allow_private: bool, allowed_hosts: tuple[str, ...]) -> str | None:
    """Why an order may not have this notify_url (None when it may)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return "not a URL"
    if not host:
        return "has no host"
    if allowed_hosts and host.lower().rstrip(".") not in allowed_hosts:
        return f"host {host!r} is not one of this storefront's notify_hosts"
    if allow_private:
        return None
    address = literal_address(host)
    if _is_local_name(host) or (address is not None and not is_public(address)):
        return f"host {host!r} is a private, loopback or link-local address"
    return None


def host_allowed(url: str, allowed_hosts: tuple[str, ...]) -> bool:
    """The URL's host is in notify_hosts (or none are set)."""
    if not allowed_hosts:
        return True
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    return host.lower().rstrip(".") in allowed_hosts


class AddressGuard:
    """aiohttp's socket_factory: makes the socket for every address the client connects to,
    and refuses (EACCES) one that is not public while private destinations are not allowed.
    It sees the resolved address, after DNS: a name that resolves to a private address is
    refused exactly like the address itself."""

    def __init__(self, allow_private: bool = False) -> None:
        self.allow_private = allow_private
        self.refused = 0

    def __call__(self, addr_info: tuple[Any, ...]) -> socket.socket:
        family, kind, proto, _, sockaddr = addr_info
        if not self.allow_private:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
            if not is_public(address):
                self.refused += 1
                raise OSError(errno.EACCES, f"webhook destination {address} is not public")
        sock = socket.socket(family=family, type=kind, proto=proto)
        sock.setblocking(False)
        return sock
