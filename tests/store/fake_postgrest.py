"""A small in-memory PostgREST serving the migration's tables, for respx side effects.

It follows PostgREST's documented behaviour for what the store uses (docs.postgrest.org, API
reference): `Prefer: return=minimal|representation`, `resolution=merge-duplicates`,
`count=exact` (Content-Range), `on_conflict`, `columns`, horizontal filters (eq, gt, lt, in, like),
`order`, `limit`/`offset` capped by db-max-rows (silently), PATCH/DELETE with filters, and
`/rpc/<function>` with JSON named arguments. Errors use PostgREST's JSON shape
({code, message, details, hint}); the API gateway's 401 and a proxy's 413 are not JSON-coded
the same way, as on hosted Supabase. Columns, NOT NULL constraints and the trigger that drops a
stored article from the rejected ids come from supabase/migrations/*.sql (in name order).
The functions are re-implemented in Python with the migrations' semantics; the tests that
check their SQL run the captured calls on a real PostgreSQL (tests/store/test_postgres.py).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import httpx
import respx

from collector.store.supabase import SupabaseStore
from tests.conftest import REPO

MIGRATIONS = sorted((REPO / "supabase" / "migrations").glob("*.sql"))
KEYS = {
    "legifrance_articles": "id",
    "legifrance_rejected": "id",
    "collector_runs": "id",
    "collector_code_marks": "code_id",
    "collector_request_counters": "window_key",
    "collector_state": "id",
    "collector_lease": "id",
    "legifrance_changes": "seq",
    "legifrance_change_consumers": "consumer",
    "files_queue": "file_path",  # the downstream's queue (0004), written by the export
    "collector_dump_state": "id",
}
NO_EVENTS = {"added": 0, "modified": 0, "repealed": 0, "corrected": 0}


@dataclass(frozen=True)
class Column:
    name: str
    not_null: bool
    has_default: bool


def migration_tables() -> dict[str, list[Column]]:
    sql = "\n".join(path.read_text() for path in MIGRATIONS)
    tables: dict[str, list[Column]] = {}
    for name, body in re.findall(r"create table if not exists public\.(\w+) \((.*?)\n\);", sql, re.S):
        cols = []
        for line in body.strip().splitlines():
            line = line.split("--")[0].strip().lower()
            if not line:
                continue
            cols.append(
                Column(
                    line.split()[0],
                    "not null" in line or "primary key" in line,
                    " default " in line or "identity" in line,
                )
            )
        tables[name] = cols
    return tables


@dataclass
class Fault:
    """One injected failure, consumed by the first request it matches."""

    status: int | None = None  # HTTP status to answer with
    body: Any = None  # JSON body (dict) or text
    timeout: bool = False  # raise httpx.ReadTimeout instead of answering
    after: bool = False  # process the request first (the response is what gets lost)
    method: str | None = None
    path_contains: str | None = None

    def matches(self, request: httpx.Request) -> bool:
        return (self.method is None or request.method == self.method) and (
            self.path_contains is None or self.path_contains in request.url.path
        )


def answer(
    faults: list[Fault], request: httpx.Request, serve: Callable[[httpx.Request], httpx.Response]
) -> httpx.Response:
    """The first fault matching the request (consumed), else `serve(request)`."""
    fault = next((f for f in faults if f.matches(request)), None)
    if fault is None:
        return serve(request)
    faults.remove(fault)
    if fault.after:
        serve(request)
    if fault.timeout:
        raise httpx.ReadTimeout("timed out", request=request)
    if isinstance(fault.body, dict):
        return httpx.Response(fault.status or 500, json=fault.body)
    return httpx.Response(fault.status or 500, text=fault.body or "", headers={"content-type": "text/html"})


class FakeService:
    """What the fakes share: the key they accept, every request recorded, a matching injected
    fault answered first (see `answer`), else `_serve`. Thread-safe."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.requests: list[httpx.Request] = []
        self.faults: list[Fault] = []
        self._lock = threading.RLock()

    def fail_next(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
            return answer(self.faults, request, self._serve)

    def _serve(self, request: httpx.Request) -> httpx.Response:
        raise NotImplementedError


def _error(status: int, code: str | None, message: str, details: Any = None, hint: Any = None) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "details": details, "hint": hint, "message": message})


