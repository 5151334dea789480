"""The demo's uploads: files of realistic types and sizes, made locally and deterministically.

A thread's attachments in the EX-AI server are source files, configs, logs, CSV exports, PDF
reports and screenshots or photos, from a few hundred bytes to a few MB. Each file here is a
valid file of its type whose bulk is cheap to make, so ``persistence demo`` stays fast:

* text (code, SQL, YAML, Markdown in English and Chinese, logs, CSV): lines from templates
  filled in from a seeded :class:`random.Random`;
* PDF: pages of log-like text in Courier (one uncompressed content stream per page), with a
  correct cross-reference table;
* PNG: an RGB picture (a gradient with bands, a screenshot's blocks) stored with uncompressed
  deflate blocks, so its size is its pixel count's, made row by row with ``bytes.translate``;
* JPEG: a baseline greyscale picture encoded with DC coefficients only (smooth blocks), padded
  with APP15 segments (ignored by readers, as a camera's maker notes are) to a photo's size.

The content depends only on (seed, file name, variant), so a demo writes the same bytes for the
same seed (file ids follow from the bytes) and a variant uploaded twice is deduplicated. Every
file passes the package's upload rules (:mod:`persistence.uploads`, which sniff types from the
bytes and refuse polyglots): no markup, no ZIP or PDF signature where it does not belong.
"""

from __future__ import annotations

import itertools
import math
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

__all__ = ["DEMO_FILES", "DemoFile", "demo_file_bytes"]


@dataclass(frozen=True, slots=True)
class DemoFile:
    name: str
    mime_type: str
    kind: str  # which maker below
    min_size: int  # bytes; the size is drawn log-uniformly between the two
    max_size: int
    weight: float  # how often threads attach it


KB = 1024
MB = 1024 * KB
DEMO_FILES: tuple[DemoFile, ...] = (
    DemoFile("app.py", "text/x-python", "python", 2 * KB, 14 * KB, 3),
    DemoFile("schema.sql", "application/sql", "sql", 1 * KB, 9 * KB, 2),
    DemoFile("README.md", "text/markdown", "markdown", 2 * KB, 8 * KB, 2),
    DemoFile("config.yaml", "application/yaml", "yaml", 300, 3 * KB, 2),
    DemoFile("需求说明.md", "text/markdown", "markdown_zh", 1 * KB, 6 * KB, 1),
    DemoFile("metrics.csv", "text/csv", "csv", 20 * KB, 600 * KB, 2),
    DemoFile("trace.log", "text/plain", "log", 40 * KB, 3 * MB, 3),
    DemoFile("incident-report.pdf", "application/pdf", "pdf", 30 * KB, 400 * KB, 2),
    DemoFile("design-review.pdf", "application/pdf", "pdf", 150 * KB, 2500 * KB, 1),
    DemoFile("screenshot.png", "image/png", "png", 120 * KB, 2500 * KB, 3),
    DemoFile("architecture.png", "image/png", "png", 50 * KB, 700 * KB, 1),
    DemoFile("whiteboard.jpg", "image/jpeg", "jpeg", 300 * KB, 4 * MB, 1),
)
_BY_NAME = {f.name: f for f in DEMO_FILES}


def demo_file_bytes(seed: int, name: str, variant: int) -> bytes:
    """The bytes of demo file ``name`` (one of :data:`DEMO_FILES`) in ``variant``."""
    spec = _BY_NAME[name]
    rng = random.Random(f"persistence-demo-file/{seed}/{name}/{variant}")
    size = int(math.exp(rng.uniform(math.log(spec.min_size), math.log(spec.max_size))))
    return _MAKERS[spec.kind](rng, size, variant)


# -- text --------------------------------------------------------------------------------------

_SERVICES = ("orders", "billing", "ingest", "search", "auth", "gateway", "scheduler")
_PATHS = ("/api/orders", "/api/orders/{id}", "/api/invoices", "/v1/search", "/v1/upload", "/healthz", "/login")
_LOG_MESSAGES = (
    "request completed",
    "retrying request after timeout",
    "connection pool exhausted, waiting for a free connection",
    "cache miss, loading from database",
    "slow query detected",
    "upstream returned an error",
    "token refreshed",
    "job enqueued",
    "job finished",
    "websocket client reconnected",
)


def _text_to_size(lines: Callable[[], str], size: int) -> bytes:
    out: list[str] = []
    total = 0
    while total < size:
        line = lines()
        out.append(line)
        total += len(line.encode("utf-8")) + 1
    return ("\n".join(out) + "\n").encode("utf-8")


_2D = tuple(f"{i:02d}" for i in range(100))
_3D = tuple(f"{i:03d}" for i in range(1000))


