import json
import pickle
import stat

import pytest
import torch

from styleprefs.store import SCHEMA_VERSION, NoSession, SessionError, Store


def make_store(tmp_path):
    store = Store(tmp_path / "s")
    store.write_json("config.json", {"schema_version": SCHEMA_VERSION})
    return store


def test_json_and_tensors_round_trip(tmp_path):
    store = make_store(tmp_path)
    store.write_json("state.json", {"a": [1, 2], "b": "ü"})
    assert store.read_json("state.json") == {"a": [1, 2], "b": "ü"}
    tensors = {"z": torch.randn(4, 3), "g": torch.randn(2, 8, 8)}
    store.write_tensors("x/t.safetensors", tensors)
    back = store.read_tensors("x/t.safetensors")
    assert all(torch.equal(back[k], v) for k, v in tensors.items())
    store.check()


def test_damaged_files_are_named(tmp_path):
    store = make_store(tmp_path)
    store.path("state.json").write_text("{not json")
    with pytest.raises(SessionError, match="state.json: damaged JSON"):
        store.read_json("state.json")
    store.write_tensors("g.safetensors", {"w": torch.randn(100)})
    data = store.path("g.safetensors").read_bytes()
    store.path("g.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(SessionError, match="g.safetensors: damaged"):
        store.read_tensors("g.safetensors")
    with pytest.raises(SessionError, match="missing.safetensors: missing"):
        store.read_tensors("missing.safetensors")


def test_a_pickle_is_never_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pwned')",))
    store = make_store(tmp_path)
    store.path("g.safetensors").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(SessionError, match="damaged"):
        store.read_tensors("g.safetensors")


def test_newer_schema_and_non_sessions_are_refused(tmp_path):
    store = make_store(tmp_path)
    store.write_json("config.json", {"schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(SessionError, match="newer"):
        store.check()
    with pytest.raises(NoSession, match="no session"):
        Store(tmp_path / "elsewhere").check()
    (tmp_path / "file").write_text("x")
    with pytest.raises(NoSession, match="is a file"):
        Store(tmp_path / "file").check()


def test_history_appends(tmp_path):
    store = make_store(tmp_path)
    store.append_history({"command": "init"})
    store.append_history({"command": "propose"})
    events = json.loads(store.path("history.json").read_text())["events"]
    assert [e["command"] for e in events] == ["init", "propose"]
    assert all("time" in e for e in events)


def test_a_second_writer_waits_then_says_who_holds_the_lock(tmp_path):
    import os

    from styleprefs.errors import StyleprefsError
    store = make_store(tmp_path)
    with store.lock():
        with pytest.raises(StyleprefsError, match=f"locked by pid {os.getpid()}"):
            with Store(store.root).lock(timeout=0.3):
                pass
    with Store(store.root).lock(timeout=0.3):  # free again once released
        pass


def test_session_files_are_not_created_0600_whatever_the_umask(tmp_path, umask):
    """mkstemp makes its files 0600; a session file must be as readable as a plain open() would make it."""
    store = make_store(tmp_path)
    store.write_json("state.json", {"rounds": []})
    store.write_tensors("style_grams.safetensors", {"g": torch.ones(2, 2)})
    expected = 0o666 & ~umask
    for name in ("config.json", "state.json", "style_grams.safetensors"):
        assert stat.S_IMODE(store.path(name).stat().st_mode) == expected, (name, oct(umask))
