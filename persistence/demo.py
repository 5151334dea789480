"""Realistic synthetic history for the app, the tests and the benchmarks.

Threads look like what the EX-AI MCP server writes: zen-style tools (chat, thinkdeep,
codereview, debug …) routed mostly to Kimi and GLM, some to OpenAI, Anthropic, Gemini and
one self-hosted model with no price; English and Chinese prompts; answers with code blocks;
each provider's own usage shape (so cost normalisation is exercised); continuation threads;
uploaded files of realistic types and sizes (code, configs, logs, CSV, PDF reports, PNG
screenshots, JPEG photos: :mod:`persistence.demo_files`), some uploaded again; several weeks of
timestamps with a weekday rhythm.
Deterministic: the same seed and end date give the same store, ids included.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from .demo_files import DEMO_FILES, demo_file_bytes
from .prepared import ParsedRecord, PreparedConversation, PreparedMessage, title_from
from .store import Store, new_id

__all__ = ["DemoSummary", "generate"]

# (model, provider as the server names it, weight, usage shape)
MODELS: list[tuple[str, str, float, str]] = [
    ("kimi-k2-0905-preview", "kimi", 22, "kimi"),
    ("kimi-k2-turbo-preview", "kimi", 8, "kimi"),
    ("kimi-k2-thinking", "kimi", 6, "kimi"),
    ("glm-4.6", "glm", 20, "glm"),
    ("glm-4.5-air", "glm", 8, "glm"),
    ("glm-4.5-flash", "glm", 5, "glm"),
    ("gpt-5", "openai", 6, "openai"),
    ("gpt-4.1-mini", "openai", 5, "openai"),
    ("claude-sonnet-4-5-20250929", "anthropic", 7, "anthropic"),
    ("gemini-2.5-pro", "google", 5, "gemini"),
    ("gemini-2.5-flash", "google", 5, "gemini"),
    ("llama-3.1-8b-local", "custom", 3, "openai"),  # self-hosted: no price, counted as unpriced
]
TOOLS = [
    ("chat", 30),
    ("thinkdeep", 10),
    ("codereview", 12),
    ("debug", 12),
    ("analyze", 10),
    ("planner", 6),
    ("consensus", 4),
    ("precommit", 5),
    ("refactor", 4),
    ("testgen", 4),
    ("secaudit", 2),
    ("docgen", 2),
    ("kimi_upload_and_extract", 3),
]
PROJECTS = ["ex-ai-mcp", "billing-api", "ingest-pipeline", "mobile-app", "infra", "data-platform", "docs-site"]
TOPICS_EN = [
    ("the connection pool", "exhausts under load after a deploy"),
    ("the websocket handler", "drops messages when the client reconnects"),
    ("the retry decorator", "retries non-idempotent POST requests"),
    ("the cache layer", "returns stale entries after invalidation"),
    ("the database migration", "locks the orders table for minutes"),
    ("the rate limiter", "lets bursts through at the window boundary"),
    ("the upload endpoint", "buffers whole files in memory"),
    ("the search index", "misses documents written during reindexing"),
    ("the token counter", "double counts cached prompt tokens"),
    ("the background queue", "loses jobs on shutdown"),
    ("the auth middleware", "accepts expired refresh tokens"),
    ("the CSV exporter", "mangles unicode column names"),
    ("the scheduler", "runs the nightly job twice after DST changes"),
    ("the streaming parser", "stalls on chunk boundaries inside multi-byte characters"),
]
ASKS_EN = [
    "Why does {thing} {problem}? Walk me through the likely causes.",
    "Review {thing}: it {problem}. What would you change?",
    "I'm debugging {thing}, which {problem}. Here is the relevant code.",
    "Plan a fix for {thing} that {problem}, with tests.",
    "Give me a second opinion: {thing} {problem}. Is a rewrite justified?",
    "Continue from before: {thing} still {problem} after the patch.",
]
TOPICS_ZH = [
    ("数据库连接池", "在高并发下耗尽"),
    ("缓存层", "在失效之后仍然返回旧数据"),
    ("文件上传接口", "把整个文件读进内存"),
    ("消息队列", "在关闭时丢失任务"),
    ("全文检索索引", "漏掉重建索引期间写入的文档"),
    ("限流器", "在窗口边界放过突发流量"),
    ("令牌计数", "重复计算了缓存的提示词令牌"),
    ("定时任务", "在夏令时切换后执行两次"),
]
ASKS_ZH = [
    "为什么{thing}{problem}？请帮我分析可能的原因。",
    "请审查一下{thing}的代码：它{problem}。你会怎么改？",
    "我在调试{thing}，它{problem}。下面是相关代码。",
    "请为{thing}{problem}的问题制定修复计划，并给出测试用例。",
    "继续之前的讨论：打了补丁之后{thing}还是{problem}。",
]
ANSWER_EN = [
    "The most likely cause is that {thing} is shared across requests without a lock.",
    "Looking at the code, the failure happens when the timeout fires before the response is read.",
    "I would start by adding a metric for the queue depth and an alert on its growth.",
    "Running the test suite with the race detector enabled should reproduce it reliably.",
    "A simpler fix is to make the operation idempotent and key it by the request id.",
    "Note that the configuration default changed in the last release, which explains the timing.",
    "The index is rebuilt in a separate transaction, so concurrent writes land in the old segment.",
    "Caching the computed value per request would remove most of the repeated work.",
    "This is a classic off-by-one at the window boundary; the fix is a sliding log.",
    "Streaming the body in fixed-size chunks keeps memory flat regardless of the file size.",
    "The reconnect path never replays the unacknowledged messages, so they are lost.",
    "Consider running the migration online: add the column, backfill in batches, then swap.",
]
ANSWER_ZH = [
    "最可能的原因是{thing}在多个请求之间共享，却没有加锁。",
    "从代码来看，超时在读取响应之前触发时就会失败。",
    "建议先为队列深度增加监控指标，并在持续增长时告警。",
    "更简单的修复方式是让操作幂等，并用请求编号作为键。",
    "索引在单独的事务中重建，所以并发写入落在了旧的分段里。",
    "按固定大小分块流式读取，可以让内存占用与文件大小无关。",
]
CODE = [
    (
        "python",
        "def fetch(session, url, *, retries=3):\n    for attempt in range(retries):\n        try:\n            return session.get(url, timeout=10)\n        except TimeoutError:\n            time.sleep(2 ** attempt)\n    raise RuntimeError(f'gave up on {url}')",
    ),
    (
        "python",
        "async def consume(queue):\n    while True:\n        job = await queue.get()\n        try:\n            await handle(job)\n        finally:\n            queue.task_done()",
    ),
    ("sql", "create index concurrently orders_customer_created\n    on orders (customer_id, created_at desc);"),
    (
        "typescript",
        "export function debounce<T extends unknown[]>(fn: (...a: T) => void, ms: number) {\n  let t: ReturnType<typeof setTimeout> | undefined;\n  return (...a: T) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };\n}",
    ),
    (
        "go",
        "func (p *Pool) Get(ctx context.Context) (*Conn, error) {\n\tselect {\n\tcase c := <-p.idle:\n\t\treturn c, nil\n\tcase <-ctx.Done():\n\t\treturn nil, ctx.Err()\n\t}\n}",
    ),
    (
        "rust",
        "fn parse(buf: &[u8]) -> Result<Frame, Error> {\n    let len = u32::from_be_bytes(buf[..4].try_into()?) as usize;\n    Ok(Frame { body: buf[4..4 + len].to_vec() })\n}",
    ),
]

LARGE_FILE_THREADS = 1_000
SMALL_FILE = 64 * 1024  # a demo file that can be larger than this is a large one


@dataclass(frozen=True, slots=True)
class DemoSummary:
    conversations: int
    messages: int
    uploads: int


def _weighted(rng: random.Random, items: Sequence[tuple[Any, float]]) -> Any:
    total = sum(w for _, w in items)
    x = rng.random() * total
    for item, w in items:
        x -= w
        if x <= 0:
            return item
    return items[-1][0]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _usage(rng: random.Random, shape: str, prompt: int, output: int, thinking: bool) -> dict[str, Any]:
    cached = int(prompt * rng.choice((0, 0, 0.3, 0.6, 0.8))) if prompt > 2000 else 0
    reasoning = int(output * rng.uniform(0.3, 0.7)) if thinking else 0
    if shape == "kimi":
        return {
            "prompt_tokens": prompt,
            "completion_tokens": output,
            "total_tokens": prompt + output,
            "cached_tokens": cached,
        }
    if shape == "glm":
        return {
            "prompt_tokens": prompt,
            "completion_tokens": output,
            "total_tokens": prompt + output,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
    if shape == "openai":
        return {
            "prompt_tokens": prompt,
            "completion_tokens": output,
            "total_tokens": prompt + output,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
    if shape == "anthropic":
        write = int(prompt * 0.2) if cached == 0 and prompt > 4000 else 0
        return {
            "input_tokens": prompt - cached - write,
            "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": write,
            "output_tokens": output,
        }
    return {  # gemini
        "promptTokenCount": prompt,
        "cachedContentTokenCount": cached,
        "candidatesTokenCount": output - reasoning,
        "thoughtsTokenCount": reasoning,
        "totalTokenCount": prompt + output,
    }


def _user_text(rng: random.Random, chinese: bool, turn: int) -> str:
    if chinese:
        thing, problem = rng.choice(TOPICS_ZH)
        text = rng.choice(ASKS_ZH).format(thing=thing, problem=problem)
    else:
        thing, problem = rng.choice(TOPICS_EN)
        text = rng.choice(ASKS_EN).format(thing=thing, problem=problem)
    if rng.random() < 0.3:
        lang, code = rng.choice(CODE)
        text += f"\n\n```{lang}\n{code}\n```"
    if turn > 1 and rng.random() < 0.3:
        text += "\n\n" + ("请再详细解释一下第二点。" if chinese else "Can you expand on the second point?")
    return text


def _assistant_text(rng: random.Random, chinese: bool) -> str:
    thing = rng.choice(TOPICS_ZH if chinese else TOPICS_EN)[0]
    sentences = ANSWER_ZH if chinese else ANSWER_EN
    paragraphs = []
    for _ in range(rng.randint(1, 4)):
        paragraphs.append(
            ("" if chinese else " ").join(s.format(thing=thing) for s in rng.sample(sentences, k=rng.randint(2, 4)))
        )
    if rng.random() < 0.45:
        lang, code = rng.choice(CODE)
        paragraphs.insert(rng.randint(1, len(paragraphs)), f"```{lang}\n{code}\n```")
    if rng.random() < 0.3:
        items = rng.sample(sentences, k=3)
        paragraphs.append("\n".join(f"{i + 1}. {s.format(thing=thing)}" for i, s in enumerate(items)))
    return "\n\n".join(paragraphs)


def _records(
    store: Store, n: int, rng: random.Random, start: datetime, span: timedelta
) -> Iterator[tuple[ParsedRecord, list[tuple[str, str, int, datetime]]]]:
    model_choices = [((m, p, shape), w) for m, p, w, shape in MODELS]
    tool_choices = list(TOOLS)
    # Past LARGE_FILE_THREADS threads the large files get rarer in proportion: the bytes
    # uploaded stay about that many threads' worth (a million-message demo would otherwise
    # upload gigabytes), while the number of uploads keeps growing with the threads.
    rarer = min(1.0, LARGE_FILE_THREADS / max(n, 1))
    file_choices = [(f, f.weight * (rarer if f.max_size > SMALL_FILE else 1.0)) for f in DEMO_FILES]
    recent_threads: list[str] = []
    for _ in range(n):
        # A weekday rhythm: weekends and nights are quieter.
        while True:
            at = start + timedelta(seconds=rng.random() * span.total_seconds())
            weight = (0.35 if at.weekday() >= 5 else 1.0) * (1.0 if 7 <= at.hour <= 22 else 0.25)
            if rng.random() < weight:
                break
        model, provider, shape = _weighted(rng, model_choices)
        tool = _weighted(rng, tool_choices)
        chinese = (provider in ("kimi", "glm") and rng.random() < 0.45) or rng.random() < 0.05
        thinking = tool in ("thinkdeep", "consensus") or "thinking" in model or model == "gpt-5"
        cid = _uuid(rng)
        parent = rng.choice(recent_threads) if recent_threads and rng.random() < 0.12 else None
        recent_threads = [*recent_threads, cid][-50:]
        conv = PreparedConversation(
            # Time-ordered, as the package's own ids (new_id); continuation ids stay random, as zen's.
            id=new_id(at, rng=rng),
            continuation_id=cid,
            created_at=at,
            tool_name=tool,
            session_id=f"session-{rng.randint(1, max(3, n // 20))}",
            parent_id=parent,
            tags=tuple(rng.sample(PROJECTS, k=rng.choice((0, 1, 1, 2)))),
            metadata={"client": rng.choice(("claude-desktop", "cursor", "vscode", "claude-code"))},
            initial_context={"prompt": "(see first message)", "tool": tool},
        )
        turns = rng.choice((2, 2, 4, 4, 6, 8, 10, 12, 16, 20))
        messages: list[tuple[int, PreparedMessage]] = []
        prompt_tokens = rng.randint(400, 3000)
        t = at
        for seq in range(1, turns + 1):
            role = "user" if seq % 2 == 1 else "assistant"
            if role == "user":
                content = _user_text(rng, chinese, seq)
                t += timedelta(seconds=rng.randint(20, 900))
                kwargs: dict[str, Any] = {}
            else:
                content = _assistant_text(rng, chinese)
                output = max(50, int(len(content) / (1.6 if chinese else 4)) + rng.randint(0, 400))
                if thinking:
                    output += rng.randint(200, 3000)
                duration = int(output * rng.uniform(8, 40)) + rng.randint(300, 2500)
                t += timedelta(milliseconds=duration)
                kwargs = {
                    "model": model,
                    "provider": provider,
                    "usage": _usage(rng, shape, prompt_tokens, output, thinking),
                    "duration_ms": duration,
                }
                prompt_tokens += output + rng.randint(100, 1500)
            messages.append(
                (
                    seq,
                    store.prepare_message(
                        role, content, tool_name=tool, message_id=new_id(t, rng=rng), created_at=t, **kwargs
                    ),
                )
            )
        uploads = []
        if tool in ("codereview", "debug", "analyze", "kimi_upload_and_extract", "precommit") and rng.random() < 0.5:
            picked = [_weighted(rng, file_choices) for _ in range(rng.randint(1, 2))]
            for spec in dict.fromkeys(picked):  # each file once, in the order picked
                # A few variants per file name: many uploads, fewer distinct contents.
                uploads.append((spec.name, spec.mime_type, rng.randint(1, 4), t))
        # Titled like a live thread: the server's first user turn names it (see Store.record_message).
        conv = dataclasses.replace(conv, title=title_from(messages[0][1].content))
        yield ParsedRecord(conversation=conv, model=model, updated_at=t, messages=messages, files=[]), uploads


def generate(
    store: Store,
    conversations: int = 200,
    *,
    seed: int = 0,
    end: date | None = None,
    weeks: int = 8,
    files: bool = True,
    batch_size: int = 500,
    progress: Callable[[int], object] | None = None,
) -> DemoSummary:
    """Write ``conversations`` synthetic threads ending on ``end`` (default: today, UTC).

    ``files``: upload the threads' attachments (:mod:`persistence.demo_files`) through
    ``put_file`` and its upload rules. A 200-thread demo stores about 10 MB of them; past
    :data:`LARGE_FILE_THREADS` threads the large ones get rarer, so the bytes uploaded stay
    bounded."""
    rng = random.Random(seed)
    end_day = end or datetime.now(UTC).date()
    end_at = datetime.combine(end_day, time(), tzinfo=UTC)
    start = end_at - timedelta(weeks=weeks)
    span = end_at - start - timedelta(hours=6)  # leave room for the last thread's turns
    n_messages = n_uploads = 0
    batch: list[ParsedRecord] = []
    pending_files: list[tuple[str, str, str, int, datetime]] = []
    for record, uploads in _records(store, conversations, rng, start, span):
        batch.append(record)
        n_messages += len(record.messages)
        pending_files.extend((record.conversation.continuation_id, *upload) for upload in uploads)
        if len(batch) >= batch_size:
            store._import_batch(batch)
            if progress:
                progress(len(batch))
            batch = []
    if batch:
        store._import_batch(batch)
        if progress:
            progress(len(batch))
    if files:
        # In time order, as a live server uploads: the first upload of some bytes stores them.
        pending_files.sort(key=lambda upload: upload[4])
        made: dict[tuple[str, int], bytes] = {}  # a variant uploaded again is the same bytes
        for cid, name, mime, variant, at in pending_files:
            if (name, variant) not in made:
                made[name, variant] = demo_file_bytes(seed, name, variant)
            store.put_file(
                made[name, variant], filename=name, mime_type=mime, continuation_id=cid, tags=("demo",), created_at=at
            )
            n_uploads += 1
    return DemoSummary(conversations=conversations, messages=n_messages, uploads=n_uploads)