def _timed_lines(rng: random.Random, size: int, tails: list[str], stamp: Callable[[int], str]) -> bytes:
    """Lines of ``stamp(t) + tail`` up to ``size`` bytes, t growing by a random step each line
    and the tails drawn from a pool: a large file from a few hundred random draws (a
    ``randint`` per field and line made a 3 MB log cost a second)."""
    mean = sum(len(t) for t in tails) / len(tails) + len(stamp(0)) + 1
    n = max(1, int(size / mean) + 1)
    steps = rng.choices(range(1, 2500), k=n)
    t = rng.randrange(86_400_000)
    lines = []
    for step, tail in zip(steps, rng.choices(tails, k=n), strict=True):
        t += step
        lines.append(stamp(t) + tail)
    return ("\n".join(lines) + "\n").encode("utf-8")


def _log(rng: random.Random, size: int, variant: int) -> bytes:
    levels = ("INFO ", "INFO ", "INFO ", "INFO ", "DEBUG", "WARN ", "ERROR")
    statuses = (200, 200, 200, 201, 204, 404, 429, 500, 503)
    tails = [
        f" {rng.choice(levels)} [{rng.choice(_SERVICES)}-{rng.randint(1, 8)}] {rng.choice(_LOG_MESSAGES)} "
        f"request_id={rng.getrandbits(48):012x} path={rng.choice(_PATHS)} status={rng.choice(statuses)} "
        f"duration_ms={rng.randint(2, 4000)}"
        for _ in range(256)
    ]
    day = f"2026-01-{10 + variant:02d}T"

    def stamp(ms: int) -> str:
        s, milli = divmod(ms, 1000)
        m, sec = divmod(s, 60)
        h, mi = divmod(m, 60)
        return f"{day}{_2D[h % 24]}:{_2D[mi]}:{_2D[sec]}.{_3D[milli]}Z"

    return _timed_lines(rng, size, tails, stamp)


