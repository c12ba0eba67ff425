"""Credentials for image-net.org (or any mirror), kept out of every message.

image-net.org serves the archives only to a logged-in session.  The user brings
that session as a browser cookies.txt (`--cookies`), as raw headers (`--header
'Cookie: sessionid=...'`), or as ~/.netrc basic-auth (`--netrc`); userinfo in the
base URL (`https://user:pw@host/`) also works.  None of these values is ever put
in a message: errors name the option, never its value, and URLs are shown
without userinfo or query string (`redact`).
"""

from __future__ import annotations

import http.cookiejar
import netrc
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from imagenet_prep.errors import PrepError

CREDENTIALS_HINT = ("pass the credentials of a logged-in session: --cookies FILE (cookies.txt "
                    "exported from the browser), --header 'Name: value', or --netrc")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name (RFC 9110 token)


@dataclass
class Credentials:
    """What to send: extra headers, cookies, and basic auth (from --netrc or URL userinfo)."""

    headers: dict[str, str] = field(default_factory=dict)
    cookies: list[http.cookiejar.Cookie] = field(default_factory=list)
    cookie_header: str | None = None  # a --header 'Cookie: ...', bound to the base URL's host
    netrc: bool = False
    basic: tuple[str, str] | None = None

    def __repr__(self) -> str:  # never show values, even under --debug
        return (f"Credentials(headers={sorted(self.headers)}, cookies={len(self.cookies)}, "
                f"cookie_header={self.cookie_header is not None}, netrc={self.netrc}, "
                f"basic={self.basic is not None})")


def parse_headers(items: Iterable[str]) -> tuple[dict[str, str], str | None]:
    """`Name: value` strings -> (headers, the Cookie header's value if one was given)."""
    headers: dict[str, str] = {}
    cookie: str | None = None
    for item in items:
        name, sep, value = item.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not _TOKEN.fullmatch(name):
            raise PrepError("--header expects 'Name: value' (a header name, a colon, "
                            "then the value)")
        if name.lower() == "cookie":
            cookie = value if cookie is None else f"{cookie}; {value}"
        else:
            headers[name] = value
    return headers, cookie


def load_cookies(path: Path) -> list[http.cookiejar.Cookie]:
    """The cookies of a Netscape/Mozilla cookies.txt (as curl and browser extensions write)."""
    jar = http.cookiejar.MozillaCookieJar()
    try:
        jar.load(str(path), ignore_discard=True, ignore_expires=True)
    except FileNotFoundError:
        raise PrepError(f"{path}: no such cookies file") from None
    except http.cookiejar.LoadError:
        # The library's message quotes the offending line, which may hold a cookie value.
        raise PrepError(f"{path}: not a Netscape/Mozilla cookies.txt file (it should start "
                        "with '# Netscape HTTP Cookie File' and have 7 tab-separated fields "
                        "a line)") from None
    except OSError as e:
        raise PrepError(f"{path}: cannot read ({e.strerror or e})") from None
    cookies = list(jar)
    for c in cookies:
        if c.expires is not None and c.expires <= 0:
            c.expires = None  # 0 marks a session cookie in browser exports; keep sending it
    if not cookies:
        raise PrepError(f"{path}: no cookies in this file")
    return cookies


def netrc_path() -> Path:
    return Path(os.environ.get("NETRC") or Path.home() / ".netrc")


def netrc_auth(host: str) -> tuple[str, str]:
    """(login, password) for `host` from ~/.netrc or $NETRC; an error if there is none."""
    path = netrc_path()
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except FileNotFoundError:
        raise PrepError(f"{path}: no such file (--netrc reads it; or set $NETRC)") from None
    except netrc.NetrcParseError as e:
        raise PrepError(f"{path}: cannot parse line {e.lineno}") from None
    except OSError as e:
        raise PrepError(f"{path}: cannot read ({e.strerror or e})") from None
    if entry is None:
        raise PrepError(f"{path}: no 'machine {host}' entry (and no 'default' entry)")
    login, _account, password = entry
    return login or "", password or ""


def split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without `user:password@`, and those credentials (unquoted) if it had them."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return clean, (unquote(parts.username or ""), unquote(parts.password or ""))


def redact(url: str) -> str:
    """A URL fit for a message: no userinfo, no query string or fragment (signed tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    query = "?..." if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) + query
