"""Who may post events: an optional source allow-list, proxy-aware; pure, no I/O.

The client address is the TCP peer, unless the peer is a trusted proxy: then
``X-Forwarded-For`` is read from the right, skipping trusted proxies, and the
first address that is not one is the client. Headers from untrusted peers are
ignored, so a client cannot forge its way past the list.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"1.2.3.0/24, 2001:db8::/32"`` -> networks; raises ValueError naming the bad one."""
    networks = []
    for item in text.replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"not an address or CIDR range: {item!r}") from exc
    return tuple(networks)


def _address(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(address: Address, networks: Sequence[Network]) -> bool:
    return any(address in network for network in networks)


def client_address(
    peer: str, forwarded_for: str | None, trusted_proxies: Sequence[Network]
) -> Address | None:
    client = _address(peer)
    if client is None or not forwarded_for or not _within(client, trusted_proxies):
        return client
    for hop in reversed(forwarded_for.split(",")):
        address = _address(hop)
        if address is None:
            return None  # a garbled chain proves nothing
        if not _within(address, trusted_proxies):
            return address
        client = address
    return client


def allowed(
    peer: str,
    forwarded_for: str | None,
    allowed_networks: Sequence[Network],
    trusted_proxies: Sequence[Network],
) -> bool:
    if not allowed_networks:
        return True
    client = client_address(peer, forwarded_for, trusted_proxies)
    return client is not None and _within(client, allowed_networks)
