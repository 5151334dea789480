"""The ``supabase`` backend: a Supabase project through the official ``supabase`` client.

Every table operation is ``client.rpc(fn, args)`` on the SQL API the migrations define (the
same functions the ``postgresql://`` backend calls with SELECT, see
:mod:`persistence.backends.postgres.store`), so each operation is one HTTP request and one transaction, and
row level security applies as on Postgres. File bytes go to a private Storage bucket
(``SUPABASE_STORAGE_BUCKET_FILES``, default ``mcp-files``) at ``{owner}/{sha[:2]}/{sha}``:
uploaded only when missing, downloaded through the API, shared through signed URLs.

The client's retries are off and every failure raises: a caller (or the outbox) decides what
to retry. The service role key is passed to the client only; it is never logged and never
part of ``store.url``. The schema must have been migrated (``supabase db push``, or
``python -m persistence migrate --url postgresql://…`` on the project's database).

A signed-in user's store: ``SupabaseStore(access_token=<the user's session token>)`` with
``SUPABASE_URL`` and ``SUPABASE_ANON_KEY`` (what an app's client holds after sign-in). Row
level security then confines every call to the user's own rows and Storage folder, and the
open skips what only the server may do: the migration history (``applied_migrations``) is the
server's, so the schema version is not checked (the server's own open checks it; a project
without the schema still fails at open, through a call a user may make), the package's prices
are not synced, and the bucket is not created. Files go to the user's folder
(``{user id}/…``), never ``shared/``. Prune, reprice, redact, import, doctor, price edits and
the migration list raise :class:`~persistence.errors.ServerOnlyError` before any request.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, BinaryIO

import httpx
from postgrest.exceptions import APIError
from storage3.exceptions import StorageApiError
from supabase.lib.client_options import SyncClientOptions

from supabase import Client, create_client

from ...env import load_env
from ...errors import NotFoundError, PersistenceError, SchemaVersionError, ServerOnlyError, StoreOpenError
from ...filestore import HeldBlob, Spooled, StoredBlob, sniff_mime, spool, storage_path_for
from ...models import ImportResult, ProviderFile, PruneResult, RedactResult, RepriceResult
from ...pricing import Price
from ...uploads import download_type
from .schema import OWN_PREFIX, migration_files
from .store import FunctionStore, jsonable, sql_error

__all__ = ["SupabaseStorage", "SupabaseStore", "key_claims", "make_client"]

DEFAULT_BUCKET = "mcp-files"
DEFAULT_TIMEOUT = 30.0
SIGNED_READ_SECONDS = 60  # how long the URL open_file reads through stays valid
DOWNLOAD_CHUNK = 1 << 20


def make_client(
    url: str,
    key: str,
    *,
    schema: str = "public",
    http_client: httpx.Client | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    access_token: str | None = None,
) -> tuple[Client, httpx.Client]:
    """The official client, with our own httpx client (its timeout; no retries) shared by the
    REST, Storage and Auth sub-clients. ``access_token``: a signed-in user's token, sent as
    ``Authorization`` with ``key`` (the anon key) as ``apikey``, as the client does after
    sign-in. Returns (client, the httpx client to close)."""
    http = http_client or httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=True)
    options = SyncClientOptions(
        headers={"Authorization": f"Bearer {access_token}"} if access_token else {},
        schema=schema,
        httpx_client=http,
        postgrest_client_retry=False,
        auto_refresh_token=False,
        persist_session=False,
    )
    try:
        client = create_client(url, key, options)
    except Exception as exc:  # SupabaseException for a malformed URL or key
        raise StoreOpenError(f"cannot create a Supabase client for {url}: {exc}") from None
    return client, http


def key_claims(token: str) -> dict[str, Any]:
    """The claims a Supabase key or user token carries (``role``, ``sub``), read without
    verifying the signature: the gateway verifies every request; this only tells the store
    which open-time steps it may take. The new-style keys are not JWTs: ``sb_secret_…`` acts
    as service_role, ``sb_publishable_…`` as anon. {} when the token says nothing readable."""
    if token.startswith("sb_secret_"):
        return {"role": "service_role"}
    if token.startswith("sb_publishable_"):
        return {"role": "anon"}
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


class _ResponseStream(io.RawIOBase):
    """A streamed httpx response as a readable raw file (BufferedReader wraps it)."""

    def __init__(self, response: httpx.Response, storage_path: str) -> None:
        self._response = response
        self._chunks = response.iter_bytes(DOWNLOAD_CHUNK)
        self._pending = b""
        self._path = storage_path

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._pending:
            try:
                self._pending = next(self._chunks, b"")
            except httpx.HTTPError as exc:
                raise PersistenceError(f"downloading {self._path} from Supabase Storage failed: {exc}") from None
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._response.close()
        super().close()


def _storage_error(exc: StorageApiError, what: str) -> PersistenceError:
    status = str(getattr(exc, "status", ""))
    message = getattr(exc, "message", str(exc))
    if status == "404":
        return NotFoundError(f"{what}: {message}")
    return PersistenceError(f"{what}: Supabase Storage said {status} {getattr(exc, 'code', '')}: {message}")


class SupabaseStorage:
    """File bytes in a private Supabase Storage bucket, content-addressed like LocalFileStore."""

    def __init__(
        self, client: Client, bucket: str = DEFAULT_BUCKET, *, http: httpx.Client | None = None, server: bool = True
    ) -> None:
        """``server``: False for a signed-in user's client, which may neither see nor create
        buckets (Storage's policies on storage.buckets): the bucket is then not checked, and
        an upload into a missing one says who must create it."""
        self.client = client
        self.bucket = bucket
        self._http = http  # closed with the store when we created it
        self._server = server
        self._bucket_checked = not server

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SupabaseStorage:
        client, http = make_client(env["SUPABASE_URL"], env["SUPABASE_SERVICE_ROLE_KEY"])
        return cls(client, env.get("SUPABASE_STORAGE_BUCKET_FILES") or DEFAULT_BUCKET, http=http)

    def describe(self) -> str:
        return f"Supabase Storage bucket {self.bucket!r}"

    def _api(self) -> Any:
        return self.client.storage.from_(self.bucket)

    def _ensure_bucket(self) -> None:
        """Create the bucket (private) when it is missing: the migration makes ``mcp-files``,
        a configured other name may not exist yet."""
        if self._bucket_checked:
            return
        try:
            self.client.storage.get_bucket(self.bucket)
        except StorageApiError as exc:
            if str(getattr(exc, "status", "")) not in ("400", "404"):
                raise _storage_error(exc, f"bucket {self.bucket}") from None
            try:
                self.client.storage.create_bucket(self.bucket, options={"public": False})
            except StorageApiError as again:
                if "exist" not in str(getattr(again, "message", again)).lower():
                    raise _storage_error(again, f"creating bucket {self.bucket}") from None
        except httpx.HTTPError as exc:
            raise PersistenceError(f"cannot reach Supabase Storage: {exc}") from None
        self._bucket_checked = True

    def put(self, stream: BinaryIO, owner: str | None) -> StoredBlob:
        """Hash the bytes into a temporary file (1 MiB at a time), then upload them unless the
        owner already stores the same bytes."""
        with spool(stream) as tmp:
            return self.place(tmp, storage_path_for(owner, tmp.sha256))

    def place(self, spooled: Spooled, storage_path: str) -> StoredBlob:
        """Upload the bytes of a spooled file to ``storage_path`` unless they are there; the
        spooled file stays, so the caller can place it again (see FunctionStore._settle)."""
        sha, size, head, path = spooled.sha256, spooled.size, spooled.head, storage_path
        if self.exists(path):
            return StoredBlob(sha, size, path, head, created=False)
        self._ensure_bucket()
        try:
            with open(spooled.path, "rb") as fh:
                self._api().upload(path, fh, {"content-type": download_type(sniff_mime(head)), "upsert": "false"})
        except StorageApiError as exc:
            if str(getattr(exc, "status", "")) == "409" or "duplicate" in str(getattr(exc, "code", "")).lower():
                return StoredBlob(sha, size, path, head, created=False)  # a concurrent upload won
            if not self._server and "bucket not found" in str(getattr(exc, "message", exc)).lower():
                raise PersistenceError(
                    f"uploading {path}: the Storage bucket {self.bucket!r} does not exist, and a signed-in user "
                    "may not create it: open the store once with SUPABASE_SERVICE_ROLE_KEY (it creates the bucket), "
                    "or create it in the Supabase dashboard"
                ) from None
            raise _storage_error(exc, f"uploading {path}") from None
        except httpx.HTTPError as exc:
            raise PersistenceError(f"uploading {path} to Supabase Storage failed: {exc}") from None
        return StoredBlob(sha, size, path, head, created=True)

    def exists(self, storage_path: str) -> bool:
        try:
            return bool(self._api().exists(storage_path))
        except StorageApiError as exc:
            raise _storage_error(exc, f"checking {storage_path}") from None
        except httpx.HTTPError as exc:
            raise PersistenceError(f"cannot reach Supabase Storage: {exc}") from None

    def open(self, storage_path: str) -> BinaryIO:
        """The object's bytes as a stream: a short-lived signed URL read in chunks as the
        caller reads (memory stays flat whatever the size); close it to end the download."""
        what = f"the bytes of {storage_path} in bucket {self.bucket}"
        try:
            url = self._api().create_signed_url(storage_path, SIGNED_READ_SECONDS)["signedURL"]
            http: httpx.Client = self.client.storage.session
            response = http.send(http.build_request("GET", url), stream=True)
        except StorageApiError as exc:
            raise _storage_error(exc, what) from None
        except httpx.HTTPError as exc:
            raise PersistenceError(f"downloading {storage_path} from Supabase Storage failed: {exc}") from None
        if response.status_code != 200:
            body = response.read().decode(errors="replace")[:300]
            response.close()
            error = NotFoundError if response.status_code == 404 or '"404"' in body else PersistenceError
            raise error(f"{what}: Supabase Storage said {response.status_code}: {body}")
        return io.BufferedReader(_ResponseStream(response, storage_path), buffer_size=DOWNLOAD_CHUNK)

    def delete(self, storage_path: str) -> bool:
        try:
            removed = self._api().remove([storage_path])
        except StorageApiError as exc:
            raise _storage_error(exc, f"deleting {storage_path}") from None
        except httpx.HTTPError as exc:
            raise PersistenceError(f"deleting {storage_path} from Supabase Storage failed: {exc}") from None
        return bool(removed)

    def signed_url(self, storage_path: str, expires_in: int) -> str:
        try:
            signed = self._api().create_signed_url(storage_path, expires_in)
        except StorageApiError as exc:
            raise _storage_error(exc, f"signing {storage_path}") from None
        except httpx.HTTPError as exc:
            raise PersistenceError(f"cannot reach Supabase Storage: {exc}") from None
        url: str = signed["signedURL"]
        return url

    def close(self) -> None:
        if self._http is not None:
            self._http.close()


class SupabaseStore(FunctionStore):
    backend = "supabase"
    MISSING_BYTES_CHECK_LIMIT = 200  # each check is a request

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        http_client: httpx.Client | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        access_token: str | None = None,
    ) -> None:
        """``http_client``: the httpx client every request goes through (tests plug a transport
        in here); by default one with ``timeout`` seconds and no retries. ``access_token``: a
        signed-in user's session token; the store then acts as that user (with
        ``SUPABASE_ANON_KEY`` as the API key) and row level security confines it."""
        super().__init__()
        e = load_env(env)
        url = e.get("SUPABASE_URL") or ""
        if access_token:
            key = e.get("SUPABASE_ANON_KEY") or ""
            if not url or not key:
                raise StoreOpenError("a signed-in user's supabase store needs SUPABASE_URL and SUPABASE_ANON_KEY")
        else:
            key = e.get("SUPABASE_SERVICE_ROLE_KEY") or ""
            if not url or not key:
                raise StoreOpenError("the supabase backend needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY")
        claims = key_claims(access_token or key)
        # A key that says nothing readable is taken for the service role's, as before this
        # check existed: its requests are refused by the gateway if it is not.
        self.role: str = str(claims.get("role") or "service_role")
        if self.role == "anon":
            raise StoreOpenError(
                "the supabase backend was given the anon key without a signed-in user: anon may read and write "
                "nothing; pass the user's access_token, or use SUPABASE_SERVICE_ROLE_KEY on a server"
            )
        # The signed-in user: their files go to their own Storage folder (the only one its
        # policies let them write), their rows are made out to them by the SQL functions.
        self.user_id: str | None = str(claims["sub"]) if self.role != "service_role" and claims.get("sub") else None
        self.url = f"supabase:{url.rstrip('/')}"  # never the key
        schema = e.get("SUPABASE_DB_SCHEMA") or "public"
        if schema != "public":
            raise StoreOpenError(
                f"SUPABASE_DB_SCHEMA={schema!r} is not supported: the migrations create the persistence tables "
                "and functions in public (the schema PostgREST exposes by default and the policies, grants and "
                "storage rules name), so the package only works with public; unset SUPABASE_DB_SCHEMA"
            )
        self.client, http = make_client(
            url, key, schema=schema, http_client=http_client, timeout=timeout, access_token=access_token
        )
        self._own_http = http if http_client is None else None
        self.bucket_name = e.get("SUPABASE_STORAGE_BUCKET_FILES") or DEFAULT_BUCKET
        self.files = SupabaseStorage(self.client, self.bucket_name, server=self.is_server)
        try:
            if self.is_server:
                self._check_schema()
                self._sync_package_prices()
            else:
                self._check_schema_as_user()
        except BaseException:
            self.close()
            raise

    @property
    def is_server(self) -> bool:
        """True with the service role key (every row, maintenance); False for a signed-in user."""
        return self.role == "service_role"

    def _check_schema_as_user(self) -> None:
        """A user may not read the migration history, so the version is trusted (the server's
        open checks it); a call every user may make shows that the schema is there at all."""
        try:
            self._call("list_model_prices", {})
        except StoreOpenError as exc:
            raise StoreOpenError(
                f"{self.url} has no persistence schema yet (a signed-in user cannot check its version): {exc}"
            ) from None

    def _server_only(self, what: str) -> None:
        if not self.is_server:
            raise ServerOnlyError(
                f"{what} is for the server only (it reads or changes every user's rows): this store was opened as "
                f"a signed-in user ({self.role}); open it with SUPABASE_SERVICE_ROLE_KEY on the server"
            )

    # The server's operations, refused to a user before any request (their SQL functions are
    # the service role's only, so the database would refuse them too, less clearly).

    def migrations(self) -> list[tuple[str, datetime]]:
        self._server_only("the migration history")
        return super().migrations()

    def add_prices(self, prices: Iterable[Price]) -> int:
        self._server_only("changing the price table")
        return super().add_prices(prices)

    def reprice(self, **kwargs: Any) -> RepriceResult:
        self._server_only("reprice")
        return super().reprice(**kwargs)

    def import_records(self, records: Iterable[dict[str, Any]], *, batch_size: int = 200) -> ImportResult:
        self._server_only("import")
        return super().import_records(records, batch_size=batch_size)

    def prune(self, **kwargs: Any) -> PruneResult:
        self._server_only("prune")
        return super().prune(**kwargs)

    def redact(self, **kwargs: Any) -> RedactResult:
        self._server_only("redact")
        return super().redact(**kwargs)

    def doctor(self, **kwargs: Any) -> dict[str, Any]:
        self._server_only("doctor")
        return super().doctor(**kwargs)

    def _find_provider_file(
        self, file_hash: str, provider: str, *, purpose: str | None, user_id: str | None, at: datetime
    ) -> ProviderFile | None:
        # A user's own upload unless they name an owner (find_provider_file matches the owner
        # exactly, and a user's files are theirs, never the owner-less server's).
        return super()._find_provider_file(file_hash, provider, purpose=purpose, user_id=user_id or self.user_id, at=at)

    def _put_bytes(self, stream: BinaryIO, owner: str | None) -> HeldBlob:
        # A user's bytes without a named owner are theirs: put_file_metadata makes the row out
        # to auth.uid(), and Storage lets them write only under their own id, never shared/.
        return super()._put_bytes(stream, owner or self.user_id)

    def _check_schema(self) -> None:
        try:
            applied = {v: n for v, n in self._call("applied_migrations", {})}
        except StoreOpenError as exc:
            raise StoreOpenError(f"{self.url} has no persistence schema yet: {exc}") from None
        known = {m.version: m for m in migration_files()}
        newer = [
            f"{v}_{n}" for v, n in applied.items() if v not in known and v > max(known) and n.startswith(OWN_PREFIX)
        ]
        if newer:
            raise SchemaVersionError(
                f"{self.url} was migrated by a newer version of persistence ({', '.join(newer)}); upgrade the package"
            )
        pending = [m.label for v, m in known.items() if v not in applied]
        if pending:
            raise StoreOpenError(
                f"{self.url} needs migrating ({', '.join(pending)}): run `supabase db push` "
                "or `python -m persistence migrate --url postgresql://…` with the project's database URL"
            )

    def _call(self, fn: str, args: dict[str, Any]) -> Any:
        try:
            return self.client.rpc(fn, {k: jsonable(v) for k, v in args.items()}).execute().data
        except APIError as exc:
            raise sql_error(exc.code, exc.message or str(exc), fn) from None
        except httpx.HTTPError as exc:
            raise PersistenceError(f"{fn}: cannot reach {self.url}: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        self._stop_background()
        files = getattr(self, "files", None)
        if files is not None:
            files.close()
        own = getattr(self, "_own_http", None)
        if own is not None:
            own.close()
