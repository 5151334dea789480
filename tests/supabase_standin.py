"""A test stand-in for Supabase's HTTP gateway, in front of the real local Postgres.

It replaces only the HTTP layer the ``supabase`` client talks to; everything behind it is real
(the migrated database, its SQL functions, roles, grants, RLS and the storage schema). It is a
real HTTP/1.1 server on a loopback socket, in a thread: the client under test is the
production httpx client (``SupabaseStore(env={"SUPABASE_URL": standin.url, …})``), or
``standin.client()``, the same client with every host name resolved to the stand-in (so
``http://supabase.test`` works), so timeouts, refused connections and keep-alive are real.

What it models, and refuses as Supabase does:

1. The API gateway's keys. The project has two keys, ``anon_key`` and ``service_key`` (JWTs
   signed with the project's secret, as Supabase's legacy keys). A request whose ``apikey``
   header is missing or not one of them gets 401 ``{"message": "No API key found in request"
   | "Invalid API key"}``; a signed-in user's token is not an API key. Without
   ``Authorization`` the request runs as the key's role (``anon`` only with the anon key);
   with it, the bearer token must be a JWT signed with the secret, unexpired (401 PGRST301 /
   PGRST303 otherwise), whose ``role`` is anon, authenticated or service_role. A signed-in
   user is the anon key plus the user's token (``signed_in(sub)``, or ``client(signed_in_as=
   sub)`` for a client given the anon key), as an app's client is after sign-in.
2. PostgREST's connection: the stand-in connects as ``authenticator`` (a login role that is
   neither superuser nor owner of anything, with no privileges of its own: ``noinherit``, a
   member of anon, authenticated and service_role; persistence/sql/supabase_standin.sql)
   and every request's transaction switches to the token's role with
   ``set_config('role', …)`` and sets ``request.jwt.claims``, ``request.method`` and
   ``request.path``, so grants, RLS and ``auth.uid()`` decide as on Supabase.
3. PostgREST's RPC endpoint, ``POST /rest/v1/rpc/{fn}``: named JSON arguments, typed by the
   function's declared parameters (``json_to_record`` with those types, as PostgREST builds
   its call); the function is found by name and argument names among its overloads, and a
   call that names an unknown argument or leaves out one without a default gets 404
   PGRST202 (two matches: 300 PGRST203). ``Content-Profile``/``Accept-Profile`` must name an
   exposed schema (``exposed_schemas``, default ``public``): 406 PGRST106 otherwise. A STABLE
   or IMMUTABLE function runs in a ``read only`` transaction (so a write in one fails with
   25006, 405), VOLATILE ones in a read-write one. Errors come back as PostgREST's JSON
   (code, message, details, hint) with its status codes (PTxyz -> xyz, 23505 -> 409, 42501 ->
   401 for anon / 403 otherwise, 42883 -> 404, 400 for other client errors, 500/503 for
   server classes).
4. The Storage API routes storage3 calls: upload (multipart, ``x-upsert``), object info,
   download, remove, list (``POST /object/list/{bucket}``: a folder's files and sub-folders,
   with limit, offset, search and sort), signed URLs (create, and the download that needs no
   key), get and create bucket. Objects and buckets are rows of ``storage.objects`` and
   ``storage.buckets`` read and written under the caller's role, so their RLS policies decide
   who may see, upload, list and remove (service_role bypasses RLS, as on Supabase); only the
   bucket's limits are read with service_role, as the Storage server reads them as its own
   admin. A bucket's ``file_size_limit`` and ``allowed_mime_types`` (wildcards such as
   ``image/*``) are enforced: Storage's error shapes, ``{"statusCode": "413", "error":
   "Payload too large", …}`` and ``{"statusCode": "415", "error": "invalid_mime_type", …}``,
   sent with HTTP 400 as Storage sends its errors (500 for its own failures). Bytes live in a
   folder and are sent in chunks (a large download is not held in memory).

What it does not model: Auth (GoTrue: sign-in, refresh; tests mint user tokens with
``token()``), Realtime, Edge Functions, PostgREST's table endpoints, filters, ``GET`` RPC
calls, ``Prefer`` headers, OpenAPI and its schema cache reloads (signatures are cached per
stand-in), role-level settings PostgREST applies (per-role ``statement_timeout``, its
``db-pre-request``), connection pool limits and rate limits, the new-style
``sb_publishable``/``sb_secret`` keys and asymmetric JWT signing keys, Storage's resumable
(TUS) and S3 endpoints, image transformations, public buckets' public URLs, the project-wide
upload size limit, and Storage's database triggers and ``storage.search``. The bytes of an
upload are not checked against the declared content type (neither does Storage), and an
upload's body is read whole into the stand-in's memory before it is written.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import jwt
import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

BASE_URL = "http://supabase.test"
ROLES = ("anon", "authenticated", "service_role")
AUTHENTICATOR = "authenticator"  # PostgREST's login role (persistence/sql/supabase_standin.sql)
CHUNK = 1 << 16


def postgrest_status(code: str, role: str) -> int:
    """PostgREST's HTTP status for a SQLSTATE (docs: "Errors and HTTP status codes")."""
    if code.startswith("PT") and code[2:].isdigit():
        return int(code[2:])
    exact = {"23503": 409, "23505": 409, "25006": 405, "42883": 404, "42P01": 404, "P0001": 400, "42P17": 500}
    if code in exact:
        return exact[code]
    if code == "42501":
        return 401 if role == "anon" else 403
    prefix = {"08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500, "38": 500, "39": 500,
              "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500, "57": 500, "58": 500, "F0": 500, "HV": 500,
              "P0": 500, "XX": 500}  # fmt: skip
    return prefix.get(code[:2], 400)


