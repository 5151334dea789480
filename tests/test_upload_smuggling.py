"""Uploads that cannot smuggle: a ZIP is what its manifest says, polyglots are refused, HTML
and SVG are active content (refused unless named, never stored as text), and a caller's
type never overrides the sniffed one. Every file here is built for real (zipfile, minimal
PDFs, PNGs, JPEGs, SVGs); every refusal leaves no row and no bytes, on every backend."""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

import persistence
from persistence.filestore import sniff_mime, storage_path_for
from persistence.uploads import DEFAULT_ALLOWED_TYPES, UploadRefusedError, UploadRules, download_type, settle_type

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    'Target="{part}"/></Relationships>'
)
MAIN_TYPES = {
    DOCX: ("word/document.xml", "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"),
    XLSX: ("xl/workbook.xml", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"),
    PPTX: (
        "ppt/presentation.xml",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml",
    ),
}


def office(kind: str = DOCX, *, main_part: bool = True, macros: bool = False) -> bytes:
    """A minimal Office Open XML package, as Word/Excel/PowerPoint write one."""
    part, content_type = MAIN_TYPES[kind]
    overrides = f'<Override PartName="/{part}" ContentType="{content_type}"/>'
    if macros:
        overrides += '<Override PartName="/word/vbaProject.bin" ContentType="application/vnd.ms-office.vbaProject"/>'
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>' + overrides + "</Types>",
        )
        z.writestr("_rels/.rels", RELS.format(part=part))
        if main_part:
            z.writestr(part, '<?xml version="1.0"?><document>hello</document>')
        if macros:
            z.writestr("word/vbaProject.bin", b"\xd0\xcf\x11\xe0 macros")
    return buf.getvalue()