def _text(value: Any) -> str:
    """A value as PostgREST compares it in a filter (text form)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class FakePostgrest(FakeService):
    """In-memory PostgREST; `handle` is a respx side effect. Thread-safe."""

    def __init__(
        self,
        key: str,
        *,
        max_rows: int = 1000,
        max_body_bytes: int | None = None,
        statement_max_rows: int | None = None,
        missing_tables: tuple[str, ...] = (),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(key)
        self.max_rows = max_rows
        self.max_body_bytes = max_body_bytes
        self.statement_max_rows = statement_max_rows
        self.missing_tables = set(missing_tables)
        self.clock = clock
        self.schema = migration_tables()
        self.tables: dict[str, dict[Any, dict[str, Any]]] = {name: {} for name in self.schema}
        self._next_id = 1

    # ---- test controls ---------------------------------------------------------------------
    def rows(self, table: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for _, r in sorted(self.tables[table].items(), key=lambda kv: str(kv[0]))]

    def writes(self, table: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "POST" and r.url.path == f"/rest/v1/{table}"]

    # ---- entry point -----------------------------------------------------------------------
    def _serve(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("apikey") != self.key or request.headers.get("authorization") != f"Bearer {self.key}":
            # The API gateway answers before PostgREST, without a PostgREST error code.
            return httpx.Response(
                401, json={"message": "Invalid API key", "hint": "Double check your Supabase `anon` or `service_role` API key."}
            )
        if self.max_body_bytes is not None and len(request.content) > self.max_body_bytes:
            return httpx.Response(413, text="<html><h1>413 Request Entity Too Large</h1></html>", headers={"content-type": "text/html"})
        path = request.url.path.removeprefix("/rest/v1/")
        if path.startswith("rpc/"):
            return self._rpc(path.removeprefix("rpc/"), json.loads(request.content or b"{}"))
        if path not in self.schema or path in self.missing_tables:
            return _error(404, "PGRST205", f"Could not find the table 'public.{path}' in the schema cache")
        handler = {"GET": self._select, "HEAD": self._select, "POST": self._insert, "PATCH": self._update, "DELETE": self._delete}
        return handler[request.method](path, request)

    # ---- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _prefer(request: httpx.Request) -> dict[str, str]:
        items = [p.strip() for p in request.headers.get("prefer", "").split(",") if p.strip()]
        return dict(p.split("=", 1) for p in items)

    def _filters(self, table: str, request: httpx.Request) -> list[Callable[[dict[str, Any]], bool]] | httpx.Response:
        reserved = {"select", "order", "limit", "offset", "on_conflict", "columns"}
        names = {c.name for c in self.schema[table]}
        out: list[Callable[[dict[str, Any]], bool]] = []
        for col, raw in request.url.params.multi_items():
            if col in reserved:
                continue
            if col not in names:
                return _error(400, "42703", f"column {table}.{col} does not exist")
            op, _, value = raw.partition(".")
            if op == "in":
                items = {unquote(v).strip('"') for v in value.strip("()").split(",")}
                out.append(lambda r, c=col, s=items: _text(r.get(c)) in s)
            elif op == "like":  # `*` is PostgREST's URL-friendly alias of `%`
                pattern = re.escape(unquote(value)).replace(r"\*", ".*").replace("%", ".*").replace("_", ".")
                out.append(lambda r, c=col, rx=re.compile(pattern, re.S): r.get(c) is not None
                           and rx.fullmatch(_text(r.get(c))) is not None)
            elif op in {"eq", "gt", "lt", "gte", "lte"}:
                out.append(lambda r, c=col, o=op, v=value: self._compare(r.get(c), o, v))
            else:
                return _error(400, "PGRST100", f"unsupported operator {op}")
        return out

    @staticmethod
    def _compare(stored: Any, op: str, value: str) -> bool:
        if stored is None:
            return False
        a: Any
        b: Any
        if isinstance(stored, bool):
            a, b = _text(stored), value
        elif isinstance(stored, int | float):
            a, b = stored, float(value)
        else:
            a, b = str(stored), value
        return {"eq": a == b, "gt": a > b, "lt": a < b, "gte": a >= b, "lte": a <= b}[op]

    def _matching(self, table: str, request: httpx.Request) -> list[dict[str, Any]] | httpx.Response:
        filters = self._filters(table, request)
        if isinstance(filters, httpx.Response):
            return filters
        return [r for r in self.tables[table].values() if all(f(r) for f in filters)]

    def _check_columns(self, table: str, columns: set[str]) -> httpx.Response | None:
        unknown = sorted(columns - {c.name for c in self.schema[table]})
        if unknown:
            return _error(400, "PGRST204", f"Could not find the '{unknown[0]}' column of '{table}' in the schema cache")
        return None

    # ---- verbs -----------------------------------------------------------------------------
    def _select(self, table: str, request: httpx.Request) -> httpx.Response:
        rows = self._matching(table, request)
        if isinstance(rows, httpx.Response):
            return rows
        params = request.url.params
        for spec in reversed(params.get("order", "").split(",") if params.get("order") else []):
            col, _, direction = spec.partition(".")
            rows.sort(key=lambda r, c=col: (r.get(c) is None, r.get(c)), reverse=direction.startswith("desc"))
        total = len(rows)
        offset = int(params.get("offset", 0))
        limit = min(int(params.get("limit", self.max_rows)), self.max_rows)  # db-max-rows: silent cap
        page = rows[offset : offset + limit]
        select = params.get("select", "*")
        if select != "*":
            cols = select.split(",")
            page = [{c: r.get(c) for c in cols} for r in page]
        counted = self._prefer(request).get("count") == "exact"
        span = f"{offset}-{offset + len(page) - 1}" if page else "*"
        headers = {"content-range": f"{span}/{total if counted else '*'}"}
        if request.method == "HEAD":
            return httpx.Response(200, headers=headers)
        return httpx.Response(200, json=page, headers=headers)

    def _insert(self, table: str, request: httpx.Request) -> httpx.Response:
        prefer = self._prefer(request)
        body = json.loads(request.content)
        payload = body if isinstance(body, list) else [body]
        columns_param = request.url.params.get("columns")
        columns = (
            {c.strip().strip('"') for c in columns_param.split(",")}
            if columns_param
            else set().union(*(row.keys() for row in payload))
        )
        if (bad := self._check_columns(table, columns)) is not None:
            return bad
        if self.statement_max_rows is not None and len(payload) > self.statement_max_rows:
            return _error(500, "57014", "canceling statement due to statement timeout")
        key = KEYS[table]
        merge = prefer.get("resolution") == "merge-duplicates"
        on_conflict = request.url.params.get("on_conflict")
        if merge and on_conflict not in (None, key):
            return _error(400, "42P10", "there is no unique or exclusion constraint matching the ON CONFLICT specification")
        staged = self._stage(table, payload, columns, merge)
        if isinstance(staged, httpx.Response):
            return staged
        self._apply(table, staged, columns)
        if prefer.get("return") == "representation":
            return httpx.Response(201, json=[self.tables[table][pk] for pk in staged])
        return httpx.Response(201)

    def _stage(
        self, table: str, payload: list[dict[str, Any]], columns: set[str], merge: bool
    ) -> dict[Any, dict[str, Any]] | httpx.Response:
        """The rows an insert would write (checked: NOT NULL, keys), or its error; nothing written."""
        key = KEYS[table]
        staged: dict[Any, dict[str, Any]] = {}
        for given in payload:
            row: dict[str, Any] = {c.name: None for c in self.schema[table]}
            row.update({c: given.get(c) for c in columns})  # default_to_null: a missing key is NULL
            identity = table == "collector_runs"
            if identity and row["id"] is None:
                row["id"], self._next_id = self._next_id, self._next_id + 1
            for col in self.schema[table]:
                given_col = col.name in columns
                if col.not_null and row[col.name] is None and (given_col or not col.has_default):
                    return _error(400, "23502", f'null value in column "{col.name}" of relation "{table}" violates not-null constraint')
            pk = row[key]
            if pk in staged:
                if merge:
                    return _error(500, "21000", "ON CONFLICT DO UPDATE command cannot affect row a second time")
                return _error(409, "23505", f'duplicate key value violates unique constraint "{table}_pkey"')
            if pk in self.tables[table] and not merge:
                return _error(409, "23505", f'duplicate key value violates unique constraint "{table}_pkey"')
            staged[pk] = row
        return staged

    def _apply(self, table: str, staged: dict[Any, dict[str, Any]], columns: set[str]) -> None:
        for pk, row in staged.items():
            existing = self.tables[table].get(pk)
            self.tables[table][pk] = {**existing, **{c: row[c] for c in columns}} if existing else row
            if table == "legifrance_articles":  # trigger legifrance_articles_forget_rejected
                self.tables["legifrance_rejected"].pop(pk, None)

    def _update(self, table: str, request: httpx.Request) -> httpx.Response:
        values = json.loads(request.content)
        if (bad := self._check_columns(table, set(values))) is not None:
            return bad
        rows = self._matching(table, request)
        if isinstance(rows, httpx.Response):
            return rows
        for row in rows:
            row.update(values)
        return httpx.Response(204)

    def _delete(self, table: str, request: httpx.Request) -> httpx.Response:
        rows = self._matching(table, request)
        if isinstance(rows, httpx.Response):
            return rows
        for row in rows:
            self.tables[table].pop(row[KEYS[table]], None)
        return httpx.Response(204)

    # ---- functions (same semantics as the migration's) ------------------------------------
    def _rpc(self, name: str, args: dict[str, Any]) -> httpx.Response:
        if name == "collector_acquire_lease" and set(args) == {"p_owner", "p_ttl_seconds"}:
            now = self.clock()
            lease = self.tables["collector_lease"].get(True)
            owner = args["p_owner"]
            if lease is None or lease["owner"] == owner or datetime.fromisoformat(lease["expires_at"]) <= now:
                lease = {"id": True, "owner": owner, "acquired_at": now.isoformat(),
                         "expires_at": (now + timedelta(seconds=args["p_ttl_seconds"])).isoformat()}
                self.tables["collector_lease"][True] = lease
                return httpx.Response(200, json=[{"owner": owner, "expires_at": lease["expires_at"], "acquired": True}])
            return httpx.Response(200, json=[{"owner": lease["owner"], "expires_at": lease["expires_at"], "acquired": False}])
        if name == "collector_release_lease" and set(args) == {"p_owner"}:
            lease = self.tables["collector_lease"].get(True)
            if lease is not None and lease["owner"] == args["p_owner"]:
                lease["expires_at"] = min(datetime.fromisoformat(lease["expires_at"]), self.clock()).isoformat()
            return httpx.Response(204)
        if name == "collector_add_requests" and set(args) == {"p_keys", "p_n"}:
            counters = self.tables["collector_request_counters"]
            for key in set(args["p_keys"]):
                row = counters.setdefault(key, {"window_key": key, "count": 0, "updated_at": None})
                row["count"] += int(args["p_n"])
                row["updated_at"] = self.clock().isoformat()
            return httpx.Response(204)
        if name == "collector_advance_cursor" and set(args) == {"p_consumer", "p_seq"}:
            cursors = self.tables["legifrance_change_consumers"]
            row = cursors.setdefault(args["p_consumer"], {"consumer": args["p_consumer"], "last_seq": 0})
            row["last_seq"] = max(int(row["last_seq"]), int(args["p_seq"]))
            row["updated_at"] = self.clock().isoformat()
            return httpx.Response(204)
        if name == "collector_retire_versions" and set(args) == {"p_ids", "p_etats", "p_tag"}:
            stored = self.tables["legifrance_articles"]
            retired = []
            for rid, etat in dict(zip(args["p_ids"], args["p_etats"], strict=True)).items():
                row = stored.get(rid)
                if row is not None and str(row["etat"]).startswith("VIGUEUR"):
                    row["etat"] = etat
                    retired.append(row)
            live = {r["cid"] for r in stored.values() if str(r["etat"]).startswith("VIGUEUR")}
            for row in retired:
                if row["cid"] not in live:
                    self._log("repealed", row, args["p_tag"])
            etats = [r["etat"] for r in retired]
            events = {**NO_EVENTS, "repealed": sum(1 for r in retired if r["cid"] not in live)}
            return httpx.Response(200, json=[{"superseded": etats.count("MODIFIE"),
                                              "repealed": len(etats) - etats.count("MODIFIE"), "events": events}])
        if name == "collector_commit_batch" and set(args) <= {"p_articles", "p_rejected", "p_run_id", "p_progress", "p_tag"}:
            return self._commit_batch(args)
        if name in ("collector_retire_absent", "collector_retire_absent_logged") and {"p_code_id", "p_ids"} <= set(args) <= {
            "p_code_id", "p_ids", "p_cids", "p_tag"
        }:
            rows = [r for r in self.tables["legifrance_articles"].values() if r["code_id"] == args["p_code_id"]]
            live = set(args["p_ids"])
            stored = self.tables["legifrance_articles"]
            cids = set(args.get("p_cids") or ()) | {stored[i]["cid"] for i in live if i in stored}
            restored, retired = [], []
            for row in sorted(rows, key=lambda r: r["id"]):
                in_force = row["etat"].startswith("VIGUEUR")
                if row["id"] in live and not in_force:
                    row["etat"] = "VIGUEUR"
                    restored.append(row)
                elif row["id"] not in live and in_force:
                    row["etat"] = "MODIFIE" if row["cid"] in cids else "ABROGE"
                    retired.append(row)
            etats = [r["etat"] for r in retired]
            answer = {"superseded": etats.count("MODIFIE"), "repealed": etats.count("ABROGE")}
            if name == "collector_retire_absent_logged":
                answer["events"] = self._log_retired(retired, restored, args.get("p_tag"))
            return httpx.Response(200, json=[answer])
        return _error(404, "PGRST202", f"Could not find the function public.{name}({', '.join(sorted(args))}) in the schema cache")

    def _log(self, kind: str, row: dict[str, Any], tag: str | None, previous: str | None = None,
             previous_text: str | None = None) -> None:
        seq = len(self.tables["legifrance_changes"]) + 1
        self.tables["legifrance_changes"][seq] = {
            "seq": seq, "kind": kind, "code_id": row["code_id"], "cid": row["cid"], "id": row["id"],
            "previous_id": previous, "num": row["num"], "etat": row["etat"],
            "content_sha256": row["content_sha256"], "run_id": tag, "at": self.clock().isoformat(),
            "previous_text": previous_text,
        }

    def _log_retired(self, retired: list[dict[str, Any]], restored: list[dict[str, Any]], tag: str | None) -> dict[str, int]:
        """collector_log_retired: modified for a restored/retired pair of one cid, repealed for
        the other retired rows (not a MODIFIE one whose cid stays in force), added for the rest."""
        counts = dict(NO_EVENTS)
        back = {r["cid"]: r for r in restored}
        live = {r["cid"] for r in self.tables["legifrance_articles"].values() if str(r["etat"]).startswith("VIGUEUR")}
        events: list[tuple[str, dict[str, Any], str | None]] = []
        paired: set[str] = set()
        for r in retired:  # in id order
            if r["cid"] in back and r["cid"] not in paired:
                paired.add(r["cid"])
                events.append(("modified", back[r["cid"]], r["id"]))
        events += [("repealed", r, None) for r in retired
                   if r["cid"] not in back and not (r["etat"] == "MODIFIE" and r["cid"] in live)]
        events += [("added", r, None) for r in back.values() if r["cid"] not in {g["cid"] for g in retired}]
        for kind, row, previous in events:
            self._log(kind, row, tag, previous)
            counts[kind] += 1
        return counts

    def _commit_batch(self, args: dict[str, Any]) -> httpx.Response:
        """collector_commit_batch: one transaction (all rows checked before any is written);
        the events of added / modified / corrected rows as the migration writes them."""
        articles, rejected = args.get("p_articles") or [], args.get("p_rejected") or []
        if self.statement_max_rows is not None and len(articles) + len(rejected) > self.statement_max_rows:
            return _error(500, "57014", "canceling statement due to statement timeout")
        names = {c.name for c in self.schema["legifrance_articles"]}
        staged_a = self._stage("legifrance_articles", articles, names, merge=True)
        staged_r = self._stage("legifrance_rejected", rejected, {c.name for c in self.schema["legifrance_rejected"]},
                               merge=True)
        for staged in (staged_a, staged_r):
            if isinstance(staged, httpx.Response):
                return staged
        assert isinstance(staged_a, dict) and isinstance(staged_r, dict)
        stored = self.tables["legifrance_articles"]
        counts = dict(NO_EVENTS)
        tag = args.get("p_tag") or (str(args["p_run_id"]) if args.get("p_run_id") is not None else None)
        entering_first = sorted(staged_a.values(), key=lambda r: not str(r["etat"]).startswith("VIGUEUR"))
        for row in entering_first:
            kind, previous, old = None, None, stored.get(row["id"])
            if str(row["etat"]).startswith("VIGUEUR"):
                if old is not None and str(old["etat"]).startswith("VIGUEUR"):
                    kind = "corrected" if old["content_sha256"] != row["content_sha256"] else None
                else:
                    live = [r for r in stored.values()
                            if r["cid"] == row["cid"] and r["id"] != row["id"] and str(r["etat"]).startswith("VIGUEUR")]
                    for r in live:
                        r["etat"] = "MODIFIE"
                    previous = max(live, key=lambda r: (r["date_debut"] or "", r["id"]))["id"] if live else None
                    kind = "modified" if live else "added"
            elif old is not None and str(old["etat"]).startswith("VIGUEUR") and not any(
                r["cid"] == row["cid"] and r["id"] != row["id"] and str(r["etat"]).startswith("VIGUEUR")
                for r in stored.values()
            ):
                kind = "repealed"
            self._apply("legifrance_articles", {row["id"]: row}, names)
            if kind is not None:
                counts[kind] += 1
                self._log(kind, row, tag, previous, old["text"] if kind == "corrected" and old else None)
        self._apply("legifrance_rejected", staged_r, {c.name for c in self.schema["legifrance_rejected"]})
        if args.get("p_run_id") is not None and args.get("p_progress") is not None:
            run = self.tables["collector_runs"].get(args["p_run_id"])
            if run is not None:
                run["progress"] = args["p_progress"]
        return httpx.Response(200, json=counts)


@contextmanager
def supabase_over(fake: FakePostgrest, url: str = "https://proj.supabase.co") -> Iterator[SupabaseStore]:
    """A SupabaseStore at `url` with `fake`'s key whose PostgREST requests `fake` answers (through
    respx), without waits between retries; closed on exit."""
    with respx.mock(base_url=url, assert_all_called=False) as router:
        router.route(path__startswith="/rest/v1/").mock(side_effect=fake.handle)
        store = SupabaseStore(url, fake.key, backoff=lambda attempt: 0.0)
        try:
            yield store
        finally:
            store.close()
