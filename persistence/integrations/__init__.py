"""Adapters that plug the store into MCP servers (see ``zen`` for zen-mcp-server / EX-AI)."""
