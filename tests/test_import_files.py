"""import-files: a folder of existing files comes in once, re-runs double nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import persistence
from persistence.cli import main
from persistence.cutover import import_folder
from persistence.uploads import UploadRules

ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 64


def make_folder(root: Path) -> Path:
    files = {
        "README.md": b"# old files\n",
        "src/app.py": b"print('hello')\n",
        "src/copy-of-app.py": b"print('hello')\n",  # same bytes: stored once
        "docs/数据说明.md": "上传接口需要支持断点续传。\n".encode(),
        "docs/café/notes.txt": b"unicode in the path\n",
        "docs/empty.txt": b"",
        "big/huge.log": b"x" * 5000,  # over the limit set below
        "bin/tool": ELF,  # not an allowed type
        "deep/a/b/c/d/report.pdf": b"%PDF-1.7 report\n",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    os.symlink(root / "README.md", root / "link-to-readme.md")  # links are not followed
    return root


def test_a_folder_comes_in_once(store: persistence.Store, tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "old-files")
    store.upload_rules = UploadRules(max_bytes=1000)
    first = import_folder(store, folder, tags=("legacy",), session_id="import-1")
    assert (first.new, first.deduplicated, first.skipped, first.rejected) == (6, 1, 0, 2)
    assert first.new_bytes == sum(
        len(b)
        for b in (
            b"# old files\n",
            b"print('hello')\n",
            "上传接口需要支持断点续传。\n".encode(),
            b"unicode in the path\n",
            b"",
            b"%PDF-1.7 report\n",
        )
    )
    assert sorted(rel for rel, _ in first.refusals) == ["big/huge.log", "bin/tool"]
    assert any("max_bytes" in why for _, why in first.refusals) and any(
        "allowed_types" in why for _, why in first.refusals
    )
    uploads = {f.metadata["source_path"]: f for f in store.list_files(limit=100)}
    assert set(uploads) == {
        "README.md",
        "src/app.py",
        "src/copy-of-app.py",
        "docs/数据说明.md",
        "docs/café/notes.txt",
        "docs/empty.txt",
        "deep/a/b/c/d/report.pdf",
    }
    assert (
        uploads["docs/数据说明.md"].filename == "数据说明.md"
        and uploads["docs/数据说明.md"].mime_type == "text/markdown"
    )
    assert uploads["deep/a/b/c/d/report.pdf"].mime_type == "application/pdf"
    assert uploads["src/app.py"].id == uploads["src/copy-of-app.py"].id  # one stored object
    assert uploads["README.md"].tags == ("legacy",) and uploads["README.md"].session_id == "import-1"
    before = store.storage_usage(())

    again = import_folder(store, folder, tags=("legacy",), session_id="import-1")
    assert (again.new, again.deduplicated, again.skipped, again.rejected) == (0, 0, 7, 2)
    assert store.storage_usage(()).equals(before)  # nothing doubled

    (folder / "src/app.py").write_bytes(b"print('hello, changed')\n")  # an edited file comes in again
    third = import_folder(store, folder, tags=("legacy",), session_id="import-1")
    assert (third.new, third.skipped) == (1, 6)


def test_an_interrupted_import_resumes(store: persistence.Store, tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "old-files")
    seen = 0

    def stop_after_three(_: int) -> None:
        nonlocal seen
        seen += 1
        if seen == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_folder(store, folder, progress=stop_after_three)
    rest = import_folder(store, folder)
    # Three files were handled before the interruption (README.md, big/huge.log, and bin/tool,
    # refused): the two stored ones are skipped now, the refused one is judged again.
    assert rest.skipped == 2 and rest.new + rest.deduplicated + rest.skipped + rest.rejected == 9
    assert int(store.storage_usage(())["uploads"].iloc[0]) == 8  # 9 files, the ELF binary refused


def test_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_folder(tmp_path / "old-files")
    url = f"sqlite:///{tmp_path / 'h.db'}"
    assert main(["import-files", str(folder), "--url", url, "--tag", "legacy"]) == 0
    out, err = capsys.readouterr()
    assert "new 7" in out and "deduplicated 1" in out and "rejected 1" in out and "bin/tool" in err
    assert main(["import-files", str(folder), "--url", url]) == 0
    assert "skipped 8" in capsys.readouterr()[0]
    assert main(["import-files", str(tmp_path / "nope"), "--url", url]) == 2
