"""Which sources a run may read from a list it was given, and which addresses it may connect to.

A seed or video list can name any URL. capmine reads local files, ``file://``,
``http(s)://`` and the object stores (``s3://``, ``gs://``, ``az://``) by
default; other fsspec protocols (``data:``, ``zip://``, ``memory://``,
``simplecache::...``) are refused unless a run allows them. For lists from
untrusted sources, :func:`check_public_host` and :class:`PublicOnlyAdapter`
refuse private, loopback and link-local addresses, so a list cannot make
capmine fetch from the machine's own network.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlparse

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

# "file" covers local paths as well as file:// URLs.
DEFAULT_PROTOCOLS = ("file", "http", "https", "s3", "gs", "az")
# fsspec's other names for the same stores: allowing one allows its aliases.
ALIASES = {"s3a": "s3", "gcs": "gs", "abfs": "az", "abfss": "az", "adl": "az"}
REDIRECT_SCHEMES = ("http", "https")


class RemoteError(Exception):
    """A source this run may not read; the message names it and the option that decides."""


def _canonical(protocol: str) -> str:
    protocol = protocol.strip().lower()
    return ALIASES.get(protocol, protocol)


def protocols_of(url: str) -> list[str]:
    """Every protocol ``url`` would use: ``file`` for a local path, each link of an fsspec chain."""
    links = url.split("::")
    out = []
    for i, link in enumerate(links):
        if i < len(links) - 1 and "://" not in link:
            out.append(link.strip().lower())  # a bare protocol name: simplecache::s3://...
            continue
        scheme = urlparse(link).scheme.lower()
        out.append("file" if scheme == "" or len(scheme) == 1 else scheme)  # C:\ is a path
    return out


class Protocols:
    """An allow-list of protocols, aliases included."""

    def __init__(self, allowed: Iterable[str] = DEFAULT_PROTOCOLS):
        self.names = tuple(p.strip().lower() for p in allowed if p.strip())
        self._allowed = {_canonical(p) for p in self.names}

    def allows(self, protocol: str) -> bool:
        return _canonical(protocol) in self._allowed

    def check(self, url: str) -> None:
        """Raise :class:`RemoteError` when any protocol of ``url`` is not allowed."""
        for protocol in protocols_of(url):
            if not self.allows(protocol):
                shown = ", ".join(self.names) or "none"
                raise RemoteError(
                    f"scheme {protocol!r} not allowed for {url} (allowed_protocols: {shown})"
                )


def is_public(address: str) -> bool:
    """Whether an IP address is on the public internet (not private, loopback, link-local, ...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_public_host(url: str) -> None:
    """Resolve the host of ``url``; raise :class:`RemoteError` unless every address is public."""
    parsed = urlparse(url)
    host = parsed.hostname
    if not host:
        raise RemoteError(f"no host in {url}")
    try:
        infos = socket.getaddrinfo(host, parsed.port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise RemoteError(f"cannot resolve {host} for {url}: {exc}") from exc
    for *_, sockaddr in infos:
        if not is_public(str(sockaddr[0])):
            raise RemoteError(
                f"{url}: {host} resolves to {sockaddr[0]}, not a public address "
                "(block_private_addresses)"
            )


class _PrivateAddress(OSError):
    pass


class _PublicOnly:
    """Checks the address actually connected to, so a name re-resolved between the
    check and the connection (DNS rebinding) still cannot reach a private address."""

    def _new_conn(self):  # urllib3's hook that opens the socket
        sock = super()._new_conn()
        peer = sock.getpeername()[0]
        if not is_public(peer):
            sock.close()
            raise _PrivateAddress(f"connected to {peer}, not a public address")
        return sock


class _PublicHTTPConnection(_PublicOnly, HTTPConnection):
    pass


class _PublicHTTPSConnection(_PublicOnly, HTTPSConnection):
    pass


class _PublicHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PublicHTTPConnection


class _PublicHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PublicHTTPSConnection


class PublicOnlyAdapter(HTTPAdapter):
    """A ``requests`` adapter whose direct connections go to public addresses only.

    Through a proxy (from the environment) the proxy makes the connection; the
    host check of :func:`check_public_host` still applies to every URL.
    """

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _PublicHTTPPool,
            "https": _PublicHTTPSPool,
        }
