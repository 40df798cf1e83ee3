"""``styleprefs pick``: the latest round's page served on 127.0.0.1, acting through the Session as the CLI does.

The page's two buttons are CLI commands run in this process: "Use these" is ``select`` (the same Session method,
under the same lock), "Refine and show the next round" is ``refine`` then ``propose``, on a thread of its own while
the page polls ``/api/state`` for its progress. Only the session's rounds (their pages and pictures) are served.

Requests from other web pages are refused: the Host header must name this server (against DNS rebinding), and an
action must carry the token that only a page read from this server can learn (``/api/state`` sends no CORS headers),
as JSON, which a cross-site form cannot send.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from . import page
from .errors import BadInput, StyleprefsError
from .session import Session

HOST = "127.0.0.1"
LOCK_WAIT = 2.0  # seconds an action waits for another command's lock before the page says who holds it
MAX_BODY = 4096
TYPES = {".png": "image/png", ".html": "text/html; charset=utf-8"}
PAGE_POLICY = ("default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
               "connect-src 'self'; base-uri 'none'; form-action 'none'")


@dataclass(frozen=True)
class Job:
    """What the server is doing for the page: ``phase`` is "refine" or "propose" while it works, None when idle."""

    phase: str | None = None
    message: str = ""
    step: int = 0
    total: int = 0
    error: str | None = None


class Stopped(StyleprefsError):
    """The server was asked to stop while a refine ran."""

    exit_code = 130


class Busy(StyleprefsError):
    """An action the page asked for while the server's own job runs."""


