"""The step store (tiny_decoder/io/step_store.py) keeps a compiled step only where it can trust it again: written
whole or not at all, found only under its own key with the bytes it was written with, in a folder and file no one
else may write; pruning touches nothing it did not name; step counts add up across stores."""

import json
import os
import tempfile
import time
from pathlib import Path

import pytest

from tiny_decoder.io.step_store import StepStore, file_sha256, remove_temporary

KEY = {"model": "m", "shape": [32, 192]}


def write(data: bytes):
    return lambda path: path.write_bytes(data)


def test_a_saved_step_is_found_under_its_key_only(tmp_path):
    store = StepStore(tmp_path / "aot")
    path = store.save(KEY, write(b"package"), {"what": "a test"})
    assert path.parent == tmp_path / "aot" and path.read_bytes() == b"package"
    assert StepStore(tmp_path / "aot").find(KEY) == path  # another store (process) on the same folder
    assert store.find({**KEY, "shape": [1, 192]}) is None
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["sha256"] == file_sha256(path) and record["key"] == KEY and record["what"] == "a test"
    if hasattr(os, "getuid"):
        assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, path.with_suffix(".json").name])


def test_a_changed_package_is_not_loaded(tmp_path):
    store = StepStore(tmp_path / "aot")
    path = store.save(KEY, write(b"package"), {})
    path.write_bytes(b"packagf")
    assert store.find(KEY) is None
    path.with_suffix(".json").write_text("{not json")
    assert store.find(KEY) is None


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="permissions are POSIX")
def test_what_others_may_write_is_not_trusted(tmp_path):
    store = StepStore(tmp_path / "aot")
    path = store.save(KEY, write(b"package"), {})
    path.chmod(0o620)  # group-writable: someone else could have put it there
    assert store.find(KEY) is None
    path.chmod(0o600)
    assert store.find(KEY) == path
    path.parent.chmod(0o777)  # a folder anyone may write: nothing in it is loaded, nothing is kept there
    assert store.find(KEY) is None
    elsewhere = store.save({**KEY, "shape": [2, 64]}, write(b"other"), {})
    assert elsewhere.parent != path.parent and elsewhere.read_bytes() == b"other"
    remove_temporary(elsewhere)
    assert not elsewhere.parent.exists()
    assert not any("[2, 64]" in p.read_text() for p in path.parent.glob("*.json"))


def test_a_failed_write_leaves_nothing(tmp_path):
    def broken(path):
        path.write_bytes(b"half a pack")
        raise RuntimeError("compiler died")

    store = StepStore(tmp_path / "aot")
    with pytest.raises(RuntimeError, match="compiler died"):
        store.save(KEY, broken, {})
    assert list((tmp_path / "aot").iterdir()) == []
    assert store.find(KEY) is None
    if hasattr(os, "getuid"):  # where the folder is not private, the temporary one goes too
        (tmp_path / "aot").chmod(0o777)
        before = set(Path(tempfile.gettempdir()).glob("tiny-decoder-step-*"))
        with pytest.raises(RuntimeError, match="compiler died"):
            store.save(KEY, broken, {})
        assert set(Path(tempfile.gettempdir()).glob("tiny-decoder-step-*")) == before


def test_pruning_drops_the_least_recently_used_and_nothing_it_did_not_write(tmp_path):
    store = StepStore(tmp_path / "aot", max_bytes=25)
    old = store.save({"n": 1}, write(b"x" * 10), {})
    mid = store.save({"n": 2}, write(b"y" * 10), {})
    os.utime(old, (time.time() - 100, time.time() - 100))
    os.utime(mid, (time.time() - 50, time.time() - 50))
    assert store.find({"n": 1}) == old  # a use makes it the most recent
    foreign = [tmp_path / "aot" / name for name in ("notes.txt", "model.pt2", "a" * 63 + ".pt2")]
    for f in foreign:
        f.write_bytes(b"z" * 100)
    stale, fresh = tmp_path / "aot" / f".{'b' * 64}.123.tmp.pt2", tmp_path / "aot" / f".{'c' * 64}.456.tmp.pt2"
    stale.write_bytes(b"s")
    fresh.write_bytes(b"f")
    os.utime(stale, (time.time() - 2 * 86_400, time.time() - 2 * 86_400))
    (tmp_path / "aot" / f"{'d' * 64}.pt2").symlink_to(tmp_path / "nowhere")  # a file that vanished mid-prune
    new = store.save({"n": 3}, write(b"w" * 10), {})  # 30 bytes of ours > 25: the least recently used goes
    assert not mid.exists() and not mid.with_suffix(".json").exists()
    assert old.exists() and new.exists()
    assert all(f.exists() for f in foreign) and fresh.exists() and not stale.exists()


def test_step_counts_add_up_per_model_and_survive_a_damaged_file(tmp_path):
    assert StepStore(tmp_path / "aot").count("a", 11) == 11
    assert StepStore(tmp_path / "aot").count("a", 11) == 22
    assert StepStore(tmp_path / "aot").count("b", 5) == 5
    assert StepStore(tmp_path / "aot").steps("a") == 22 and StepStore(tmp_path / "aot").steps("c") == 0
    (tmp_path / "aot" / "steps.json").write_text('{"a": "many", "b": -3')
    assert StepStore(tmp_path / "aot").steps("a") == 0
    assert StepStore(tmp_path / "aot").count("a", 4) == 4
    assert json.loads((tmp_path / "aot" / "steps.json").read_text()) == {"a": 4}
