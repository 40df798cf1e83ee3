"""`styleprefs pick`'s loopback server: what it serves, what it refuses, and its actions through the Session."""

import http.client
import inspect
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from styleprefs.server import Picker, serve
from styleprefs.session import Session
from styleprefs.store import Store


COMMANDS_WAIT = inspect.signature(Store.lock).parameters["timeout"].default  # seconds a command waits for the lock


@contextmanager
def serving(root: Path, steps: int | None = None):
    picker = Picker(root, "cpu", steps)
    server = serve(picker)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield picker, server.server_port
    finally:
        server.shutdown()
        server.server_close()
        picker.stop()


def request(port: int, method: str, path: str, body=None, token=None, host=None) -> tuple[int, bytes, dict]:
    """One raw request (the path is sent exactly as given: http.client does not tidy ``..`` away)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Host": host or f"127.0.0.1:{port}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["X-Styleprefs-Token"] = token
    connection.request(method, path, body=data, headers=headers)
    response = connection.getresponse()
    return response.status, response.read(), dict(response.getheaders())


def test_it_serves_the_latest_round_on_loopback_only(one_round):
    with serving(one_round) as (picker, port):
        status, _, headers = request(port, "GET", "/")
        assert status == 302 and headers["Location"] == "/rounds/001/index.html"
        status, body, headers = request(port, "GET", "/rounds/001/index.html")
        assert status == 200 and b'<img src="candidate-06.png"' in body
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        status, body, headers = request(port, "GET", "/rounds/001/candidate-03.png")
        assert status == 200 and headers["Content-Type"] == "image/png"
        assert body == (one_round / "rounds" / "001" / "candidate-03.png").read_bytes()
        state = json.loads(request(port, "GET", "/api/state")[1])
        assert (state["round"], state["n"], state["selection"], state["job"]["phase"]) == (1, 6, None, None)
    other = Picker(one_round, "cpu", None)
    server = serve(other)
    try:
        assert server.server_address[0] == "127.0.0.1"  # bound to loopback: no other machine can reach it
    finally:
        server.server_close()
        other.stop()
    assert len(picker.token) >= 32 and other.token != picker.token  # a fresh one for each server


@pytest.mark.parametrize("path,expected", [
    ("/../config.json", 403), ("/rounds/001/../../config.json", 403), ("/%2e%2e/%2e%2e/etc/passwd", 403),
    ("//etc/passwd", 404),  # http.server reads a leading "//" as "/": /etc/passwd, not in the rounds
    ("/%2Fetc%2Fpasswd", 403), ("/rounds/001/%00.png", 403),
    ("/config.json", 404), ("/state.json", 404), ("/checkpoints/000/generator.safetensors", 404),
    ("/rounds/001/proposals.safetensors", 404), ("/rounds/001/nothing.png", 404), ("/rounds/009/index.html", 404),
])
def test_paths_outside_the_rounds_are_refused(one_round, path, expected):
    with serving(one_round) as (_, port):
        assert request(port, "GET", path)[0] == expected


def test_a_link_out_of_the_session_is_refused(one_round, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not yours")
    (one_round / "rounds" / "001" / "out.png").symlink_to(secret)
    with serving(one_round) as (_, port):
        status, body, _ = request(port, "GET", "/rounds/001/out.png")
    assert status == 403 and b"not yours" not in body


def test_requests_naming_another_host_or_without_the_token_are_refused(one_round):
    """A page elsewhere (DNS rebinding, a cross-site form) must not act on the session."""
    before = (one_round / "state.json").read_bytes()
    with serving(one_round) as (picker, port):
        assert request(port, "GET", "/api/state", host="evil.example:80")[0] == 403
        assert request(port, "POST", "/api/select", {"picks": [1]})[0] == 403
        assert request(port, "POST", "/api/select", {"picks": [1]}, token="guess")[0] == 403
        assert request(port, "POST", "/api/refine", {}, token=picker.token, host=f"evil.example:{port}")[0] == 403
    assert (one_round / "state.json").read_bytes() == before


def test_use_these_records_the_selection_as_select_does(one_round, tmp_path):
    by_cli = tmp_path / "by-cli"
    import shutil
    shutil.copytree(one_round, by_cli)
    with Session.editing(by_cli, "cpu") as s:
        s.select([2, 4, 5])
    with serving(one_round) as (picker, port):
        status, body, _ = request(port, "POST", "/api/select", {"picks": [2, 4, 5]}, token=picker.token)
        assert status == 200 and json.loads(body) == {"round": 1, "chosen": [2, 4, 5]}
        assert json.loads(request(port, "GET", "/api/state")[1])["selection"] == [2, 4, 5]
    picks = "rounds/001/picks-2-4-5"
    for name in ("selection.json", "chosen_grams.safetensors"):
        assert (one_round / picks / name).read_bytes() == (by_cli / picks / name).read_bytes(), name
    state = json.loads((one_round / "state.json").read_text())
    assert state["rounds"][0]["selection"] == [2, 4, 5]
    assert json.loads((one_round / "history.json").read_text())["events"][-1]["command"] == "select"


@pytest.mark.parametrize("picks,message", [([9], "no candidate 9"), ([1, 1], "repeat"), ([], "at least one"),
                                           (["1"], "whole numbers"), ("1 2", "whole numbers")])
def test_a_bad_selection_gets_select_s_own_message(one_round, picks, message):
    before = (one_round / "state.json").read_bytes()
    with serving(one_round) as (picker, port):
        status, body, _ = request(port, "POST", "/api/select", {"picks": picks}, token=picker.token)
    assert status == 400 and message in json.loads(body)["error"]
    assert (one_round / "state.json").read_bytes() == before


def test_a_selection_while_another_command_holds_the_lock_fails_fast_and_says_why(one_round):
    """A refine in another terminal holds the session's lock: the page gets its holder in seconds, not a hang."""
    before = (one_round / "state.json").read_bytes()
    with serving(one_round) as (picker, port), Store(one_round).lock():
        started = time.perf_counter()
        status, body, _ = request(port, "POST", "/api/select", {"picks": [1]}, token=picker.token)
        waited = time.perf_counter() - started
    assert status == 409 and f"is locked by pid {os.getpid()}" in json.loads(body)["error"]
    assert waited < COMMANDS_WAIT  # the server's own short wait (server.LOCK_WAIT), not a command's
    assert (one_round / "state.json").read_bytes() == before


