"""Who may talk to ferbench's web servers, and what a request may carry before it is read.

Both servers (serve.py: the stream; browser.py: the browser's camera) show a camera, so a
request must name this server in its `Host` (a page on another site that rebinds its own name
to 127.0.0.1 sends its own name: DNS rebinding), a POST must come from the server's own page
(`Origin`), and a server that listens beyond localhost wants the random token it printed
(`?token=` once, then a cookie), as Jupyter does.  Also here: a Content-Length that is a
number, and the size of a JPEG read from its header, so that a bomb is refused undecoded.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
import socket
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, urlsplit

LOCAL_NAMES = ("localhost",)
CONTENT_LENGTH = re.compile(r"[0-9]{1,15}")  # ASCII only: '²'.isdigit() is True, int('²') fails


class Refused(Exception):
    """A request answered with a 4xx status and a one-line reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


def is_loopback(host: str) -> bool:
    """Whether `host` (a --host value) binds to this machine only."""
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except OSError:
            return False


class Guard:
    """The checks every request of one server passes before it is handled.

    `host`: what the server was asked to bind (--host); `token`: True for a random token when
    that is beyond localhost, False for none (--no-token), or the token itself."""

    def __init__(self, host: str, port: int, token: bool | str = True):
        self.port = port
        self.local = is_loopback(host)
        if isinstance(token, str):
            self.token: str | None = token
        else:
            self.token = secrets.token_hex(24) if token and not self.local else None
        self.cookie = f"ferbench-token-{port}"  # cookies ignore ports: one name per server
        self.names = {*LOCAL_NAMES, host.lower()}
        if not self.local:  # reached by the machine's names too (an IP address always passes)
            self.names |= {socket.gethostname().lower(), socket.getfqdn().lower()}

    @property
    def query(self) -> str:
        """`?token=...` for the URL to print, or '' when none is needed."""
        return f"?token={self.token}" if self.token else ""

    def check(self, method: str, path: str, headers) -> list[tuple[str, str]]:
        """Raise Refused unless the request may go on; answers the headers to add (the token's
        cookie when the token came in the query)."""
        host = headers.get("Host")
        if not host:
            raise Refused(400, "a Host header is required")
        if not self._host_allowed(host):
            raise Refused(403, f"Host '{host}' is not this server's address (DNS rebinding?)")
        if method == "POST":
            origin = headers.get("Origin")
            if origin is not None and _authority(origin) != _authority("http://" + host):
                raise Refused(403, f"a request from the page of {origin} is refused")
        if self.token is None:
            return []
        query = parse_qs(urlsplit(path).query).get("token", [""])[0]
        if query and hmac.compare_digest(query.encode(), self.token.encode()):
            cookie = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"
            return [("Set-Cookie", cookie)]
        given = self._cookie(headers) or _bearer(headers.get("Authorization"))
        if given and hmac.compare_digest(given.encode(), self.token.encode()):
            return []
        raise Refused(403, "a token is required: open the URL ferbench printed (?token=...)")

    def _host_allowed(self, host: str) -> bool:
        name = _authority("http://" + host)[0]
        if name is None:
            return False
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return name in self.names
        return address.is_loopback or not self.local  # a literal address cannot be rebound

    def _cookie(self, headers) -> str:
        jar = SimpleCookie()
        for value in headers.get_all("Cookie") or ():
            try:
                jar.load(value)
            except CookieError:
                continue
        morsel = jar.get(self.cookie)
        return morsel.value if morsel else ""


def _authority(url: str) -> tuple[str | None, int | None]:
    """(host name, port) of an origin or `http://` + a Host header; (None, None) if malformed."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None, None
    if parts.path or parts.query or parts.username or not parts.hostname:
        return None, None
    return parts.hostname.lower(), port


def _bearer(value: str | None) -> str:
    scheme, _, token = (value or "").partition(" ")
    return token.strip() if scheme.lower() in ("token", "bearer") else ""


def content_length(headers) -> int:
    """The body's declared size; Refused when missing (411) or not a plain number (400)."""
    length = headers.get("Content-Length")
    if length is None:
        raise Refused(411, "a Content-Length is required")
    if not CONTENT_LENGTH.fullmatch(length.strip()):
        raise Refused(400, f"malformed Content-Length '{length}'")
    return int(length)


SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header (SOF), read without decoding anything;
    Refused (400) when the markers before it are broken."""
    if data[:3] != b"\xff\xd8\xff":
        raise Refused(415, "the body must be a JPEG image")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            break
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in SOF:
            if length < 8 or i + 9 > len(data):
                break
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            if not width or not height:
                break
            return width, height
        if length < 2:
            break
        i += 2 + length
    raise Refused(400, "the JPEG has no readable frame header")