def _error(status: int, code: str, message: str, details: str | None = None, hint: str | None = None) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "details": details, "hint": hint, "message": message})


def _storage_error(status: int, error: str, message: str, http_status: int | None = None) -> httpx.Response:
    """Storage's error body; sent with HTTP 400 unless given (as Storage sends all but 500s)."""
    sent = http_status or (500 if status >= 500 else 400)
    return httpx.Response(sent, json={"statusCode": str(status), "error": error, "message": message})


def _gateway_refusal(message: str, hint: str) -> httpx.Response:
    return httpx.Response(401, json={"message": message, "hint": hint})


class _FileStream(httpx.SyncByteStream):
    """An object's bytes as they were when the request was answered, as Storage serves them: the
    file is opened then, so a delete or an overwrite while the body is sent does not cut it short
    (a POSIX file stays readable through an open handle after it is unlinked or replaced)."""

    def __init__(self, path: Path) -> None:
        self.fh = open(path, "rb")  # noqa: SIM115 - closed once sent (or by close() for a HEAD)
        self.size = os.fstat(self.fh.fileno()).st_size

    def __iter__(self) -> Iterator[bytes]:
        with self.fh:
            while chunk := self.fh.read(CHUNK):
                yield chunk

    def close(self) -> None:
        self.fh.close()


def _file_response(path: Path, content_type: str) -> httpx.Response:
    stream = _FileStream(path)
    return httpx.Response(
        200,
        stream=stream,
        headers={"content-type": content_type, "content-length": str(stream.size)},
    )


