"""The fetcher's address policy against IANA's special-purpose registries, row by row.

The expectations are written out here (not read from the table under test), one address
inside each registry block plus its neighbours just outside, so a row dropped from the
table, or a block cut too wide, fails a case.
"""

from __future__ import annotations

import ipaddress

import pytest

from switchyard.captioning.addresses import address_kind

REFUSED_IPV4 = [
    ("0.0.0.0", "an unspecified address"),
    ("0.1.2.3", "a 'this network' address"),
    ("10.255.255.255", "a private address"),
    ("100.64.0.1", "a shared (carrier-grade NAT) address"),
    ("100.127.255.254", "a shared (carrier-grade NAT) address"),
    ("127.0.0.1", "a loopback address"),
    ("169.254.169.254", "a link-local address"),
    ("172.31.0.1", "a private address"),
    ("192.0.0.8", "an IETF protocol assignment address"),  # public to Python 3.11
    ("192.0.0.9", "an IETF protocol assignment address"),  # PCP anycast: refused by choice
    ("192.0.0.170", "an IETF protocol assignment address"),
    ("192.0.2.1", "a documentation address"),
    ("192.31.196.1", "an AS112 address"),
    ("192.52.193.1", "an AMT address"),
    ("192.88.99.1", "a 6to4 relay anycast address"),
    ("192.168.1.1", "a private address"),
    ("192.175.48.1", "an AS112 address"),
    ("198.19.255.255", "a benchmarking address"),
    ("198.51.100.7", "a documentation address"),
    ("203.0.113.9", "a documentation address"),
    ("224.0.0.1", "a multicast address"),
    ("239.255.255.250", "a multicast address"),
    ("240.0.0.1", "a reserved address"),
    ("255.255.255.255", "a broadcast address"),
]

REFUSED_IPV6 = [
    ("::", "an unspecified address"),
    ("::1", "a loopback address"),
    ("::ffff:10.0.0.5", "a private address (embedded 10.0.0.5)"),
    ("::ffff:192.0.0.8", "an IETF protocol assignment address (embedded 192.0.0.8)"),
    ("64:ff9b::a00:1", "a private address (embedded 10.0.0.1)"),  # NAT64 to 10.0.0.1
    ("64:ff9b:1::1", "a local-use translation address"),
    ("100::1", "a discard-only address"),
    ("2001::1", "an IETF protocol assignment address"),  # Teredo
    ("2001:1ff::1", "an IETF protocol assignment address"),
    ("2001:db8::1", "a documentation address"),
    ("2002:a00:1::", "a private address (embedded 10.0.0.1)"),  # 6to4
    ("2620:4f:8000::1", "an AS112 address"),
    ("3fff::1", "a documentation address"),
    ("5f00::1", "a segment routing address"),
    ("fc00::1", "a private address"),
    ("fd12:3456::1", "a private address"),
    ("fe80::1", "a link-local address"),
    ("fec0::1", "a site-local address"),  # public to Python 3.11
    ("feff::1", "a site-local address"),
    ("ff02::1", "a multicast address"),
    ("4000::1", "not a global unicast address"),  # unallocated, outside 2000::/3
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "11.0.0.1",  # just past 10/8
    "100.128.0.1",  # just past 100.64/10
    "172.32.0.1",  # just past 172.16/12
    "192.0.1.1",  # between 192.0.0.0/24 and 192.0.2.0/24
    "198.20.0.1",  # just past 198.18/15
    "223.255.255.254",  # just below multicast
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 to a public address
    "2002:808:808::1",  # 6to4 of a public address
    "2001:200::1",  # just past 2001::/23
    "2606:4700:4700::1111",
    "2a00:1450:4001::1",
]


@pytest.mark.parametrize(("address", "kind"), REFUSED_IPV4 + REFUSED_IPV6)
def test_special_purpose_addresses_are_refused(address: str, kind: str) -> None:
    assert address_kind(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert address_kind(ipaddress.ip_address(address)) is None