def test_refine_then_propose_from_the_page_and_no_selection_meanwhile(one_round):
    with serving(one_round, steps=2) as (picker, port):
        assert request(port, "POST", "/api/select", {"picks": [1, 3]}, token=picker.token)[0] == 200
        status, body, _ = request(port, "POST", "/api/refine", {}, token=picker.token)
        assert status == 202 and json.loads(body)["job"]["message"] == "styleprefs refine --steps 2"
        # While it runs: a second refine, or a selection (of a round about to be learned from), are refused at once.
        assert request(port, "POST", "/api/refine", {}, token=picker.token)[0] == 409
        status, body, _ = request(port, "POST", "/api/select", {"picks": [2]}, token=picker.token)
        assert status == 409 and "wait for the" in json.loads(body)["error"]
        phases = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = json.loads(request(port, "GET", "/api/state")[1])
            phases.add(state["job"]["phase"])
            if state["job"]["phase"] is None:
                break
            time.sleep(0.1)
    assert state["job"]["error"] is None and state["job"]["message"] == "round 2 is ready"
    assert state["round"] == 2 and state["page"] == "/rounds/002/index.html"
    assert {"refine", "propose"} <= phases
    s = Session.open(one_round, "cpu")
    assert [e["command"] for e in json.loads((one_round / "history.json").read_text())["events"]][-3:] == [
        "select", "refine", "propose"]
    assert s.state["refines"][0]["steps"] == 2 and s.state["rounds"][1]["n"] == 6
    assert (one_round / "rounds" / "002" / "index.html").is_file()


def test_refine_without_a_new_selection_shows_refine_s_message(one_round):
    with serving(one_round, steps=1) as (picker, port):
        assert request(port, "POST", "/api/refine", {}, token=picker.token)[0] == 202
        picker._thread.join(60)
        state = json.loads(request(port, "GET", "/api/state")[1])
    assert "no new selection" in state["job"]["error"] and state["round"] == 1


def test_a_second_pick_on_the_same_session_serves_too_and_both_act_through_the_lock(one_round):
    with serving(one_round) as (first, port1), serving(one_round) as (second, port2):
        assert port1 != port2
        assert request(port2, "POST", "/api/select", {"picks": [2]}, token=second.token)[0] == 200
        # The first sees what the second recorded: the state is read from the session on every request.
        assert json.loads(request(port1, "GET", "/api/state")[1])["selection"] == [2]
        assert request(port1, "POST", "/api/select", {"picks": [2]}, token=second.token)[0] == 403  # its own token
        assert request(port1, "POST", "/api/select", {"picks": [5, 6]}, token=first.token)[0] == 200
    assert Session.open(one_round, "cpu").state["rounds"][0]["selection"] == [5, 6]


def test_pick_refuses_a_session_without_a_round_and_stops_cleanly_on_ctrl_c(one_round, tmp_path):
    from typer.testing import CliRunner

    from styleprefs.cli import app
    empty = tmp_path / "empty"
    import shutil
    shutil.copytree(one_round, empty)
    state = json.loads((empty / "state.json").read_text())
    shutil.rmtree(empty / "rounds")
    state["rounds"], state["files"] = [], {k: v for k, v in state["files"].items() if not k.startswith("rounds/")}
    (empty / "state.json").write_text(json.dumps(state))
    result = CliRunner().invoke(app, ["pick", "--no-browser", "--session", str(empty)])
    assert result.exit_code == 2 and "nothing to pick from: run `styleprefs propose` first" in result.output

    env = {**os.environ, "COLUMNS": "200"}
    env.pop("DISPLAY", None)
    # Started as a terminal would start it, with Ctrl-C at its default: a shell that runs the tests in the background
    # has its children ignore SIGINT, and Python then installs no KeyboardInterrupt handler (so `pick`, rightly,
    # does not stop: that is how the test failed under `bash .ci/run &`).
    with_ctrl_c = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                   "runpy.run_module('styleprefs', run_name='__main__', alter_sys=True)")
    proc = subprocess.Popen([sys.executable, "-c", with_ctrl_c, "pick", "--session", str(one_round)],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
        assert "serving round 1 of" in line and "(Ctrl-C to stop)" in line
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        assert request(port, "GET", "/rounds/001/index.html")[0] == 200
        proc.send_signal(signal.SIGINT)
        out, rest = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0 and out == "" and "stopped" in rest and "Traceback" not in rest
