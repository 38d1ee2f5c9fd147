"""Password gate benchmark: how many passwords per second a script can try against a real
`streamlit run dashboard.py` server (demo source, SQLite in a temporary folder).

    python bench/gate_guesses.py [--seconds 20] [--parallel 8]

The script speaks Streamlit's own websocket protocol (`/_stcore/stream`, BackMsg/ForwardMsg
protobufs) like a browser would, without rendering anything: it opens a session, finds the
password box, and sends one wrong password per script run, as fast as the server answers.
Two attacks, each for `--seconds`:

- `one_session`: one session, guesses one after the other;
- `fresh_sessions`: `--parallel` workers, each opening a NEW session for every guess (what a
  per-session delay alone cannot slow down).

Prints one JSON object per attack: `checked` (the server compared the password: "Wrong
password"), `refused` (the server turned the attempt down unchecked: "Too many attempts"),
`checked_per_s`. Only `checked` counts as a guess. Compare the figures before and after a change
on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "bench-gate-password-7d41c"  # never guessed
DROPPED_ENV = ("LEGIFRANCE_CLIENT_ID", "LEGIFRANCE_CLIENT_SECRET", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY",
               "COLLECTOR_API_TOKEN", "RENDER", "ENABLE_SCHEDULER")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The real server, waited for until its health check answers."""
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV and not k.startswith("STREAMLIT_")}
    env.update(SCHEDULER_STATE_FILE=str(root / "state.json"), COLLECTOR_DB=str(root / "collector.sqlite3"),
               DASHBOARD_PASSWORD=PASSWORD, LOG_FORMAT="json")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=REPO, env=env, stdout=(root / "server.log").open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError("the server did not start within 90 s")


class Session:
    """One Streamlit session over its websocket."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.password_id: str | None = None

    async def run(self, guess: str | None = None) -> bytes:
        """One script run (with `guess` typed in the password box); every delta it sent."""
        msg = BackMsg()
        msg.rerun_script.query_string = ""
        msg.rerun_script.page_script_hash = ""
        if guess is not None:
            assert self.password_id is not None
            msg.rerun_script.widget_states.widgets.append(WidgetState(id=self.password_id, string_value=guess))
        await self.ws.send(msg.SerializeToString())
        seen = b""
        while True:
            fwd = ForwardMsg()
            fwd.ParseFromString(await self.ws.recv())
            kind = fwd.WhichOneof("type")
            if kind == "delta":
                seen += fwd.delta.SerializeToString()
                element = fwd.delta.new_element
                if element.WhichOneof("type") == "text_input":
                    self.password_id = element.text_input.id
            elif kind == "script_finished":
                return seen


async def open_session(url: str) -> Session:
    ws = await websockets.connect(url, subprotocols=["streamlit"], max_size=None)
    session = Session(ws)
    await session.run()
    if session.password_id is None:
        raise RuntimeError("no password box on the page: is DASHBOARD_PASSWORD set?")
    return session


def outcome(deltas: bytes) -> str:
    if b"Wrong password" in deltas:
        return "checked"
    if b"Too many" in deltas:
        return "refused"
    return "other"


async def one_session(url: str, seconds: float) -> dict[str, float]:
    counts = {"checked": 0, "refused": 0, "other": 0}
    session = await open_session(url)
    started = time.monotonic()
    i = 0
    while time.monotonic() - started < seconds:
        counts[outcome(await session.run(f"guess-{i:06d}"))] += 1
        i += 1
    await session.ws.close()
    return summary(counts, time.monotonic() - started)


async def fresh_sessions(url: str, seconds: float, parallel: int) -> dict[str, float]:
    counts = {"checked": 0, "refused": 0, "other": 0}
    started = time.monotonic()

    async def worker(w: int) -> None:
        i = 0
        while time.monotonic() - started < seconds:
            session = await open_session(url)
            counts[outcome(await session.run(f"guess-{w}-{i:06d}"))] += 1
            await session.ws.close()
            i += 1

    await asyncio.gather(*(worker(w) for w in range(parallel)))
    return summary(counts, time.monotonic() - started)


def summary(counts: dict[str, int], elapsed: float) -> dict[str, float]:
    return {**counts, "seconds": round(elapsed, 1), "checked_per_s": round(counts["checked"] / elapsed, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    attacks = {
        "one_session": lambda url: one_session(url, args.seconds),
        f"fresh_sessions_x{args.parallel}": lambda url: fresh_sessions(url, args.seconds, args.parallel),
    }
    for name, attack in attacks.items():  # one server each: the throttle starts from zero
        with tempfile.TemporaryDirectory() as tmp:
            proc, port = start_server(Path(tmp))
            try:
                result = asyncio.run(attack(f"ws://127.0.0.1:{port}/_stcore/stream"))
                print(json.dumps({"attack": name, **result}), flush=True)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)

if __name__ == "__main__":
    main()