class Picker:
    """The actions the page can ask for, on one session; one job (refine, then propose) at a time.

    ``on_job`` hears every change of the job (from the job's thread), so the terminal can show what the page shows."""

    def __init__(self, root: Path, device: str = "auto", steps: int | None = None,
                 on_job: Callable[[Job], None] | None = None):
        self.root, self.device, self.steps, self.on_job = Path(root), device, steps, on_job
        self.token = secrets.token_urlsafe(24)
        self.job = Job()
        self._guard = threading.Lock()  # guards ``job`` and ``_thread``
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def latest(self) -> dict:
        """The latest round as state.json records it; refused when there is none."""
        rounds = Session.open(self.root, "cpu").state["rounds"]
        if not rounds:
            raise BadInput("nothing to pick from: run `styleprefs propose` first")
        return rounds[-1]

    def state(self) -> dict:
        """What the page polls: the latest round, its picks, the job; the token the page's actions carry."""
        job = asdict(self.job)  # before the round: a job that has finished has committed its round
        entry = self.latest()
        return {"round": entry["index"], "n": entry["n"], "selection": entry["selection"],
                "page": f"/{entry['folder']}/{page.PAGE}", "job": job, "token": self.token}

    def select(self, picks: list[int]) -> dict:
        """``styleprefs select PICKS``: the Session's select, under the session's lock."""
        with self._guard:  # not while this server's refine (or a propose after it) works on the session
            if self.job.phase:
                raise Busy(f"wait for the {self.job.phase} to finish: `{self.job.message}` is running")
            with Session.editing(self.root, "cpu", wait=LOCK_WAIT) as s:
                r = s.select(picks)
            if self.job.error:  # the last job's error is old news now
                self._set(Job())
        return {"round": r.index, "chosen": r.selection}

    def start_refine(self) -> Job:
        """``styleprefs refine`` then ``styleprefs propose`` (as many candidates, as large, as the latest round), on a
        thread; refused while one runs."""
        with self._guard:
            if self.job.phase:
                raise Busy(f"`{self.job.message}` is already running")
            entry = self.latest()
            steps = "" if self.steps is None else f" --steps {self.steps}"
            self._set(Job("refine", f"styleprefs refine{steps}"))
            self._thread = threading.Thread(target=self._refine_then_propose, args=(entry["n"], entry["size"]),
                                            name="styleprefs-refine", daemon=True)
            self._thread.start()
            return self.job

    def stop(self, timeout: float = 30.0) -> Job:
        """Ask a running refine to stop at its next step and wait for the job; its last state."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return self.job

    def _set(self, job: Job) -> None:
        self.job = job
        if self.on_job:
            self.on_job(job)

    def _refine_then_propose(self, n: int, size: int) -> None:
        try:
            def progress(p) -> None:
                if self._stop.is_set():
                    raise Stopped(f"the refine was stopped at step {p.step} of {p.total}; `styleprefs refine "
                                  "--resume` continues it from its last checkpoint, `styleprefs refine` starts again")
                if p.step == p.total or p.step % max(1, p.total // 50) == 0:
                    self._set(replace(self.job, step=p.step, total=p.total))

            with Session.editing(self.root, self.device, wait=LOCK_WAIT) as s:
                s.refine(self.steps, on_progress=progress)
            self._set(Job("propose", f"styleprefs propose --n {n} --size {size}"))
            r = Session.open(self.root, self.device).propose(n=n, size=size)
            self._set(Job(message=f"round {r.index} is ready"))
        except StyleprefsError as exc:
            self._set(Job(error=str(exc)))
        except Exception as exc:  # shown on the page and in the terminal rather than lost with the thread
            self._set(Job(error=f"{self.job.phase} failed: {type(exc).__name__}: {exc}"))


def serve(picker: Picker, port: int = 0) -> ThreadingHTTPServer:
    """A server for ``picker`` bound to 127.0.0.1 (``port`` 0: a free one); call ``serve_forever`` on it."""
    server = ThreadingHTTPServer((HOST, port), _Handler)
    server.daemon_threads = True
    server.picker = picker  # type: ignore[attr-defined]
    return server


class _Handler(BaseHTTPRequestHandler):
    server_version = "styleprefs"
    sys_version = ""

    @property
    def picker(self) -> Picker:
        return self.server.picker  # type: ignore[attr-defined]

    def log_message(self, format, *args) -> None:  # noqa: A002  the terminal shows the job, not every request
        pass

    def do_GET(self) -> None:
        if not self._from_here():
            return
        path = unquote(self.path.split("?", 1)[0])
        try:
            if path == "/":
                self._send(HTTPStatus.FOUND, b"", "text/plain", {"Location": self.picker.state()["page"]})
            elif path == "/api/state":
                self._json(HTTPStatus.OK, self.picker.state())
            else:
                self._file(path)
        except BadInput as exc:  # no round yet
            self._json(HTTPStatus.NOT_FOUND, {"error": str(exc)})
        except StyleprefsError as exc:  # a damaged state.json
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)})

    def do_POST(self) -> None:
        if not self._from_here():
            return
        if self.headers.get("X-Styleprefs-Token") != self.picker.token:
            return self._json(HTTPStatus.FORBIDDEN, {"error": "this action must come from the page pick serves"})
        path = self.path.split("?", 1)[0]
        try:
            if path == "/api/select":
                self._json(HTTPStatus.OK, self.picker.select(self._picks()))
            elif path == "/api/refine":
                self._json(HTTPStatus.ACCEPTED, {"job": asdict(self.picker.start_refine())})
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no action {path}"})
        except BadInput as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except StyleprefsError as exc:  # the lock is held, the server is busy, a damaged file
            self._json(HTTPStatus.CONFLICT, {"error": str(exc)})

    def _from_here(self) -> bool:
        """Requests must name this server: a page elsewhere that resolves its own name to 127.0.0.1 is refused."""
        port = self.server.server_address[1]
        if self.headers.get("Host") not in (f"{HOST}:{port}", f"localhost:{port}"):
            self._send(HTTPStatus.FORBIDDEN, b"forbidden\n", "text/plain")
            return False
        return True

    def _picks(self) -> list[int]:
        """The body of a select: {"picks": [numbers]}, as JSON (a cross-site form cannot send that)."""
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get_content_type() != "application/json" or not 0 < length <= MAX_BODY:
            raise BadInput("a selection is sent as JSON: {\"picks\": [numbers]}")
        try:
            picks = json.loads(self.rfile.read(length))["picks"]
        except (ValueError, KeyError, TypeError):
            raise BadInput("a selection is sent as JSON: {\"picks\": [numbers]}") from None
        if not isinstance(picks, list) or not all(type(i) is int for i in picks):
            raise BadInput("candidate numbers must be whole numbers")
        return picks

    def _file(self, path: str) -> None:
        """A page or picture of one of the session's rounds; 403 for a path that leads out of the session, 404 for
        anything else."""
        parts = PurePosixPath(path[1:]).parts
        if "\0" in path or "\\" in path or path[1:].startswith("/") or ".." in parts:
            return self._send(HTTPStatus.FORBIDDEN, b"outside the session\n", "text/plain")
        root = self.picker.root.resolve()
        target = (root / path[1:]).resolve()
        if not target.is_relative_to(root):  # a link out of it
            return self._send(HTTPStatus.FORBIDDEN, b"outside the session\n", "text/plain")
        served = (len(parts) == 3 and parts[0] == "rounds" and not any(p.startswith(".") for p in parts)
                  and PurePosixPath(path).suffix in TYPES and target.is_relative_to(root / "rounds"))
        if served and parts[2] == page.PAGE:
            return self._page(parts[1])
        if not served or not target.is_file():
            return self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
        self._send(HTTPStatus.OK, target.read_bytes(), TYPES[target.suffix])

    def _page(self, folder: str) -> None:
        """A round's page, written afresh (the session may have moved since ``propose`` wrote it)."""
        entry = next((r for r in Session.open(self.picker.root, "cpu").state["rounds"]
                      if r["folder"] == f"rounds/{folder}"), None)
        if entry is None:
            return self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
        text = page.render(self.picker.root / entry["folder"], entry["index"], entry["candidates"], self.picker.root)
        self._send(HTTPStatus.OK, text.encode(), TYPES[".html"], {"Content-Security-Policy": PAGE_POLICY})

    def _json(self, status: HTTPStatus, data: dict) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, kind: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
