"""Console test plumbing: sign in over plain HTTP, read a page's CSRF token."""

from __future__ import annotations

import re

import httpx

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


def signin(url: str, token: str) -> httpx.Client:
    """A client holding a console session cookie for `token` (as a browser would)."""
    client = httpx.Client(base_url=url, follow_redirects=False, timeout=30)
    form = client.get("/signin")
    assert form.status_code == 200
    response = client.post("/signin", data={"token": token, "csrf": csrf_of(form.text)})
    assert response.status_code == 303, response.text
    return client
