"""The client's address as the access rules see it.

The peer of the connection, unless that peer is a trusted proxy: then the forwarding
header it adds (``X-Forwarded-For`` or ``Forwarded``, whichever the operator says the
proxies write) is walked from right to left, past every trusted proxy, and the first
address that is not one is the client (nginx's ``real_ip_recursive``). When every
address is a trusted proxy, the leftmost is the client.

One defined behaviour for odd input: a port (``203.0.113.7:443``, ``[2001:db8::7]:443``)
is dropped; so is an IPv6 zone id (``fe80::1%eth0``); an IPv4-mapped IPv6 address
(``::ffff:203.0.113.7``) becomes its IPv4 address everywhere, proxies and rules
included. An entry that is not an address (``unknown``, an obfuscated ``_name``, a
dotted quad with leading zeros, garbage) makes the client *unknown* when the walk
reaches it: a proxy vouched for someone it could not name, and rules that need an
address then refuse (``AccessRules``), never guess.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from .context import IPAddress

IPNetwork = IPv4Network | IPv6Network
FORWARDED_HEADERS = ("X-Forwarded-For", "Forwarded")
# More entries than this in one forwarding header: nobody runs that many proxies.
MAX_FORWARDED_ENTRIES = 64

_PORT = r"(?::(?P<port>[0-9]{1,5}))?"
_BRACKETED = re.compile(r"\[(?P<host>[0-9A-Fa-f:.]+(?:%[0-9A-Za-z._~-]+)?)\]" + _PORT)
_V4_WITH_PORT = re.compile(r"(?P<host>[0-9.]+)" + _PORT)
# RFC 7239: token or quoted-string values, ';'-separated pairs, ','-separated elements.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PAIR = re.compile(rf'\s*(?P<name>{_TOKEN})=(?P<value>{_TOKEN}|"(?:[^"\\]|\\.)*")\s*')


def normalise(address: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 to IPv4, and IPv6 without its zone id: one spelling per host."""
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            return IPv6Address(int(address))
    return address


@functools.lru_cache(maxsize=4096)  # the same proxies and clients come back request after request
def parse_address(text: str) -> IPAddress | None:
    """One address as proxies write it (ports and brackets allowed), normalised; None if it is not one."""
    text = text.strip()
    if not text or len(text) > 100:
        return None
    host, port = text, None
    if text.startswith("["):
        match = _BRACKETED.fullmatch(text)
        if match is None:
            return None
        host, port = match["host"], match["port"]
    elif text.count(":") == 1:
        match = _V4_WITH_PORT.fullmatch(text)
        if match is None:
            return None
        host, port = match["host"], match["port"]
    if port is not None and int(port) > 65535:
        return None
    try:
        return normalise(ip_address(host))
    except ValueError:
        return None


def parse_network(text: str) -> IPNetwork:
    """A CIDR as an operator writes it; host bits set, leading zeros and IPv4-mapped forms are refused.

    A bare address is its own /32 or /128. Raises ValueError saying what is wrong.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{text!r} is not a CIDR")
    try:
        network = ip_network(text.strip(), strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            raise ValueError(f"{text!r} has host bits set (write the network address)") from None
        raise ValueError(f"{text!r} is not a CIDR") from None
    if isinstance(network, IPv6Network) and network.network_address.ipv4_mapped is not None:
        raise ValueError(f"{text!r} is an IPv4-mapped IPv6 network: write it as IPv4")
    return network


def forwarded_for(values: Iterable[str]) -> list[str] | None:
    """The ``for=`` of each element of ``Forwarded`` headers, in order; None when a header is malformed.

    An element without ``for=`` answers ``""``, which ``parse_address`` refuses.
    """
    entries: list[str] = []
    for value in values:
        for element in _split_outside_quotes(value, ","):
            found = ""
            for pair in _split_outside_quotes(element, ";"):
                if not pair.strip():
                    continue
                match = _PAIR.fullmatch(pair)
                if match is None:
                    return None
                if match["name"].lower() == "for":
                    found = _unquote(match["value"])
            entries.append(found)
    return entries


def x_forwarded_for(values: Iterable[str]) -> list[str]:
    """The entries of ``X-Forwarded-For`` headers, several headers counting as one list."""
    return [entry.strip() for value in values for entry in value.split(",")]


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


class ClientAddress:
    """Decides the client's address from the peer and, behind trusted proxies, the forwarding header."""

    def __init__(self, trusted_proxies: Sequence[IPNetwork], header: str = "X-Forwarded-For") -> None:
        if header not in FORWARDED_HEADERS:
            raise ValueError(f"forwarding header must be one of {', '.join(FORWARDED_HEADERS)}")
        masks = [(int(n.network_address), int(n.netmask), n.version) for n in trusted_proxies]
        self._v4 = tuple((net, mask) for net, mask, version in masks if version == 4)
        self._v6 = tuple((net, mask) for net, mask, version in masks if version == 6)
        self.header = header

    def trusted(self, address: IPAddress) -> bool:
        value = int(address)
        return any(value & mask == net for net, mask in (self._v4 if isinstance(address, IPv4Address) else self._v6))

    def resolve(self, peer: str | None, header_values: Sequence[str]) -> IPAddress | None:
        """The client, given the peer's address text and every value of the forwarding header."""
        address = parse_address(peer) if peer else None
        if address is None or not header_values or not self.trusted(address):
            return address
        forwarded = self.header == "Forwarded"
        entries = forwarded_for(header_values) if forwarded else x_forwarded_for(header_values)
        if entries is None or len(entries) > MAX_FORWARDED_ENTRIES:
            return None
        for entry in reversed(entries):
            address = parse_address(entry)
            if address is None or not self.trusted(address):
                return address
        return address  # every hop a trusted proxy: the leftmost is as far as anyone can see
