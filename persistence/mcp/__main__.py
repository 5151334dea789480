import argparse

from ..config import open_store
from .server import build_server

parser = argparse.ArgumentParser(prog="python -m persistence.mcp", description=__doc__)
parser.add_argument("--url", help="store URL (default: PERSISTENCE_URL, else Supabase, else the embedded file)")
args = parser.parse_args()
build_server(open_store(args.url, read_only=True)).run("stdio")
