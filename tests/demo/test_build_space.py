"""scripts/build_space.py: a Space folder that runs app.py on the Hub models given, written only into a folder the
script owns; the built app started as a Space starts it (GRADIO_SERVER_NAME=0.0.0.0) listens on every address."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from conftest import ROOT, run_script


def build(out, *models, extra=()):
    return run_script("build_space", ["--model", *(models or ["someone/tiny-stories"]), "--output_dir", str(out), *extra])


def test_the_space_folder_holds_the_app_the_package_and_its_metadata(tmp_path):
    out = tmp_path / "space"
    build(out)
    assert (out / "app.py").read_text() == (ROOT / "app.py").read_text()
    assert (out / "tiny_decoder" / "demo.py").exists() and not list(out.rglob("__pycache__"))
    assert (out / "models.txt").read_text().split() == ["someone/tiny-stories"]
    meta = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["models"] == ["someone/tiny-stories"]
    pins = (out / "requirements.txt").read_text().split()
    assert any(p.startswith("torch==") for p in pins) and any(p.startswith("transformers==") for p in pins)
    assert not any("+" in p for p in pins)  # no local-version labels (torch 2.13.0+cpu is not on PyPI)
    marker = json.loads((out / ".tiny-decoder-space.json").read_text())
    assert "app.py" in marker["files"] and "tiny_decoder/demo.py" in marker["files"]
    with pytest.raises(ValueError, match="--overwrite_output_dir true"):
        build(out)
    build(tmp_path / "cpu", extra=["--cpu_torch", "true"])
    assert (
        (tmp_path / "cpu" / "requirements.txt").read_text().startswith("--extra-index-url https://download.pytorch.org/whl/cpu\n")
    )


def test_overwrite_replaces_only_its_own_files_and_refuses_foreign_ones(tmp_path):
    out = tmp_path / "space"
    build(out, "someone/a")
    stale = out / "tiny_decoder" / "stale.py"  # a module an older build wrote, listed in its marker
    stale.write_text("# old")
    marker = out / ".tiny-decoder-space.json"
    marker.write_text(json.dumps({"files": json.loads(marker.read_text())["files"] + ["tiny_decoder/stale.py"]}))
    build(out, "someone/b", extra=["--overwrite_output_dir", "true"])
    assert (out / "models.txt").read_text().split() == ["someone/b"] and not stale.exists()

    (out / "notes.txt").write_text("mine")
    (out / "src").mkdir()
    (out / "src" / "work.py").write_text("mine too")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(ValueError, match=r"did not write \(notes.txt, src/work.py\); nothing was changed"):
        build(out, "someone/c", extra=["--overwrite_output_dir", "true"])
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before and (out / "notes.txt").read_text() == "mine"


def test_a_folder_it_did_not_write_is_never_deleted(tmp_path, monkeypatch):
    repo = tmp_path / "repo"  # a folder that holds an app.py, as this repository does
    (repo / ".git").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (repo / "app.py").write_text("print('mine')\n")
    monkeypatch.chdir(repo)
    with pytest.raises(ValueError, match=r"did not write \(.git/HEAD, app.py\)"):
        build(".", extra=["--overwrite_output_dir", "true"])
    assert (repo / "app.py").read_text() == "print('mine')\n" and (repo / ".git" / "HEAD").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        build(tmp_path / "file")


def test_local_models_are_refused_in_one_line(tmp_path, story_model):
    with pytest.raises(ValueError, match="a local path; a Space loads models from the Hub"):
        build(tmp_path / "s", str(tmp_path))
    with pytest.raises(ValueError, match="--model is required"):
        run_script("build_space", ["--output_dir", str(tmp_path / "s")])
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "build_space.py"),
            "--model",
            str(story_model),
            "--output_dir",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "a local path" in done.stderr
    build(tmp_path / "gpt2", "gpt2")  # a Hub id without an owner is a Hub id


def test_the_app_reads_a_spaces_models_file(tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    import importlib.util

    out = tmp_path / "space"
    build(out, "someone/tiny-stories", "someone/student")
    spec = importlib.util.spec_from_file_location("space_app", out / "app.py")
    app = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "space_app", app)  # gradio looks up the module of app.py's component classes
    spec.loader.exec_module(app)
    monkeypatch.delenv("TINY_DECODER_MODELS", raising=False)
    assert app.default_models() == ["someone/tiny-stories", "someone/student"]  # models.txt beside app.py
    monkeypatch.setenv("TINY_DECODER_MODELS", "a/b,c/d")
    assert app.default_models() == ["a/b", "c/d"]  # the Space's variable wins


def listening(port: int) -> set[str]:
    """The local addresses listening on `port` (from /proc/net/tcp: what `ss -ltn` shows)."""
    found = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, p = local.split(":")
        if state == "0A" and int(p, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def start_space(folder, port, story_model, **env):
    """The built app.py as a Space runs it: `python app.py` in its folder, models from the environment."""
    environment = {k: v for k, v in os.environ.items() if k != "GRADIO_SERVER_NAME"}
    environment.update(TINY_DECODER_MODELS=str(story_model), GRADIO_SERVER_PORT=str(port), **env)
    process = subprocess.Popen(
        [sys.executable, "app.py"], cwd=folder, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    end = time.time() + 120
    while time.time() < end and process.poll() is None:
        if listening(port):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
                return process
            except OSError:
                pass
        time.sleep(0.3)
    process.kill()
    raise AssertionError(f"the Space app did not serve on port {port}: {process.stderr.read()[-2000:]}")


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads listening sockets from /proc/net/tcp (Linux)")
def test_the_built_app_listens_where_the_space_says(tmp_path, story_model):
    pytest.importorskip("gradio")
    from test_app import free_port

    out = tmp_path / "space"
    build(out)
    for name, expected in (("0.0.0.0", {"0.0.0.0"}), (None, {"127.0.0.1"})):
        port = free_port()
        env = {"GRADIO_SERVER_NAME": name} if name else {}
        process = start_space(out, port, story_model, **env)
        try:
            assert listening(port) == expected
        finally:
            process.terminate()
            process.wait(timeout=30)


def pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not pypi_reachable(), reason="needs the package index (pypi.org) to resolve requirements.txt")
def test_the_requirements_resolve_against_the_package_index(tmp_path):
    out = tmp_path / "space"
    build(out)
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), "-r", str(out / "requirements.txt")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]

    def key(name):
        return name.lower().replace("_", "-")

    chosen = {key(i["metadata"]["name"]): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    pins = dict(line.split("==") for line in (out / "requirements.txt").read_text().split())
    assert all(chosen[key(name)] == v for name, v in pins.items())  # each pin exists as written on the index
