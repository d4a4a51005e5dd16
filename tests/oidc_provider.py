"""A real OpenID Connect provider for the tests: ``tests/oidc/provider.js`` (the npm package
oidc-provider, a certified OpenID provider) run by the machine's Node.js.

``tests/peers.sh`` installs its package (``npm ci`` in ``tests/oidc``); a missing
``node`` or package fails the test that needs it, loudly. The provider knows one client
(:data:`CLIENT_ID`, :data:`CLIENT_SECRET`, one redirect URI) and the accounts of
``provider.js``; its login form takes any password. It listens on a socket bound here
(no port race; bind it first when the node must know the issuer before the provider
knows the node's callback), over http, or https with a certificate from ``tls``.
"""

from __future__ import annotations

import html
import re
import selectors
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from tests.node_process import wait_for
from tests.pki import Pki

PROVIDER_DIR = Path(__file__).resolve().parent / "oidc"
CLIENT_ID = "ainode-test"
CLIENT_SECRET = "client secret of the test provider, not a secret"
SCOPES = "openid profile email groups"  # "groups" brings the groups claim (provider.js)
# claim value -> role, as a hospital would map its directory groups (see provider.js)
ROLE_MAP = "radiology-admins=admin,radiology-ops=operator,radiology=viewer"
START_SECONDS = 30  # generous: the provider answers within about a second here


def node_settings(issuer: str, ca: Path | None = None) -> dict[str, object]:
    """The node's settings for signing in at the provider ``issuer`` (``Settings`` names)."""
    return {
        "oidc_issuer": issuer,
        "oidc_client_id": CLIENT_ID,
        "oidc_client_secret": CLIENT_SECRET,
        "oidc_scopes": SCOPES,
        "oidc_role_map": ROLE_MAP,
        "oidc_ca": ca,
    }


@dataclass(frozen=True)
class OidcProvider:
    issuer: str
    ca: Path | None  # the CA of its certificate, when it speaks https

    def verify(self) -> ssl.SSLContext | bool:
        """What a client of the provider checks its certificate with."""
        return ssl.create_default_context(cafile=str(self.ca)) if self.ca else True

    def node_settings(self) -> dict[str, object]:
        """The node's settings for signing in here (``Settings`` field names)."""
        return node_settings(self.issuer, self.ca)


def bound_socket() -> socket.socket:
    """A listening loopback socket on a free port, for the provider to serve on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def _node() -> str:
    node = shutil.which("node")
    assert node, "Node.js is missing: the OpenID provider of the tests needs it (tests/peers.sh)"
    package = PROVIDER_DIR / "node_modules" / "oidc-provider" / "package.json"
    assert package.exists(), f"{package.parent} is missing: run tests/peers.sh (npm ci)"
    return node


def _issuer_line(process: subprocess.Popen[bytes], log: Path) -> str:
    """The issuer the provider prints once it listens; fails with its log if it dies."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + START_SECONDS
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            assert left > 0 and selector.select(left), "the OpenID provider did not start"
            chunk = process.stdout.read1(4096)
            assert chunk, f"the OpenID provider stopped:\n{log.read_text(errors='replace')}"
            line += chunk
    match = re.fullmatch(rb"issuer (\S+)\n", line)
    assert match, f"unexpected output from the OpenID provider: {line!r}"
    return match.group(1).decode()


@contextmanager
def oidc_provider(
    directory: Path,
    redirect_uri: str,
    *,
    tls: Pki | None = None,
    listening: socket.socket | None = None,
) -> Iterator[OidcProvider]:
    """The provider, running until the block ends, once its discovery document answers."""
    node = _node()
    directory.mkdir(parents=True, exist_ok=True)
    sock = listening or bound_socket()
    args = [node, str(PROVIDER_DIR / "provider.js"), "--fd", str(sock.fileno())]
    args += ["--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET]
    args += ["--redirect-uri", redirect_uri]
    if tls is not None:
        args += ["--tls-cert", str(tls.server_cert), "--tls-key", str(tls.server_key)]
    log = directory / "oidc-provider.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=stderr, pass_fds=(sock.fileno(),)
        )
    sock.close()  # the provider holds its own copy
    try:
        issuer = _issuer_line(process, log)
        provider = OidcProvider(issuer, tls.ca if tls else None)
        discovery = urljoin(issuer + "/", ".well-known/openid-configuration")

        def answers() -> bool:
            try:
                return httpx.get(discovery, verify=provider.verify(), timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, START_SECONDS, 0.1, f"the OpenID provider's discovery at {discovery}")
        yield provider
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


# ---- a browser at the provider --------------------------------------------------------


def _follow(
    browser: httpx.Client, response: httpx.Response, provider: OidcProvider
) -> tuple[str | None, httpx.Response]:
    """Follow the provider's redirects: the first address elsewhere (None when the provider
    answers with a page of its own), and the provider's last answer."""
    netloc = urlsplit(provider.issuer).netloc
    while response.is_redirect:
        location = urljoin(str(response.url), response.headers["location"])
        if urlsplit(location).netloc != netloc:
            return location, response
        response = browser.get(location)
    return None, response


def _login_page(browser: httpx.Client, provider: OidcProvider, url: str) -> httpx.Response:
    away, page = _follow(browser, browser.get(url), provider)
    assert away is None and page.status_code == 200, (away, page.text)
    return page


def log_in(provider: OidcProvider, authorization_url: str, login: str) -> str:
    """What a browser does at the provider: open ``authorization_url``, fill in its login
    form as ``login`` (any password), and be sent back; the URL it is sent back to."""
    with httpx.Client(verify=provider.verify(), timeout=10) as browser:
        page = _login_page(browser, provider, authorization_url)
        action = re.search(r'<form[^>]* action="([^"]+)"', page.text)
        assert action, page.text
        form = {"prompt": "login", "login": login, "password": "any password"}
        submitted = browser.post(urljoin(str(page.url), html.unescape(action.group(1))), data=form)
        back, last = _follow(browser, submitted, provider)
        assert back is not None, f"the provider kept the browser: {last.text}"
        return back


def cancel(provider: OidcProvider, authorization_url: str) -> str:
    """What a browser does when its user cancels at the provider's login form; the URL it
    is sent back to."""
    with httpx.Client(verify=provider.verify(), timeout=10) as browser:
        page = _login_page(browser, provider, authorization_url)
        abort = re.search(r'href="([^"]+/abort)"', page.text)
        assert abort, page.text
        back, last = _follow(browser, browser.get(urljoin(str(page.url), abort.group(1))), provider)
        assert back is not None, f"the provider kept the browser: {last.text}"
        return back
