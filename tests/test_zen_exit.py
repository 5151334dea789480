"""A real stdio MCP server that keeps zen's conversation memory in Postgres, through exit.

zen-mcp-server itself is not installable here: ``tests/zen_fixture_server.py`` stands in for
it (its ``chat`` tool uses ThreadStorage exactly as zen's conversation memory does, outbox
included), driven by the MCP SDK's own stdio client. When the client closes, the server exits
at once; every turn it accepted must be in Postgres afterwards, read with a fresh store.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

import persistence
from persistence.integrations.zen import ThreadStorage
from persistence.outbox import _connect, doctor, outbox_path_for

pytestmark = pytest.mark.postgres

SERVER = Path(__file__).with_name("zen_fixture_server.py")


def run_client(env: dict[str, str]) -> list[dict[str, Any]]:
    async def main() -> list[dict[str, Any]]:
        params = StdioServerParameters(command=sys.executable, args=[str(SERVER)], env=env)
        async with Client(params) as client:
            first = (await client.call_tool("chat", {"prompt": "Why does the pool run dry?"})).structured_content
            assert first is not None
            second = (
                await client.call_tool(
                    "chat", {"prompt": "And the retry decorator?", "continuation_id": first["continuation_id"]}
                )
            ).structured_content
            assert second is not None
        return [first, second]  # the client has closed: the server was told to exit

    return asyncio.run(main())


@pytest.mark.parametrize("before", ["clean", "killed-server"])
def test_every_turn_reaches_postgres_when_the_server_exits(
    pg_url: str, tmp_path: Path, before: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERSISTENCE_OUTBOX_DIR", str(tmp_path / "queue"))  # for doctor, below
    env = {
        "ZEN_FIXTURE_URL": pg_url,
        "PERSISTENCE_OUTBOX_DIR": str(tmp_path / "queue"),
        "PERSISTENCE_FILES_DIR": str(tmp_path / "files"),
        "PERSISTENCE_HOME": str(tmp_path / "home"),
    }
    store = persistence.open_store(pg_url, files_dir=tmp_path / "files")
    if before == "killed-server":
        # A server killed mid-flush left its lease behind, good for a while yet.
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        db = _connect(outbox_path_for(store.url, tmp_path / "queue"))
        db.execute(
            "insert into outbox_state (name, value, until) values ('lease', ?, ?)",
            (f"{socket.gethostname()}:{dead.pid}:0dead", time.time() + 600),
        )
        db.close()
    started = time.monotonic()
    first, second = run_client(env)
    assert time.monotonic() - started < 60
    tid = first["continuation_id"]
    assert second["continuation_id"] == tid
    fresh = persistence.open_store(pg_url, files_dir=tmp_path / "files")  # nothing cached from the server
    conv = fresh.get_conversation(tid)
    assert conv is not None
    assert [m.content for m in conv.messages] == [
        "Why does the pool run dry?",
        "An answer to 'Why does the pool run dry?'.",
        "And the retry decorator?",
        "An answer to 'And the retry decorator?'.",
    ]  # zen's echo of the second question is not a message of its own
    assert conv.usage.output_tokens == 24 and conv.cost_usd > 0
    # What the next server reads back: every turn, the echo in its place.
    got = json.loads(ThreadStorage(fresh, outbox=False).get(f"thread:{tid}") or "null")
    assert [t["role"] for t in got["turns"]] == ["user", "assistant", "user", "user", "assistant"]
    assert got["turns"][3]["content"].startswith("And the retry decorator?\n\nCONVERSATION CONTINUATION:")
    status = doctor(fresh)
    assert status["outbox_depth"] == 0 and status["outbox_dead"] == 0
    fresh.close()
    store.close()