def epub(*, stored: bool = True, first: bool = True) -> bytes:
    """A minimal EPUB: ``mimetype`` first and uncompressed, then the container."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        if not first:
            z.writestr("chapter.xhtml", "<html/>")
        z.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED if stored else None)
        z.writestr(
            "META-INF/container.xml",
            '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
            '<rootfiles><rootfile full-path="content.opf" media-type="application/oebps-package+xml"/></rootfiles>'
            "</container>",
        )
        z.writestr("content.opf", "<package/>")
    return buf.getvalue()


def plain_zip(name: str = "secret.exe", data: bytes = b"MZ\x90\x00 payload") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return buf.getvalue()


def pdf(text: str = "hello") -> bytes:
    """A minimal, valid one-page PDF with a correct xref table."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def png() -> bytes:
    """A real 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


def jpeg_with_comment(comment: bytes) -> bytes:
    """JPEG markers around a COM segment (what a GIFAR/JPEG-HTML polyglot hides in)."""
    com = b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return b"\xff\xd8" + app0 + com + b"\xff\xd9"


SVG_SCRIPT = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.cookie)</script></svg>'
ACTIVE = {
    "plain": SVG_SCRIPT,
    "comment": b"<!-- an innocent comment -->\n" + SVG_SCRIPT,
    "bom": b"\xef\xbb\xbf" + SVG_SCRIPT,
    "doctype": b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">'
    + SVG_SCRIPT,
    "all": b'\xef\xbb\xbf  <?xml version="1.0"?>\n<!-- c1 --><!DOCTYPE svg [<!ENTITY x "y">]>\n<!-- c2 -->'
    + SVG_SCRIPT,
    "utf16": ("<!-- hi -->" + SVG_SCRIPT.decode()).encode("utf-16"),
    "html": b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>",
    "html-fragment": b"<div><img src=x onerror=alert(1)></div>",
    "xhtml-in-xml": b'<?xml version="1.0"?><root>'
    + b"<item/>" * 2000
    + b'<h:script xmlns:h="http://www.w3.org/1999/xhtml">alert(1)</h:script></root>',
}


def assert_no_trace(store: persistence.Store, data: bytes, uploads: int = 0) -> None:
    """No row for the refused upload, and its bytes nowhere in the file store."""
    assert len(store.list_files(limit=1000)) == uploads
    assert int(store.storage_usage(())["uploads"].iloc[0]) == uploads
    files = store.files  # type: ignore[attr-defined]
    sha = hashlib.sha256(data).hexdigest()
    assert not files.exists(storage_path_for(None, sha))
    root = getattr(files, "root", None)
    if root is not None:  # the local file store: no temporary copy left behind either
        stored = [p for p in Path(root).rglob("*") if p.is_file()]
        assert len(stored) == len({f.storage_path for f in store.list_files(limit=1000)})


def refused(store: persistence.Store, data: bytes, filename: str, rule: str, **kwargs: object) -> str:
    with pytest.raises(UploadRefusedError) as info:
        store.put_file(data, filename=filename, **kwargs)  # type: ignore[arg-type]
    assert info.value.rule == rule, str(info.value)
    assert filename in str(info.value) and "nothing was stored" in str(info.value)
    return str(info.value)


# -- ZIP-based documents: the manifest, not the name ------------------------------------


def test_office_and_epub_are_known_by_their_manifest(store: persistence.Store) -> None:
    for kind in (DOCX, XLSX, PPTX):
        # The name does not matter: a real document under any name is what its manifest says.
        assert store.put_file(office(kind), filename="renamed.bin").mime_type == kind
    assert store.put_file(epub(), filename="book.zip").mime_type == "application/epub+zip"
    assert store.put_file(office(DOCX), filename="report.docx", mime_type=XLSX).mime_type == DOCX


def test_a_zip_renamed_docx_or_epub_is_refused(store: persistence.Store) -> None:
    cases = [
        (plain_zip(), "report.docx"),
        (plain_zip(), "book.epub"),
        (office(main_part=False), "hollow.docx"),  # declares word/document.xml, lacks it
        (epub(stored=False), "deflated.epub"),  # mimetype must be stored uncompressed
        (epub(first=False), "late.epub"),  # ... and come first
    ]
    for data, name in cases:
        message = refused(store, data, name, "allowed_types", mime_type=DOCX)
        assert "application/zip" in message and "ZIP manifest" in message
        assert_no_trace(store, data)
    data = office(macros=True)
    assert "macroenabled" in refused(store, data, "macros.docx", "allowed_types")
    assert_no_trace(store, data)
    # Plain archives are allowed only when the allow-list says so, and then as what they are.
    store.upload_rules = UploadRules(allowed_types=(*DEFAULT_ALLOWED_TYPES, "application/zip"))
    assert store.put_file(plain_zip(), filename="report.docx").mime_type == "application/zip"


# -- polyglots --------------------------------------------------------------------------


def polyglots() -> list[tuple[str, bytes, str]]:
    docx = office()
    stored_pdf = io.BytesIO()
    with zipfile.ZipFile(stored_pdf, "w") as z:  # its first entry, stored, starts with %PDF-
        z.writestr("a.pdf", pdf(), compress_type=zipfile.ZIP_STORED)
        z.writestr("[Content_Types].xml", "<Types/>")
    return [
        ("pdf+zip.pdf", pdf() + plain_zip(), "a ZIP archive hides"),
        ("zip-in-pdf.pdf", pdf().replace(b"%%EOF\n", b"") + plain_zip() + b"\n%%EOF\n", "a ZIP archive hides"),
        ("png+zip.png", png() + plain_zip(), "a ZIP archive hides"),
        ("notes.txt", b"just notes\n" * 1000 + plain_zip(), "a ZIP archive hides"),
        ("pdf+html.pdf", pdf() + b"<html><script>alert(1)</script></html>", "follows the PDF's last %%EOF"),
        ("photo.jpg", jpeg_with_comment(b"<script>alert(1)</script>"), "markup hides inside its image/jpeg"),
        ("pdf-in-png.png", png()[:33] + b"%PDF-1.4 " + png()[33:], "PDF header hides"),
        ("zip+pdf.docx", stored_pdf.getvalue(), "PDF header hides"),
        ("prefixed.docx", plain_zip() + docx, "unaccounted bytes stand before"),
        ("trailer.docx", docx + b"<html><script>alert(1)</script></html>", "follow its end record"),
    ]


def test_polyglots_are_refused(store: persistence.Store) -> None:
    for name, data, why in polyglots():
        message = refused(store, data, name, "polyglot")
        assert why in message, message
        assert_no_trace(store, data)
    # The honest versions of the same files are fine.
    for data, name, mime in ((pdf(), "ok.pdf", "application/pdf"), (png(), "ok.png", "image/png")):
        assert store.put_file(data, filename=name).mime_type == mime
    assert store.put_file(jpeg_with_comment(b"made with care"), filename="ok.jpg").mime_type == "image/jpeg"


def test_everything_allowed_stores_what_it_sniffs(store: persistence.Store) -> None:
    """``*/*`` (what copy uses for files a store accepted already) refuses nothing."""
    store.upload_rules = UploadRules(allowed_types=("*/*",))
    assert store.put_file(pdf() + plain_zip(), filename="p.pdf").mime_type == "application/pdf"
    assert store.put_file(SVG_SCRIPT, filename="s.txt").mime_type == "image/svg+xml"
    assert store.put_file(plain_zip(), filename="r.docx").mime_type == "application/zip"


# -- active content ---------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(ACTIVE))
def test_active_content_is_refused_by_default(store: persistence.Store, case: str) -> None:
    data = ACTIVE[case]
    message = refused(store, data, "notes.txt", "active_content", mime_type="text/plain")
    assert "PERSISTENCE_UPLOAD_ALLOWED_TYPES" in message
    assert_no_trace(store, data)
    # Wildcards never admit it, not even text/* plus image/*.
    store.upload_rules = UploadRules(allowed_types=("text/*", "image/*", "application/*"))
    refused(store, data, "notes.txt", "active_content")
    assert_no_trace(store, data)