class _ResolveToStandin(httpx.HTTPTransport):
    """A real HTTP transport that connects to the stand-in whatever the URL's host says."""

    def __init__(self, port: int, authorization: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.port = port
        self.authorization = authorization  # (the anon key, a user's token): replace the first by the second

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=self.port)
        if self.authorization and request.headers.get("authorization") == f"Bearer {self.authorization[0]}":
            request.headers["authorization"] = f"Bearer {self.authorization[1]}"
        return super().handle_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _serve(self) -> None:
        request = httpx.Request(
            self.command,
            f"http://{self.headers.get('host') or 'supabase.test'}{self.path}",
            headers=[(k, v) for k, v in self.headers.items() if k.lower() != "transfer-encoding"],
            content=self._body(),
        )
        try:
            response = self.server.standin.handle(request)
        except Exception as exc:  # a bug of the stand-in: a 500, as a server would answer
            response = httpx.Response(500, json={"message": f"stand-in error: {type(exc).__name__}: {exc}"})
        self.send_response(response.status_code)
        for key, value in response.headers.multi_items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        if isinstance(response.stream, _FileStream):
            self.send_header("content-length", response.headers["content-length"])
            self.end_headers()
            if self.command != "HEAD":
                for chunk in response.stream:
                    self.wfile.write(chunk)
            response.stream.close()
            return
        content = response.read()
        self.send_header("content-length", str(len(content)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: SupabaseStandin

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.open_sockets: set[socket.socket] = set()
        self.lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away (a timeout, a closed connection): nothing to report

    def stop(self) -> None:
        """Stop listening and drop the kept-alive connections too, as a server that goes down."""
        self.shutdown()
        self.server_close()
        with self.lock:
            sockets, self.open_sockets = list(self.open_sockets), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class SupabaseStandin:
    def __init__(
        self, dsn: str, jwt_secret: str, storage_dir: Path, *, exposed_schemas: tuple[str, ...] = ("public",)
    ) -> None:
        self.secret = jwt_secret
        self.storage_dir = storage_dir
        self.exposed_schemas = exposed_schemas
        # The project's two API keys: long-lived JWTs, as Supabase's legacy anon and service_role keys.
        self.anon_key = self._jwt({"role": "anon", "iss": "supabase-standin", "exp": 4102444800})
        self.service_key = self._jwt({"role": "service_role", "iss": "supabase-standin", "exp": 4102444800})
        _ensure_roles(dsn)
        self.pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=8,
            kwargs={"autocommit": True, "prepare_threshold": None, "user": AUTHENTICATOR},
            open=True,
        )
        self._signatures: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.requests = 0
        self._server = _Server(("127.0.0.1", 0))
        self._server.standin = self
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="supabase-standin", daemon=True)
        self._thread.start()

    # -- keys and clients ----------------------------------------------------------------

    def _jwt(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.secret, algorithm="HS256")

    def token(self, role: str, sub: str | None = None, *, expires_in: int | None = None) -> str:
        """The project's anon or service key (``token("anon")``, ``token("service_role")``), or
        a JWT as Supabase Auth issues them: a signed-in user's (``sub``) or one that expires."""
        if sub is None and expires_in is None and role in ("anon", "service_role"):
            return self.anon_key if role == "anon" else self.service_key
        claims: dict[str, Any] = {
            "role": role,
            "iss": "supabase-standin",
            "exp": int(time.time()) + (expires_in or 3600),
        }
        if sub is not None:
            claims |= {"sub": sub, "aud": "authenticated"}
        return self._jwt(claims)

    def client(self, timeout: float = 30.0, *, signed_in_as: str | None = None) -> httpx.Client:
        """The production client's settings, connecting to the stand-in for any host name.
        ``signed_in_as``: requests made with the anon key carry that user's token instead, as
        an app's client does once the user has signed in (give the anon key to the client)."""
        user = (self.anon_key, self.token("authenticated", signed_in_as)) if signed_in_as else None
        return httpx.Client(
            transport=_ResolveToStandin(self.port, user), timeout=httpx.Timeout(timeout), follow_redirects=True
        )

    def signed_in(self, sub: str, *, timeout: float = 30.0) -> tuple[Any, httpx.Client]:
        """The supabase client as an app has it after a user signs in: the anon key as
        ``apikey``, the user's token as ``Authorization``. Returns (client, httpx client to close)."""
        from persistence.backends.postgres.supabase_store import make_client

        return make_client(BASE_URL, self.anon_key, http_client=self.client(timeout, signed_in_as=sub))

    def close(self) -> None:
        self._server.stop()
        self.pool.close()

    def reset_storage(self) -> None:
        shutil.rmtree(self.storage_dir, ignore_errors=True)

    # -- dispatch ------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        path = request.url.path
        if path.startswith("/storage/v1/object/sign/") and request.method == "GET":
            parts = [unquote(p) for p in path[len("/storage/v1/object/sign/") :].split("/")]
            return self._signed_download(request, parts[0], "/".join(parts[1:]))
        claims = self._claims(request)
        if path.startswith("/storage/v1/"):
            if isinstance(claims, httpx.Response):
                if "code" not in claims.json():  # the gateway's own refusal
                    return claims
                return _storage_error(400, "InvalidJWT", claims.json()["message"])
            return self._storage(request, claims, path[len("/storage/v1/") :])
        if isinstance(claims, httpx.Response):
            return claims
        if path.startswith("/rest/v1/rpc/") and request.method == "POST":
            return self._rpc(request, claims, path[len("/rest/v1/rpc/") :])
        return _error(404, "PGRST125", f"Invalid path specified in request URL: {path}")

    def _claims(self, request: httpx.Request) -> dict[str, Any] | httpx.Response:
        apikey = request.headers.get("apikey") or request.url.params.get("apikey")
        if not apikey:
            return _gateway_refusal("No API key found in request", "No `apikey` request header or url param was found.")
        if apikey not in (self.anon_key, self.service_key):
            return _gateway_refusal("Invalid API key", "Double check your Supabase `anon` or `service_role` API key.")
        header = request.headers.get("authorization", "")
        if not header:
            return {"role": "anon"} if apikey == self.anon_key else {"role": "service_role"}
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _error(401, "PGRST301", "Expected a Bearer token")
        try:
            claims: dict[str, Any] = jwt.decode(token, self.secret, algorithms=["HS256"], options={"verify_aud": False})
        except jwt.ExpiredSignatureError:
            return _error(401, "PGRST303", "JWT expired")
        except jwt.PyJWTError as exc:
            return _error(401, "PGRST301", f"JWSError {type(exc).__name__}")
        if claims.get("role") not in ROLES:
            return _error(400, "22023", f'role "{claims.get("role")}" does not exist')
        return claims

    def _begin(
        self, conn: psycopg.Connection[Any], claims: dict[str, Any], method: str, path: str, *, read_only: bool = False
    ) -> None:
        # What PostgREST runs at the start of every request's transaction (read only first:
        # it must precede any query of the transaction).
        if read_only:
            conn.execute("set transaction read only")
        conn.execute(
            "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true), "
            "set_config('request.method', %s, true), set_config('request.path', %s, true)",
            (claims["role"], json.dumps(claims), method, path),
        )

    # -- PostgREST RPC -------------------------------------------------------------------

    def _overloads(self, schema: str, fn: str) -> list[dict[str, Any]]:
        """The functions named ``fn``: their arguments (name -> type), the required ones and
        whether they are STABLE/IMMUTABLE (PostgREST's schema cache)."""
        key = (schema, fn)
        if key not in self._signatures:
            with self.pool.connection() as conn:
                rows = conn.execute(
                    """select p.oid, p.provolatile, p.pronargs, p.pronargdefaults,
                              coalesce((select array_agg(array[a.name, format_type(a.type, null)] order by a.i)
                                        from unnest(p.proargnames[1:p.pronargs], p.proargtypes::oid[])
                                             with ordinality as a(name, type, i)), '{}')
                       from pg_catalog.pg_proc p
                       join pg_catalog.pg_namespace n on n.oid = p.pronamespace
                       where n.nspname = %s and p.proname = %s""",
                    (schema, fn),
                ).fetchall()
            overloads = []
            for _oid, volatile, nargs, ndefaults, args in rows:
                names = [a[0] for a in args]
                overloads.append(
                    {
                        "types": {a[0]: a[1] for a in args},
                        "required": set(names[: nargs - ndefaults]),
                        "read_only": volatile in ("s", "i"),
                    }
                )
            self._signatures[key] = overloads
        return self._signatures[key]

    def _rpc(self, request: httpx.Request, claims: dict[str, Any], fn: str) -> httpx.Response:
        schema = request.headers.get("content-profile") or request.headers.get("accept-profile") or "public"
        for profile in (request.headers.get("content-profile"), request.headers.get("accept-profile")):
            if profile is not None and profile not in self.exposed_schemas:
                return _error(
                    406, "PGRST106", f"The schema must be one of the following: {', '.join(self.exposed_schemas)}"
                )
        try:
            args = json.loads(request.read() or b"{}")
        except json.JSONDecodeError as exc:
            return _error(400, "PGRST102", f"Empty or invalid json: {exc}")
        if not isinstance(args, dict):
            return _error(400, "PGRST102", "Expected a JSON object of named arguments")
        matches = [
            o for o in self._overloads(schema, fn) if set(args) <= set(o["types"]) and o["required"] <= set(args)
        ]
        given = ", ".join(sorted(args))
        if not matches:
            return _error(
                404,
                "PGRST202",
                f"Could not find the function {schema}.{fn}({given}) in the schema cache",
                f"Searched for the function {schema}.{fn} with parameters {given} or with a single unnamed "
                "json/jsonb parameter, but no matches were found in the schema cache.",
            )
        if len(matches) > 1:
            return _error(
                300, "PGRST203", f"Could not choose the best candidate function between: {schema}.{fn}({given})"
            )
        signature = matches[0]
        names = list(args)
        # As PostgREST: the arguments come out of the JSON body typed as the function declares them.
        call = sql.SQL("select {schema}.{fn}({args}) from json_to_record(%s::json) as _({columns})").format(
            schema=sql.Identifier(schema),
            fn=sql.Identifier(fn),
            args=sql.SQL(", ").join(sql.SQL("{} := _.{}").format(sql.Identifier(n), sql.Identifier(n)) for n in names),
            columns=sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(signature["types"][n])) for n in names
            ),
        )
        if not names:
            call = sql.SQL("select {schema}.{fn}()").format(schema=sql.Identifier(schema), fn=sql.Identifier(fn))
        try:
            with self.pool.connection() as conn, conn.transaction():
                self._begin(conn, claims, "POST", f"/rpc/{fn}", read_only=signature["read_only"])
                row = conn.execute(call, (json.dumps(args),) if names else None).fetchone()
        except psycopg.Error as exc:
            code = exc.sqlstate or "XX000"
            return _error(
                postgrest_status(code, claims["role"]),
                code,
                exc.diag.message_primary or str(exc),
                exc.diag.message_detail,
                exc.diag.message_hint,
            )
        value = None if row is None else row[0]
        return httpx.Response(
            200,
            content=json.dumps(value).encode(),
            headers={"content-type": "application/json; charset=utf-8"},
        )

    # -- Storage -------------------------------------------------------------------------

    def _file(self, bucket: str, name: str) -> Path:
        path = (self.storage_dir / bucket / name).resolve()
        if self.storage_dir.resolve() not in path.parents:
            raise ValueError(name)
        return path

    def _storage(self, request: httpx.Request, claims: dict[str, Any], rest: str) -> httpx.Response:
        parts = [unquote(p) for p in rest.split("/")]
        method = request.method
        if parts[0] == "bucket":
            return self._bucket(request, claims, "/".join(parts[1:]) or None)
        if parts[0] != "object" or len(parts) < 2 or not parts[1]:
            return _storage_error(404, "not_found", f"Route {method}:/{rest} not found", 404)
        route, bucket, name = parts[1], parts[2] if len(parts) > 2 else "", "/".join(parts[3:])
        if route == "info" and method == "GET":
            return self._object_info(claims, bucket, name)
        if route == "sign" and method == "POST":
            return self._sign(request, claims, bucket, name)
        if route == "list" and method == "POST" and not name:
            return self._list(request, claims, bucket)
        if route in ("info", "sign", "list", "list-v2", "move", "copy", "upload", "public", "render"):
            return _storage_error(404, "not_found", f"Route {method}:/{rest} not found", 404)
        if route == "authenticated" and method == "GET":
            return self._download(claims, bucket, name)
        bucket, name = parts[1], "/".join(parts[2:])
        if method == "POST" and name:
            return self._upload(request, claims, bucket, name)
        if method == "GET" and name:
            return self._download(claims, bucket, name)
        if method == "DELETE" and not name:
            return self._remove(request, claims, bucket)
        return _storage_error(404, "not_found", f"Route {method}:/{rest} not found", 404)

    def _bucket_limits(self, bucket: str) -> tuple[int | None, list[str] | None] | None:
        """The bucket's size limit and allowed types, read as Storage reads them (as its admin)."""
        with self.pool.connection() as conn, conn.transaction():
            self._begin(conn, {"role": "service_role"}, "GET", f"/bucket/{bucket}", read_only=True)
            row = conn.execute(
                "select file_size_limit, allowed_mime_types from storage.buckets where id = %s", (bucket,)
            ).fetchone()
        return None if row is None else (row[0], row[1])

    def _bucket(self, request: httpx.Request, claims: dict[str, Any], bucket: str | None) -> httpx.Response:
        if request.method == "GET" and bucket:
            with self.pool.connection() as conn, conn.transaction():
                self._begin(conn, claims, "GET", f"/bucket/{bucket}", read_only=True)
                row = conn.execute(
                    "select to_jsonb(b) || jsonb_build_object('owner', coalesce(b.owner::text, '')) "
                    "from storage.buckets b where id = %s",
                    (bucket,),
                ).fetchone()
            if row is None:  # missing, or the caller's policies do not show it
                return _storage_error(404, "Bucket not found", "Bucket not found")
            return httpx.Response(200, json=row[0])
        if request.method == "POST" and not bucket:
            body = json.loads(request.read())
            try:
                with self.pool.connection() as conn, conn.transaction():
                    self._begin(conn, claims, "POST", "/bucket")
                    conn.execute(
                        "insert into storage.buckets (id, name, owner, public, file_size_limit, allowed_mime_types) "
                        "values (%s, %s, %s, %s, %s, %s)",
                        (
                            body.get("id") or body["name"],
                            body["name"],
                            claims.get("sub"),
                            bool(body.get("public")),
                            body.get("file_size_limit"),
                            body.get("allowed_mime_types"),
                        ),
                    )
            except psycopg.errors.UniqueViolation:
                return _storage_error(409, "Duplicate", "The resource already exists")
            except psycopg.errors.InsufficientPrivilege as exc:
                return _storage_error(403, "Unauthorized", exc.diag.message_primary or "forbidden")
            return httpx.Response(200, json={"name": body["name"]})
        return _storage_error(404, "not_found", f"Route {request.method}:/bucket not found", 404)

    def _upload(self, request: httpx.Request, claims: dict[str, Any], bucket: str, name: str) -> httpx.Response:
        limits = self._bucket_limits(bucket)
        if limits is None:
            return _storage_error(404, "Bucket not found", "Bucket not found")
        data, content_type = _multipart_file(request)
        size_limit, allowed = limits
        if size_limit is not None and len(data) > size_limit:
            return _storage_error(413, "Payload too large", "The object exceeded the maximum allowed size")
        if allowed and not any(fnmatch.fnmatchcase(content_type.split(";")[0].strip(), a) for a in allowed):
            return _storage_error(415, "invalid_mime_type", f"mime type {content_type} is not supported")
        upsert = request.headers.get("x-upsert", "false") == "true"
        object_id = str(uuid.uuid4())
        metadata = json.dumps({"size": len(data), "mimetype": content_type, "eTag": f'"{uuid.uuid4().hex}"'})
        insert = "insert into storage.objects (id, bucket_id, name, owner, owner_id, metadata) values (%s, %s, %s, %s, %s, %s)"
        if upsert:
            insert += " on conflict (bucket_id, name) do update set metadata = excluded.metadata, updated_at = now()"
        try:
            with self.pool.connection() as conn, conn.transaction():
                self._begin(conn, claims, "POST", f"/object/{bucket}/{name}")
                conn.execute(insert, (object_id, bucket, name, claims.get("sub"), claims.get("sub"), metadata))
                target = self._file(bucket, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                # Inside the transaction: no row without bytes. Written beside and renamed over,
                # as an object store swaps in a new version whole: a download under way keeps
                # reading the old one.
                partial = target.with_name(f".{target.name}.{object_id}")
                try:
                    partial.write_bytes(data)
                    os.replace(partial, target)
                finally:
                    partial.unlink(missing_ok=True)  # gone once renamed; a failed write leaves none
        except psycopg.errors.UniqueViolation:
            return _storage_error(409, "Duplicate", "The resource already exists")
        except psycopg.errors.InsufficientPrivilege as exc:
            return _storage_error(403, "Unauthorized", exc.diag.message_primary or "forbidden")
        return httpx.Response(200, json={"Key": f"{bucket}/{name}", "Id": object_id})

    def _visible(self, claims: dict[str, Any], bucket: str, name: str) -> tuple[Any, ...] | None:
        """The object's row if the caller may read it (RLS decides, as in Storage)."""
        with self.pool.connection() as conn, conn.transaction():
            self._begin(conn, claims, "GET", f"/object/{bucket}/{name}", read_only=True)
            row: tuple[Any, ...] | None = conn.execute(
                "select id, name, metadata, created_at::text, updated_at::text from storage.objects "
                "where bucket_id = %s and name = %s",
                (bucket, name),
            ).fetchone()
        return row

    def _object_info(self, claims: dict[str, Any], bucket: str, name: str) -> httpx.Response:
        row = self._visible(claims, bucket, name)
        if row is None:
            return _storage_error(404, "not_found", "Object not found")
        meta = row[2] or {}
        return httpx.Response(
            200,
            json={
                "id": str(row[0]),
                "name": row[1],
                "size": meta.get("size"),
                "content_type": meta.get("mimetype"),
                "etag": meta.get("eTag"),
                "created_at": row[3],
                "last_modified": row[4],
                "metadata": meta,
            },
        )

    def _download(self, claims: dict[str, Any], bucket: str, name: str) -> httpx.Response:
        row = self._visible(claims, bucket, name)
        if row is None:
            return _storage_error(404, "not_found", "Object not found")
        meta = row[2] or {}
        return _file_response(self._file(bucket, name), meta.get("mimetype") or "application/octet-stream")

    def _list(self, request: httpx.Request, claims: dict[str, Any], bucket: str) -> httpx.Response:
        """A folder's entries, as Storage's ``storage.search``: files (with their metadata) and
        sub-folders (id null), of the objects the caller's policies show."""
        body = json.loads(request.read() or b"{}")
        prefix = (body.get("prefix") or "").strip("/")
        limit, offset = int(body.get("limit") or 100), int(body.get("offset") or 0)
        search = body.get("search") or ""
        sort = body.get("sortBy") or {}
        column = str(sort.get("column")) if sort.get("column") in ("name", "created_at", "updated_at") else "name"
        with self.pool.connection() as conn, conn.transaction():
            self._begin(conn, claims, "POST", f"/object/list/{bucket}", read_only=True)
            rows = conn.execute(
                "select name, id, metadata, created_at, updated_at, last_accessed_at from storage.objects "
                "where bucket_id = %s and (%s = '' or name like %s)",
                (bucket, prefix, prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"),
            ).fetchall()
        entries: dict[str, dict[str, Any]] = {}
        for name, oid, meta, created, updated, accessed in rows:
            rest = name[len(prefix) + 1 :] if prefix else name
            head, sep, _ = rest.partition("/")
            if not head.lower().startswith(search.lower()):
                continue
            if sep:
                entries.setdefault(head, {"name": head, "id": None, "updated_at": None, "created_at": None,
                                          "last_accessed_at": None, "metadata": None})  # fmt: skip
            else:
                entries[head] = {"name": head, "id": str(oid), "updated_at": updated.isoformat(),
                                 "created_at": created.isoformat(), "last_accessed_at": accessed.isoformat(),
                                 "metadata": meta}  # fmt: skip
        folders = sorted((e for e in entries.values() if e["id"] is None), key=lambda e: e["name"])
        files = sorted((e for e in entries.values() if e["id"] is not None), key=lambda e: (e[column] or "", e["name"]))
        if sort.get("order", "asc").lower() == "desc":
            folders.reverse()
            files.reverse()
        return httpx.Response(200, json=(folders + files)[offset : offset + limit])

    def _remove(self, request: httpx.Request, claims: dict[str, Any], bucket: str) -> httpx.Response:
        prefixes = json.loads(request.read()).get("prefixes") or []
        with self.pool.connection() as conn, conn.transaction():
            self._begin(conn, claims, "DELETE", f"/object/{bucket}")
            rows = conn.execute(
                "delete from storage.objects where bucket_id = %s and name = any(%s) returning id, name",
                (bucket, prefixes),
            ).fetchall()
        for _id, name in rows:
            self._file(bucket, name).unlink(missing_ok=True)
        return httpx.Response(200, json=[{"id": str(i), "name": n, "bucket_id": bucket} for i, n in rows])

    def _sign(self, request: httpx.Request, claims: dict[str, Any], bucket: str, name: str) -> httpx.Response:
        if self._visible(claims, bucket, name) is None:
            return _storage_error(404, "not_found", "Object not found")
        expires_in = int(json.loads(request.read())["expiresIn"])
        token = jwt.encode({"url": f"{bucket}/{name}", "exp": int(time.time()) + expires_in}, self.secret, "HS256")
        return httpx.Response(200, json={"signedURL": f"/object/sign/{bucket}/{name}?token={token}"})

    def _signed_download(self, request: httpx.Request, bucket: str, name: str) -> httpx.Response:
        try:
            claims = jwt.decode(request.url.params.get("token", ""), self.secret, algorithms=["HS256"])
        except jwt.PyJWTError as exc:
            return _storage_error(400, "InvalidJWT", f"{type(exc).__name__}")
        if claims.get("url") != f"{bucket}/{name}":
            return _storage_error(400, "InvalidSignature", "The url does not match the signature")
        path = self._file(bucket, name)
        if not path.exists():
            return _storage_error(404, "not_found", "Object not found")
        return _file_response(path, "application/octet-stream")


def _ensure_roles(dsn: str) -> None:
    """The API roles and ``authenticator`` are cluster-wide: on a cluster where no database was
    bootstrapped yet (a stand-in in front of an unmigrated database), create them from the
    bootstrap's own statement, with the DSN's (superuser) role."""
    from persistence.backends.postgres.schema import split_statements, standin_sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("select 1 from pg_catalog.pg_roles where rolname = %s", (AUTHENTICATOR,)).fetchone():
            return
        roles = [st for st in split_statements(standin_sql()) if "create role authenticator" in st]
        assert len(roles) == 1, "persistence/sql/supabase_standin.sql no longer creates authenticator in one statement"
        conn.execute(roles[0])


def _multipart_file(request: httpx.Request) -> tuple[bytes, str]:
    """The ``file`` part of the multipart form storage3 uploads (its bytes and content type)."""
    match = re.search(r'boundary="?([^";]+)"?', request.headers.get("content-type", ""))
    if not match:
        raise ValueError("upload without a multipart boundary")
    boundary = b"--" + match.group(1).encode()
    for part in request.read().split(boundary)[1:-1]:
        head, _, body = part.partition(b"\r\n\r\n")
        if b'name="file"' in head:
            ctype = re.search(rb"content-type:\s*([^\r\n]+)", head, re.IGNORECASE)
            return body[: -len(b"\r\n")], ctype.group(1).decode() if ctype else "application/octet-stream"
    raise ValueError("upload without a file part")
