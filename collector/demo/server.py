"""Serving the emulator on a loopback socket: `serve`, a thread helper for tests, CLI glue."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import threading
import time
from types import TracebackType

import uvicorn

from collector.demo.app import API_PREFIX, TOKEN_PATH, create_app
from collector.demo.config import MAX_DEMO_ARTICLES, MIN_DEMO_ARTICLES, DemoConfig
from collector.demo.faults import FaultKind
from collector.demo.state import DemoServer


def _listening_socket(host: str, port: int) -> socket.socket:
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted connections only for sockets that
    # say so; without it uvicorn's two writes per response (head, body) met Nagle + delayed ACK
    # and every answer came ~40 ms late.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _uvicorn(server: DemoServer) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(server), log_level="warning", access_log=False, lifespan="off",
        timeout_graceful_shutdown=2,
    )
    return uvicorn.Server(config)


def how_to_use(url: str, client_id: str, client_secret: str, loopback: bool = True) -> str:
    """What `demo-server` prints under its first line: its URLs, its (public, fake) credentials
    and the environment that points the collector at it."""
    env = (f"LEGIFRANCE_OAUTH_URL={url}{TOKEN_PATH} LEGIFRANCE_API_BASE_URL={url}{API_PREFIX} "
           f"LEGIFRANCE_CLIENT_ID={client_id} LEGIFRANCE_CLIENT_SECRET={client_secret}")
    if not loopback:
        env += " ALLOW_INSECURE_HTTP=true"
    return "\n".join([
        f"  token URL:    {url}{TOKEN_PATH}",
        f"  API base URL: {url}{API_PREFIX}",
        f"  credentials:  client id {client_id!r}, client secret {client_secret!r} (the emulator's own, not PISTE's)",
        "  point the collector at it:",
        f"    {env} python -m collector run --once",
    ])


def serve(config: DemoConfig | DemoServer | None, port: int, host: str = "127.0.0.1") -> None:
    """Serve the emulator until interrupted (SIGINT/SIGTERM). Prints the line
    "demo-server listening on http://HOST:PORT" once the socket accepts connections, then
    its URLs, credentials and the collector's settings to use it (`how_to_use`)."""
    from collector.config import is_loopback_host

    server = config if isinstance(config, DemoServer) else DemoServer(config)
    sock = _listening_socket(host, port)
    bound = sock.getsockname()[1]
    url = f"http://{host}:{bound}"
    print(f"demo-server listening on {url}", flush=True)  # first line: scripts wait for it
    creds = server.config
    print(how_to_use(url, creds.client_id, creds.client_secret, is_loopback_host(host)), flush=True)
    try:
        _uvicorn(server).run(sockets=[sock])
    finally:
        sock.close()


class DemoServerThread:
    """The emulator on 127.0.0.1 in a background thread (for tests and benchmarks).

    with DemoServerThread(DemoConfig(rate_limit=5)) as demo:
        demo.oauth_url, demo.api_base_url, demo.server.stats()
    """

    def __init__(self, config: DemoConfig | DemoServer | None = None, port: int = 0, host: str = "127.0.0.1") -> None:
        self.server = config if isinstance(config, DemoServer) else DemoServer(config)
        self.host = host
        self._sock = _listening_socket(host, port)
        self.port: int = self._sock.getsockname()[1]
        self._uvicorn = _uvicorn(self.server)
        self._thread = threading.Thread(target=self._run, name=f"demo-server-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def oauth_url(self) -> str:
        return self.url + TOKEN_PATH

    @property
    def api_base_url(self) -> str:
        return self.url + API_PREFIX

    def _run(self) -> None:
        asyncio.run(self._uvicorn.serve(sockets=[self._sock]))

    def start(self, timeout: float = 15.0) -> DemoServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"demo server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._uvicorn.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> DemoServerThread:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


# ---- CLI glue (wired by `python -m collector demo-server`) ------------------------------------
def add_demo_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `demo-server`."""
    d = DemoConfig()
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--articles", type=int, default=d.articles,
                        help=f"in-force articles across the demo codes ({MIN_DEMO_ARTICLES}..{MAX_DEMO_ARTICLES}, default {d.articles})")
    parser.add_argument("--seed", type=int, default=d.seed, help="corpus and fault seed")
    parser.add_argument("--latency-ms", type=float, default=d.latency_ms, help="added to every API request")
    parser.add_argument("--rate-limit", type=float, default=None,
                        help="API requests allowed per sliding second (over it: 429); default unlimited")
    parser.add_argument("--retry-after", type=float, default=None, help="Retry-After seconds sent with 429")
    parser.add_argument("--fault-rate", type=float, default=d.fault_rate, help="share of API requests faulted (0..1)")
    parser.add_argument("--fault-kinds", default=",".join(k.value for k in d.fault_kinds),
                        help=f"comma-separated among {', '.join(k.value for k in FaultKind)}")
    parser.add_argument("--hang-s", type=float, default=d.hang_s, help="delay of the 'hang' fault")
    parser.add_argument("--token-lifetime", type=float, default=d.token_lifetime_s, help="token lifetime in seconds")
    parser.add_argument("--forbidden", action="store_true", help="answer 403 to every API call")


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    """DemoConfig from parsed `demo-server` options; ValueError with a clear message if invalid."""
    kinds = tuple(k.strip() for k in args.fault_kinds.split(",") if k.strip())
    try:
        fault_kinds = tuple(FaultKind(k) for k in kinds)
    except ValueError:
        raise ValueError(f"--fault-kinds: expected names among {', '.join(k.value for k in FaultKind)}") from None
    return DemoConfig(
        articles=args.articles, seed=args.seed, latency_ms=args.latency_ms, rate_limit=args.rate_limit,
        retry_after=args.retry_after, fault_rate=args.fault_rate, fault_kinds=fault_kinds, hang_s=args.hang_s,
        token_lifetime_s=args.token_lifetime, forbidden=args.forbidden,
    )


def run_demo_server(args: argparse.Namespace) -> int:
    """Run `demo-server` in the foreground; exit code 0 on a clean stop, 2 on bad options/port."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"demo-server: {exc}", file=sys.stderr)
        return 2
    try:
        serve(config, args.port, host=args.host)
    except OSError as exc:
        print(f"demo-server: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
