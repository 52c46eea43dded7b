"""Which IP addresses the fetcher may connect to: the IANA special-purpose registries as a table.

Python's `ipaddress` flags (`is_private`, `is_global`, ...) follow the registries only as
well as the running Python's copy of them: 3.11 calls 192.0.0.8 and fec0::1 public. So the
policy is this explicit table, copied from IANA's "IPv4 Special-Purpose Address Registry"
and "IPv6 Special-Purpose Address Registry" (plus the multicast blocks, the deprecated
site-local fec0::/10, and "not IPv6 global unicast 2000::/3"), and Python's flags are only
a second net behind it.

Choice: every block of the registries is refused, including the few marked "globally
reachable" (anycast for PCP, TURN, AS112, AMT and ORCHIDv2): none of them serves images,
and refusing them is simpler to reason about than a per-row exception. The translation
prefixes that embed an IPv4 address (IPv4-mapped, the NAT64 well-known prefix, 6to4) are
judged by the IPv4 address they carry, so that a NAT64 or 6to4 address cannot smuggle a
private IPv4 address past the table.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _table(rows: tuple[tuple[str, str], ...]) -> tuple[tuple[Network, str], ...]:
    return tuple((ipaddress.ip_network(network), kind) for network, kind in rows)


# (block, what the operator reads: "refused: 10.0.0.5 is <kind>"). The most specific
# block comes first where blocks nest (0.0.0.0/32 inside 0.0.0.0/8).
SPECIAL_IPV4 = _table(
    (
        ("0.0.0.0/32", "an unspecified address"),
        ("0.0.0.0/8", "a 'this network' address"),
        ("10.0.0.0/8", "a private address"),
        ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address"),
        ("172.16.0.0/12", "a private address"),
        ("192.0.0.0/24", "an IETF protocol assignment address"),
        ("192.0.2.0/24", "a documentation address"),
        ("192.31.196.0/24", "an AS112 address"),
        ("192.52.193.0/24", "an AMT address"),
        ("192.88.99.0/24", "a 6to4 relay anycast address"),
        ("192.168.0.0/16", "a private address"),
        ("192.175.48.0/24", "an AS112 address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("224.0.0.0/4", "a multicast address"),
        ("255.255.255.255/32", "a broadcast address"),
        ("240.0.0.0/4", "a reserved address"),
    )
)

SPECIAL_IPV6 = _table(
    (
        ("::/128", "an unspecified address"),
        ("::1/128", "a loopback address"),
        ("64:ff9b:1::/48", "a local-use translation address"),
        ("100::/64", "a discard-only address"),
        ("100:0:0:1::/64", "a dummy address"),
        ("2001::/23", "an IETF protocol assignment address"),
        ("2001:db8::/32", "a documentation address"),
        ("2620:4f:8000::/48", "an AS112 address"),
        ("3fff::/20", "a documentation address"),
        ("5f00::/16", "a segment routing address"),
        ("fc00::/7", "a private address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("ff00::/8", "a multicast address"),
    )
)

GLOBAL_UNICAST_IPV6 = ipaddress.ip_network("2000::/3")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 (64:ff9b::/96) or 6to4 address carries."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def address_kind(address: IPAddress) -> str | None:
    """Say why `address` must not be fetched from ("a private address"), or None if public."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = embedded_ipv4(address)
        if embedded is not None:
            kind = address_kind(embedded)
            return None if kind is None else f"{kind} (embedded {embedded})"
    table = SPECIAL_IPV4 if isinstance(address, ipaddress.IPv4Address) else SPECIAL_IPV6
    for network, kind in table:
        if address in network:
            return kind
    if isinstance(address, ipaddress.IPv6Address) and address not in GLOBAL_UNICAST_IPV6:
        return "not a global unicast address"
    if not address.is_global:  # a second net: a Python newer than this table may know more
        return "not a public address"
    return None
