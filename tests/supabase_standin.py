"""A test stand-in for Supabase's HTTP gateway, in front of the real local Postgres.

It replaces only the HTTP layer the ``supabase`` client talks to; everything behind it is real
(the migrated database, its SQL functions, roles, RLS and the storage schema):

* PostgREST's RPC endpoint, ``POST /rest/v1/rpc/{fn}``: named JSON arguments, typed by the
  function's declared parameters (``json_to_record`` with those types, as PostgREST builds its
  call), run in one transaction after ``set_config('role', …)`` and
  ``set_config('request.jwt.claims', …)`` from the verified JWT (no or invalid token: anon /
  401); the JSON result as the body; errors as PostgREST's JSON (code, message, details, hint)
  with its status codes (PTxyz -> xyz, 23505 -> 409, 42501 -> 401/403, 42883 -> 404,
  PGRST202 for an unknown function, 400 otherwise, 500/503 for server classes).
* The Storage endpoints storage3 calls: object upload (multipart), info, download, remove,
  signed URLs (create and download), and get/create bucket. Object rows live in
  ``storage.objects`` and are read and written under the caller's role, so the bucket's RLS
  policies decide as on Supabase; the bytes live in a folder.

Plug it into the real client through its httpx transport: ``SupabaseStore(env=…,
http_client=standin.client())``. Not here: Auth, Realtime, table endpoints, PostgREST's
filters and headers beyond what the client sends for RPC.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
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
    return httpx.Response(http_status or status, json={"statusCode": str(status), "error": error, "message": message})


class SupabaseStandin:
    def __init__(self, dsn: str, jwt_secret: str, storage_dir: Path) -> None:
        self.secret = jwt_secret
        self.storage_dir = storage_dir
        self.pool = ConnectionPool(
            dsn, min_size=1, max_size=8, kwargs={"autocommit": True, "prepare_threshold": None}, open=True
        )
        self._signatures: dict[tuple[str, str], dict[str, str]] = {}
        self.requests = 0

    # -- keys and clients ----------------------------------------------------------------

    def token(self, role: str, sub: str | None = None, *, expires_in: int = 3600) -> str:
        """A JWT as Supabase issues them: the anon and service keys, or a signed-in user's token."""
        claims: dict[str, Any] = {"role": role, "iss": "supabase-standin", "exp": int(time.time()) + expires_in}
        if sub is not None:
            claims |= {"sub": sub, "aud": "authenticated"}
        return jwt.encode(claims, self.secret, algorithm="HS256")

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle), timeout=timeout)

    def close(self) -> None:
        self.pool.close()

    def reset_storage(self) -> None:
        shutil.rmtree(self.storage_dir, ignore_errors=True)

    # -- dispatch ------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        path = request.url.path
        if path.startswith("/rest/v1/rpc/") and request.method == "POST":
            return self._rpc(request, path[len("/rest/v1/rpc/") :])
        if path.startswith("/storage/v1/"):
            return self._storage(request, path[len("/storage/v1/") :])
        return _error(404, "PGRST125", f"Invalid path specified in request URL: {path}")

    def _claims(self, request: httpx.Request) -> dict[str, Any] | httpx.Response:
        header = request.headers.get("authorization", "")
        if not header:
            return {"role": "anon"}
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

    def _begin(self, conn: psycopg.Connection[Any], claims: dict[str, Any], method: str, path: str) -> None:
        # What PostgREST sets at the start of every request's transaction.
        conn.execute(
            "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true), "
            "set_config('request.method', %s, true), set_config('request.path', %s, true)",
            (claims["role"], json.dumps(claims), method, path),
        )

    # -- PostgREST RPC -------------------------------------------------------------------

    def _signature(self, schema: str, fn: str) -> dict[str, str] | None:
        key = (schema, fn)
        if key not in self._signatures:
            with self.pool.connection() as conn:
                rows = conn.execute(
                    """select a.name, format_type(a.type, null)
                       from pg_catalog.pg_proc p
                       join pg_catalog.pg_namespace n on n.oid = p.pronamespace
                       cross join lateral unnest(p.proargnames, p.proargtypes::oid[]) as a(name, type)
                       where n.nspname = %s and p.proname = %s""",
                    (schema, fn),
                ).fetchall()
                found = conn.execute(
                    "select count(*) from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace "
                    "where n.nspname = %s and p.proname = %s",
                    (schema, fn),
                ).fetchone()
            if not found or not found[0]:
                return None
            self._signatures[key] = dict(rows)
        return self._signatures[key]

    def _rpc(self, request: httpx.Request, fn: str) -> httpx.Response:
        claims = self._claims(request)
        if isinstance(claims, httpx.Response):
            return claims
        schema = request.headers.get("content-profile", "public")
        try:
            args = json.loads(request.read() or b"{}")
        except json.JSONDecodeError as exc:
            return _error(400, "PGRST102", f"Empty or invalid json: {exc}")
        if not isinstance(args, dict):
            return _error(400, "PGRST102", "Expected a JSON object of named arguments")
        signature = self._signature(schema, fn)
        if signature is None or any(name not in signature for name in args):
            names = ", ".join(sorted(args))
            return _error(
                404,
                "PGRST202",
                f"Could not find the function {schema}.{fn}({names}) in the schema cache",
                f"Searched for the function {schema}.{fn} with parameters {names} or with a single unnamed "
                "json/jsonb parameter, but no matches were found in the schema cache.",
            )
        names = list(args)
        # As PostgREST: the arguments come out of the JSON body typed as the function declares them.
        call = sql.SQL("select {schema}.{fn}({args}) from json_to_record(%s::json) as _({columns})").format(
            schema=sql.Identifier(schema),
            fn=sql.Identifier(fn),
            args=sql.SQL(", ").join(sql.SQL("{} := _.{}").format(sql.Identifier(n), sql.Identifier(n)) for n in names),
            columns=sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(signature[n])) for n in names
            ),
        )
        if not names:
            call = sql.SQL("select {schema}.{fn}()").format(schema=sql.Identifier(schema), fn=sql.Identifier(fn))
        try:
            with self.pool.connection() as conn, conn.transaction():
                self._begin(conn, claims, "POST", f"/rpc/{fn}")
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

    def _storage(self, request: httpx.Request, rest: str) -> httpx.Response:
        parts = [unquote(p) for p in rest.split("/")]
        if parts[:2] == ["object", "sign"] and request.method == "GET":
            return self._signed_download(request, parts[2], "/".join(parts[3:]))
        claims = self._claims(request)
        if isinstance(claims, httpx.Response):
            return _storage_error(403, "Unauthorized", json.loads(claims.content)["message"], claims.status_code)
        if parts[0] == "bucket":
            return self._bucket(request, claims, parts[1] if len(parts) > 1 else None)
        if parts[0] != "object" or len(parts) < 2:
            return _storage_error(404, "not_found", f"unknown storage route {rest}")
        if parts[1] == "info" and request.method == "GET":
            return self._object_info(claims, parts[2], "/".join(parts[3:]))
        if parts[1] == "sign" and request.method == "POST":
            return self._sign(request, claims, parts[2], "/".join(parts[3:]))
        if parts[1] == "authenticated":
            parts = parts[1:]
        bucket, name = parts[1], "/".join(parts[2:])
        if request.method == "POST":
            return self._upload(request, claims, bucket, name)
        if request.method == "GET":
            return self._download(claims, bucket, name)
        if request.method == "DELETE" and not name:
            return self._remove(request, claims, bucket)
        return _storage_error(405, "method_not_allowed", f"{request.method} {rest}")

    def _bucket_exists(self, bucket: str) -> bool:
        with self.pool.connection() as conn:
            return conn.execute("select 1 from storage.buckets where id = %s", (bucket,)).fetchone() is not None

    def _bucket(self, request: httpx.Request, claims: dict[str, Any], bucket: str | None) -> httpx.Response:
        if request.method == "GET" and bucket:
            with self.pool.connection() as conn:
                row = conn.execute(
                    "select to_jsonb(b) || jsonb_build_object('owner', coalesce(b.owner::text, '')) "
                    "from storage.buckets b where id = %s",
                    (bucket,),
                ).fetchone()
            if row is None:
                return _storage_error(404, "Bucket not found", "Bucket not found", 400)
            return httpx.Response(200, json=row[0])
        if request.method == "POST" and not bucket:
            if claims["role"] != "service_role":
                return _storage_error(403, "Unauthorized", "new row violates row-level security policy", 400)
            body = json.loads(request.read())
            with self.pool.connection() as conn:
                try:
                    conn.execute(
                        "insert into storage.buckets (id, name, public) values (%s, %s, %s)",
                        (body.get("id") or body["name"], body["name"], bool(body.get("public"))),
                    )
                except psycopg.errors.UniqueViolation:
                    return _storage_error(409, "Duplicate", "The resource already exists", 400)
            return httpx.Response(200, json={"name": body["name"]})
        return _storage_error(405, "method_not_allowed", f"{request.method} bucket")

    def _upload(self, request: httpx.Request, claims: dict[str, Any], bucket: str, name: str) -> httpx.Response:
        if not self._bucket_exists(bucket):
            return _storage_error(404, "Bucket not found", "Bucket not found", 400)
        data, content_type = _multipart_file(request)
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
                target.write_bytes(data)  # inside the transaction: no row without bytes
        except psycopg.errors.UniqueViolation:
            return _storage_error(409, "Duplicate", "The resource already exists", 400)
        except psycopg.errors.InsufficientPrivilege as exc:
            return _storage_error(403, "Unauthorized", exc.diag.message_primary or "forbidden", 400)
        return httpx.Response(200, json={"Key": f"{bucket}/{name}", "Id": object_id})

    def _visible(self, claims: dict[str, Any], bucket: str, name: str) -> tuple[Any, ...] | None:
        """The object's row if the caller may read it (RLS decides, as in Storage)."""
        with self.pool.connection() as conn, conn.transaction():
            self._begin(conn, claims, "GET", f"/object/{bucket}/{name}")
            row: tuple[Any, ...] | None = conn.execute(
                "select id, name, metadata, created_at::text, updated_at::text from storage.objects "
                "where bucket_id = %s and name = %s",
                (bucket, name),
            ).fetchone()
        return row

    def _object_info(self, claims: dict[str, Any], bucket: str, name: str) -> httpx.Response:
        row = self._visible(claims, bucket, name)
        if row is None:
            return _storage_error(404, "not_found", "Object not found", 400)
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
            return _storage_error(404, "not_found", "Object not found", 400)
        meta = row[2] or {}
        return httpx.Response(
            200,
            content=self._file(bucket, name).read_bytes(),
            headers={"content-type": meta.get("mimetype") or "application/octet-stream"},
        )

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
            return _storage_error(404, "not_found", "Object not found", 400)
        expires_in = int(json.loads(request.read())["expiresIn"])
        token = jwt.encode({"url": f"{bucket}/{name}", "exp": int(time.time()) + expires_in}, self.secret, "HS256")
        return httpx.Response(200, json={"signedURL": f"/object/sign/{bucket}/{name}?token={token}"})

    def _signed_download(self, request: httpx.Request, bucket: str, name: str) -> httpx.Response:
        try:
            claims = jwt.decode(request.url.params.get("token", ""), self.secret, algorithms=["HS256"])
        except jwt.PyJWTError as exc:
            return _storage_error(400, "InvalidJWT", f"{type(exc).__name__}", 400)
        if claims.get("url") != f"{bucket}/{name}":
            return _storage_error(400, "InvalidSignature", "The url does not match the signature", 400)
        path = self._file(bucket, name)
        if not path.exists():
            return _storage_error(404, "not_found", "Object not found", 400)
        return httpx.Response(200, content=path.read_bytes())


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
