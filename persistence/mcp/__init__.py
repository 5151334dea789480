"""A read-only MCP server over the history: ``python -m persistence.mcp [--url URL]``.

Gives an agent four tools to look up its own past conversations and what they cost:
``search_history``, ``get_thread``, ``list_threads`` and ``usage_summary``. It speaks stdio,
so an MCP client (Claude Desktop, Cursor, an MCP SDK client) launches it as a subprocess.
"""

from .server import build_server

__all__ = ["build_server"]
