"""The store from asyncio: calls run in worker threads, the event loop keeps running."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import persistence


def test_async_calls_do_not_block_the_event_loop(tmp_path: Path) -> None:
    async def main() -> tuple[int, int, int]:
        store = persistence.open_async_store(f"sqlite:///{tmp_path / 'a.db'}")
        ticks = 0
        done = asyncio.Event()

        async def heartbeat() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0)

        beat = asyncio.create_task(heartbeat())
        # 64 MiB hashed and written: long enough that a blocking call would starve the loop.
        stored = await store.put_file(io.BytesIO(b"\x01" * (64 * 1024 * 1024)), filename="big.bin")
        ticks_during_upload = ticks
        writes = [store.record_message("t-async", "user", f"turn {i}") for i in range(20)]
        await asyncio.gather(*writes)
        conv = await store.get_conversation("t-async")
        done.set()
        await beat
        await store.close()
        assert stored.size == 64 * 1024 * 1024
        return ticks_during_upload, conv.message_count, len({m.seq for m in conv.messages})

    ticks, count, distinct_seqs = asyncio.run(main())
    assert ticks > 10  # the loop kept running while the file was stored
    assert count == 20 and distinct_seqs == 20
