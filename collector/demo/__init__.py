"""Offline Légifrance emulator (PISTE token + Légifrance API) over a synthetic, fake corpus."""

from collector.config import DEMO_API_BASE_URL, DEMO_OAUTH_URL
from collector.demo.app import API_PREFIX, TOKEN_PATH, create_app
from collector.demo.config import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DemoConfig
from collector.demo.corpus import DEMO_MAINTENANCE_CODES, DEMO_MASSIVE_CODES, Corpus, is_demo_id
from collector.demo.faults import FaultKind, FaultRule
from collector.demo.server import DemoServerThread, serve
from collector.demo.state import DemoServer
from collector.demo.transport import DemoTransport, demo_transport

__all__ = [
    "API_PREFIX",
    "DEMO_API_BASE_URL",
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "DEMO_MAINTENANCE_CODES",
    "DEMO_MASSIVE_CODES",
    "DEMO_OAUTH_URL",
    "TOKEN_PATH",
    "Corpus",
    "DemoConfig",
    "DemoServer",
    "DemoServerThread",
    "DemoTransport",
    "FaultKind",
    "FaultRule",
    "create_app",
    "demo_transport",
    "is_demo_id",
    "serve",
]
