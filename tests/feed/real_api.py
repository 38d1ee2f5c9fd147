"""A local Légifrance over a real socket that serves the captured answers of
../shared/fixtures/legifrance-real/ for the Code des instruments monétaires et des médailles,
either as captured or as the code stood at an earlier date (`RealApi.as_of`).

The earlier code is built from the captured answers only: each TOC entry whose article file is
captured lists the version whose [dateDebut, dateFin) holds the date (etat VIGUEUR; no such
version -> the entry keeps its captured etat, not in force), and getArticle answers that
version with etat VIGUEUR and no end date, as the API did then. `not_yet_created` cids are
left out of the earlier TOC (an article the code did not have yet).

Endpoints as the client calls them: POST /api/oauth/token, and under API_PREFIX
/consult/legi/tableMatieres and /consult/getArticle. Anything else is a 404.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MONNAIES = "LEGITEXT000006070666"
API_PREFIX = "/dila/legifrance/lf-engine-app"
TOKEN_PATH = "/api/oauth/token"
NO_END_MS = 32472144000000  # the API's "no end date"


def _ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def _entries(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from node.get("articles") or []
    for section in node.get("sections") or []:
        yield from _entries(section)


class RealApi:
    """The captured code, served as captured (as_of None) or as of an earlier date."""

    def __init__(self, fixtures: Path, *, not_yet_created: frozenset[str] = frozenset()) -> None:
        self.toc_captured = json.loads((fixtures / "codes" / f"{MONNAIES}.json").read_text())
        self.versions: dict[str, dict[str, Any]] = {}  # id -> captured article object
        self.by_cid: dict[str, list[dict[str, Any]]] = {}
        for path in sorted((fixtures / "articles").glob("LEGIARTI*.json")):
            for version in json.loads(path.read_text())["listArticle"]:
                self.versions[version["id"]] = version
                self.by_cid.setdefault(version["cid"], []).append(version)
        self.not_yet_created = not_yet_created
        self.as_of: date | None = None
        self.served: list[str] = []  # "toc" / article ids, in order
        self._lock = threading.Lock()

    def _version_on(self, cid: str, day: date) -> dict[str, Any] | None:
        at = _ms(day)
        return next((v for v in self.by_cid.get(cid, ()) if v["dateDebut"] <= at < v["dateFin"]), None)

    def toc(self) -> dict[str, Any]:
        if self.as_of is None:
            return self.toc_captured
        toc = copy.deepcopy(self.toc_captured)
        for node in [toc, *self._sections(toc)]:
            kept = []
            for entry in node.get("articles") or []:
                if entry["cid"] in self.not_yet_created:
                    continue
                version = self._version_on(entry["cid"], self.as_of) if entry["cid"] in self.by_cid else None
                if version is not None:
                    entry["id"], entry["etat"] = version["id"], "VIGUEUR"
                elif entry["cid"] in self.by_cid:
                    entry["etat"] = self.by_cid[entry["cid"]][0]["etat"]
                kept.append(entry)
            if "articles" in node:
                node["articles"] = kept
        return toc

    def _sections(self, node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for section in node.get("sections") or []:
            yield section
            yield from self._sections(section)

    def article(self, article_id: str) -> dict[str, Any] | None:
        version = self.versions.get(article_id)
        if version is None or self.as_of is None:
            return version
        if self._version_on(version["cid"], self.as_of) is not version:
            return None  # not a version in force at that date: the TOC never lists it
        return {**version, "etat": "VIGUEUR", "dateFin": NO_END_MS}

    def in_force_ids(self) -> set[str]:
        return {e["id"] for e in _entries(self.toc()) if str(e["etat"]).startswith("VIGUEUR")}

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        with self._lock:
            if path == TOKEN_PATH:
                return 200, {"access_token": "real-api-token", "token_type": "Bearer", "expires_in": 3600}
            if path == f"{API_PREFIX}/consult/legi/tableMatieres" and body.get("textId") == MONNAIES:
                self.served.append("toc")
                return 200, self.toc()
            if path == f"{API_PREFIX}/consult/getArticle":
                self.served.append(str(body.get("id")))
                return 200, {"executionTime": 0, "article": self.article(str(body.get("id")))}
            return 404, {"error": f"not served here: {path}"}


class RealApiServer:
    """RealApi on 127.0.0.1 (stdlib ThreadingHTTPServer in a daemon thread)."""

    def __init__(self, api: RealApi) -> None:
        self.api = api

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw) if raw and not raw.startswith(b"grant_type") else {}
                except ValueError:
                    body = {}
                status, data = api.answer(self.path, body)
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> RealApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