def test_active_content_named_on_the_allow_list_is_stored_as_what_it_is(store: persistence.Store) -> None:
    store.upload_rules = UploadRules(allowed_types=("text/plain", "image/svg+xml"))
    f = store.put_file(ACTIVE["comment"], filename="drawing.txt", mime_type="text/plain")
    assert f.mime_type == "image/svg+xml"  # never text/plain
    assert download_type(f.mime_type) == "application/octet-stream"
    refused(store, ACTIVE["html"], "page.txt", "active_content")


def test_markup_that_runs_nothing_is_text(store: persistence.Store) -> None:
    readme = b'<p align="center"><img src="logo.png"></p>\n\n# Project\n\nPlain Markdown.\n'
    assert store.put_file(readme, filename="README.md").mime_type == "text/markdown"
    lint = b"<!-- markdownlint-disable -->\n# Title\n"
    assert store.put_file(lint, filename="notes.md").mime_type == "text/markdown"
    xml = b'<?xml version="1.0"?><config><item one="1"/></config>'
    assert store.put_file(xml, filename="c.xml").mime_type == "application/xml"
    # A plain-text name does not make markup text, nor does a script-free body make .html safe.
    refused(store, b"hello\n", "page.html", "active_content")


# -- the caller's type ------------------------------------------------------------------


def test_the_callers_type_only_refines_the_sniffed_one(store: persistence.Store) -> None:
    text = b"# Notes\n"
    assert store.put_file(text, filename="a.txt", mime_type="text/markdown").mime_type == "text/markdown"
    assert store.put_file(text, filename="b.txt", mime_type="Text/Plain; Charset=UTF-8").mime_type == (
        "text/plain; charset=UTF-8"
    )
    assert store.put_file(text, filename="c.txt", mime_type="application/json").mime_type == "application/json"
    # Another family, or active content, is ignored: the bytes decide.
    for claim in ("image/png", "application/pdf", "text/html", "image/svg+xml", DOCX):
        assert store.put_file(text, filename="d.txt", mime_type=claim).mime_type == "text/plain", claim
    assert store.put_file(png(), filename="p.png", mime_type="image/jpeg").mime_type == "image/png"
    assert store.put_file(pdf(), filename="p.pdf", mime_type="text/plain").mime_type == "application/pdf"


def test_settle_type() -> None:
    assert settle_type("text/plain", None) == "text/plain"
    assert settle_type("text/x-python", "text/plain") == "text/plain"
    assert settle_type("application/pdf", "application/pdf; name=x") == "application/pdf; name=x"
    assert settle_type("application/octet-stream", "application/x-parquet") == "application/x-parquet"
    assert settle_type("application/octet-stream", "text/html") == "application/octet-stream"
    assert settle_type("image/svg+xml", "text/plain") == "image/svg+xml"


def test_sniffing_beyond_our_signatures() -> None:
    assert sniff_mime(b"BMW makes cars\n", "cars.txt") == "text/plain"  # "BM" alone is no bitmap
    assert sniff_mime(b"II*\x00\x08\x00\x00\x00" + b"\x00" * 40, "scan") == "image/tiff"  # from puremagic
    assert sniff_mime(b"\xfd7zXZ\x00\x00" + b"\x00" * 20, "x") == "application/x-xz"
    assert sniff_mime(ACTIVE["utf16"], "x.txt") == "image/svg+xml"
    assert sniff_mime("plain words, 世界\n".encode("utf-16"), "x.txt") == "text/plain"
    # The library never decides text or our own types from a short match: bytes after a UTF-16
    # BOM are not "text/plain" (puremagic's .ini), nor is any "BM" a bitmap.
    noise = bytes(range(256)) * 8
    assert sniff_mime(b"\xff\xfe" + noise, "x.txt") == "application/octet-stream"
    assert sniff_mime(b"BM\x01\x02\x03\x04\x05\x06\x07\x08" + noise, "x.bmp") == "application/octet-stream"


def test_refused_types_name_what_they_are(store: persistence.Store) -> None:
    tiff = b"II*\x00\x08\x00\x00\x00" + b"\x00" * 40
    assert "image/tiff" in refused(store, tiff, "scan.txt", "allowed_types")
    assert_no_trace(store, tiff)


def test_the_app_never_renders_stored_files() -> None:
    """Files go out through st.download_button only (an attachment), active types as
    application/octet-stream; no page shows a stored file's bytes inline."""
    root = Path(__file__).resolve().parent.parent
    for page in ("views/files.py", "views/thread.py"):
        source = (root / page).read_text()
        assert "mime=download_type(f.mime_type)" in source and "mime=f.mime_type" not in source
    for path in [*root.glob("views/*.py"), *root.glob("ui/*.py"), root / "app.py"]:
        source = path.read_text()
        assert "open_file" not in source or "st.download_button" in source, path
        for inline in ("st.image(", "st.components", "components.html(", "st.pdf("):
            assert not ("open_file" in source and inline in source), (path, inline)