def _csv(rng: random.Random, size: int, variant: int) -> bytes:
    header = b"timestamp,service,requests,errors,p50_ms,p95_ms,p99_ms,cpu_pct,mem_mb\n"
    tails = []
    for _ in range(256):
        requests, p50 = rng.randint(200, 5000), rng.randint(5, 80)
        tails.append(
            f",{rng.choice(_SERVICES)},{requests},{rng.randint(0, requests // 50)},{p50},{p50 * rng.randint(2, 5)},"
            f"{p50 * rng.randint(5, 20)},{rng.uniform(3, 97):.1f},{rng.randint(180, 4096)}"
        )

    def stamp(ms: int) -> str:  # a row a second or so
        m, sec = divmod(ms // 1000, 60)
        h, mi = divmod(m, 60)
        d, hour = divmod(h, 24)
        return f"2026-01-{_2D[1 + d % 28]}T{_2D[hour]}:{_2D[mi]}:{_2D[sec]}Z"

    return header + _timed_lines(rng, size - len(header), tails, stamp)


def _python(rng: random.Random, size: int, variant: int) -> bytes:
    head = (
        f'"""The {rng.choice(_SERVICES)} service (variant {variant})."""\n\n'
        "from __future__ import annotations\n\nimport logging\nimport os\nimport time\n\n"
        "log = logging.getLogger(__name__)\n"
        "DATABASE_URL = os.environ['DATABASE_URL']\n"
        f"POOL_SIZE = {rng.randint(5, 50)}\n\n"
    )
    n = [0]

    def block() -> str:
        n[0] += 1
        name = f"{rng.choice(('fetch', 'load', 'sync', 'retry', 'handle', 'render'))}_{rng.choice(_SERVICES)}_{n[0]}"
        return (
            f"\ndef {name}(session, item_id, *, retries={rng.randint(1, 5)}):\n"
            f'    """{rng.choice(_LOG_MESSAGES).capitalize()}."""\n'
            "    for attempt in range(retries):\n"
            "        try:\n"
            f"            return session.get(f'{rng.choice(_PATHS)}?id={{item_id}}', timeout={rng.randint(1, 30)})\n"
            "        except TimeoutError:\n"
            f"            log.warning('attempt %d of %d timed out', attempt + 1, retries)\n"
            "            time.sleep(2 ** attempt)\n"
            "    raise RuntimeError(f'gave up on {item_id}')\n"
        )

    return head.encode() + _text_to_size(block, size - len(head))


def _sql(rng: random.Random, size: int, variant: int) -> bytes:
    n = [0]

    def table() -> str:
        n[0] += 1
        name = f"{rng.choice(_SERVICES)}_{rng.choice(('events', 'items', 'jobs', 'audit', 'totals'))}_{n[0]}"
        return (
            f"create table {name} (\n    id bigint primary key,\n    customer_id bigint not null,\n"
            f"    amount numeric({rng.randint(10, 20)}, 4),\n    status text not null default 'new',\n"
            f"    created_at timestamptz not null default now()\n);\n"
            f"create index {name}_customer on {name} (customer_id, created_at desc);\n"
        )

    return _text_to_size(table, size)


def _yaml(rng: random.Random, size: int, variant: int) -> bytes:
    def section() -> str:
        return (
            f"{rng.choice(_SERVICES)}:\n  pool:\n    size: {rng.randint(5, 50)}\n    timeout: {rng.randint(5, 60)}\n"
            f"  retries: {rng.randint(0, 5)}\n  url: https://{rng.choice(_SERVICES)}.internal:{rng.randint(8000, 9000)}"
        )

    return _text_to_size(section, size)


def _markdown(rng: random.Random, size: int, variant: int) -> bytes:
    def paragraph() -> str:
        return (
            f"## {rng.choice(_SERVICES).capitalize()}\n\n"
            f"The {rng.choice(_SERVICES)} service {rng.choice(_LOG_MESSAGES)} under load; run `make dev` and "
            f"open {rng.choice(_PATHS)} to reproduce. See the runbook, step {rng.randint(1, 9)}.\n"
        )

    return f"# Service notes (v{variant})\n\n".encode() + _text_to_size(paragraph, size)


def _markdown_zh(rng: random.Random, size: int, variant: int) -> bytes:
    needs = (
        "上传接口需要支持断点续传。",
        "导出需要支持中文列名。",
        "限流器需要按会话计数。",
        "任务队列关闭时不能丢任务。",
    )

    def item() -> str:
        return f"- 第{rng.randint(1, 99)}条：{rng.choice(needs)}负责人：{rng.choice(('张三', '李四', '王五'))}。"

    return f"# 需求说明（第{variant}版）\n\n".encode() + _text_to_size(item, size)


# -- PDF ---------------------------------------------------------------------------------------


def _pdf(rng: random.Random, size: int, variant: int) -> bytes:
    """Pages of log lines in Courier 7 pt, 80 lines a page, until the file has about ``size`` bytes."""
    # Log lines hold no parentheses or backslashes: as PDF strings they need no escapes.
    log_lines = _log(rng, size, variant).decode("ascii").splitlines()
    per_page = 80
    pages = [log_lines[i : i + per_page] for i in range(0, len(log_lines), per_page)] or [[]]
    objects: list[bytes] = []  # object n is objects[n - 1]
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier >>")
    for i, lines in enumerate(pages):
        text = "".join(f"({line[:150]}) '\n" for line in lines)
        stream = f"BT /F1 7 Tf 9 TL 24 780 Td\n{text}ET\n".encode("ascii")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


# -- PNG ---------------------------------------------------------------------------------------


@cache
def _shift_tables() -> tuple[bytes, ...]:
    """bytes.translate tables adding k (mod 256) to every byte, for k in 0..255."""
    return tuple(bytes((i + k) % 256 for i in range(256)) for k in range(256))


@cache
def _dim_table() -> bytes:
    return bytes(i * 3 // 4 for i in range(256))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(rng: random.Random, size: int, variant: int) -> bytes:
    """An RGB picture whose stored size is about ``size``, in a screen's proportions: a pale
    window with a darker sidebar and banded rows over a faint gradient, deflated without
    compression (stored blocks) into one IDAT chunk."""
    aspect = rng.choice((16 / 10, 16 / 9, 4 / 3, 3 / 2))
    width = max(64, int(math.sqrt(size / 3 * aspect)))
    height = max(16, size // (3 * width + 1))
    tint = [rng.randint(150, 190) for _ in range(3)]  # + 40 across + 24 down: never past 255
    base = bytes(v for x in range(width) for v in (c + x * 40 // width for c in tint))
    shifts, dim = _shift_tables(), _dim_table()
    band = rng.randint(24, 64)
    sidebar = 3 * (width // rng.randint(4, 6))
    rows = []
    for y in range(height):
        row = base.translate(shifts[y * 24 // height])
        if (y // band) % 4 == 0:  # a toolbar / list row band
            row = row.translate(dim)
        row = row[:sidebar].translate(dim) + row[sidebar:]
        rows.append(b"\x00" + row)  # filter type 0 (none)
    raw = b"".join(rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"tEXt", b"Software\x00persistence demo")
        + _png_chunk(b"IDAT", zlib.compress(raw, 0))
        + _png_chunk(b"IEND", b"")
    )


# -- JPEG --------------------------------------------------------------------------------------

# The standard luminance DC table (ITU T.81 Annex K.3): code lengths, then the categories.
_DC_BITS = (0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0)
_DC_VALUES = tuple(range(12))
# The AC table has one code, '0': end of block (every AC coefficient is zero).
_AC_BITS = (1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
_AC_VALUES = (0x00,)


@cache
def _block_bits() -> dict[int, str]:
    """A block's bits by the difference of its DC value from the previous block's: the DC
    category's code, the difference in that many bits, then end of block."""
    codes, code, k = {}, 0, 0
    for length, count in enumerate(_DC_BITS, start=1):
        for _ in range(count):
            codes[_DC_VALUES[k]] = format(code, f"0{length}b")
            code += 1
            k += 1
        code <<= 1
    table = {}
    for diff in range(-255, 256):
        category = abs(diff).bit_length()
        extra = diff if diff >= 0 else diff + (1 << category) - 1
        table[diff] = codes[category] + (format(extra, f"0{category}b") if category else "") + "0"
    return table


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", 0xFF00 | marker, len(payload) + 2) + payload


# Seeded noise without the bytes another format's signature or markup starts with ('<' of a
# tag, 'P' of a ZIP record, '%' of a PDF header), so no upload rule can mistake it for one.
_SAFE_NOISE = bytes.maketrans(b"<P%", b"=Q&")
_NOISE_CHUNK = 65_000  # an APPn segment holds at most 65,533 bytes


def _jpeg(rng: random.Random, size: int, variant: int) -> bytes:
    """A baseline greyscale JPEG of a lit whiteboard with a grid drawn on it: smooth 8x8
    blocks (DC coefficients only), then APP15 segments of seeded noise (readers skip unknown
    APPn segments, as they skip a camera's maker notes) up to ``size``.

    The picture is separable (a column profile plus a row profile), so every row after the
    first differs from the one before by a constant: each row's bits but its first block's
    are the same, and the scan costs a join rather than a loop over every block."""
    width, height = rng.choice(((1600, 1200), (2048, 1536), (1280, 960)))
    bw, bh = width // 8, height // 8
    # Quantised DC values (quantiser 8: a block's mean minus 128): bright in the middle,
    # darker to the edges, with dark grid lines every few blocks.
    cx, cy, grid = rng.uniform(0.3, 0.7) * bw, rng.uniform(0.3, 0.7) * bh, rng.randint(12, 24)
    columns = [int(40 - 50 * abs(x - cx) / bw) - (45 if x % grid == 0 else 0) for x in range(bw)]
    rows = [int(40 - 50 * abs(y - cy) / bh) - (45 if y % grid == 0 else 0) for y in range(bh)]
    bits = _block_bits()
    rest_of_row = "".join(bits[b - a] for a, b in itertools.pairwise(columns))
    chunks = []
    previous = 0
    for r in rows:
        first = columns[0] + r
        chunks.append(bits[first - previous])
        chunks.append(rest_of_row)
        previous = columns[-1] + r
    stream = "".join(chunks)
    stream += "1" * (-len(stream) % 8)  # pad the last byte with 1 bits
    scan_data = int(stream, 2).to_bytes(len(stream) // 8, "big").replace(b"\xff", b"\xff\x00")  # byte stuffing
    head = b"\xff\xd8" + _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x48\x00\x48\x00\x00")
    tables = (
        _segment(0xDB, b"\x00" + bytes([8] * 64))
        + _segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
        + _segment(0xC4, b"\x00" + bytes(_DC_BITS) + bytes(_DC_VALUES))
        + _segment(0xC4, b"\x10" + bytes(_AC_BITS) + bytes(_AC_VALUES))
    )
    scan = _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + scan_data + b"\xff\xd9"
    room = size - len(head) - len(tables) - len(scan)
    noise = rng.randbytes(_NOISE_CHUNK).translate(_SAFE_NOISE)
    shifts = _shift_tables()
    padding = []
    for i in range(max(0, room) // (_NOISE_CHUNK + 4)):
        # One seeded chunk, each copy shifted differently: a photo's worth of bytes, cheaply.
        padding.append(_segment(0xEF, noise.translate(shifts[i % 256]).translate(_SAFE_NOISE)))
    return head + b"".join(padding) + tables + scan


_MAKERS: dict[str, Callable[[random.Random, int, int], bytes]] = {
    "python": _python,
    "sql": _sql,
    "yaml": _yaml,
    "markdown": _markdown,
    "markdown_zh": _markdown_zh,
    "csv": _csv,
    "log": _log,
    "pdf": _pdf,
    "png": _png,
    "jpeg": _jpeg,
}
