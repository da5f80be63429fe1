"""What a route reads of a request, and what it answers.

aiohttp's web.Request has every member of Incoming, and so has the lean door's call
(engine.http.lean): the order routes are written once against it and served both ways.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from aiohttp import StreamReader, web
from multidict import CIMultiDictProxy


class Incoming(Protocol):
    @property
    def app(self) -> web.Application: ...

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def path_qs(self) -> str: ...

    @property
    def headers(self) -> CIMultiDictProxy[str]: ...

    @property
    def content_type(self) -> str: ...

    @property
    def content(self) -> StreamReader: ...

    @property
    def match_info(self) -> Mapping[str, str]: ...

    async def read(self) -> bytes: ...


class Answer(NamedTuple):
    """A route's answer before encoding: the body goes out as the client accepts."""

    status: int
    body: Any
    headers: Mapping[str, str]
