"""scripts/build_space.py: a Space folder that runs app.py on the Hub models given."""

import pytest
import yaml

from conftest import run_script


def test_the_space_folder_holds_the_app_the_package_and_its_metadata(tmp_path):
    out = tmp_path / "space"
    run_script("build_space", ["--model", "someone/tiny-stories", "--output_dir", str(out)])
    assert (out / "app.py").read_text() == (run_script.__globals__["ROOT"] / "app.py").read_text()
    assert (out / "tiny_decoder" / "demo.py").exists() and not list(out.rglob("__pycache__"))
    assert (out / "models.txt").read_text().split() == ["someone/tiny-stories"]
    meta = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["models"] == ["someone/tiny-stories"]
    pins = (out / "requirements.txt").read_text().split()
    assert any(p.startswith("torch==") for p in pins) and any(p.startswith("transformers==") for p in pins)
    with pytest.raises(ValueError, match="--overwrite_output_dir true"):
        run_script("build_space", ["--model", "someone/tiny-stories", "--output_dir", str(out)])


def test_local_models_and_foreign_folders_are_refused(tmp_path):
    with pytest.raises(ValueError, match="a local path; a Space loads models from the Hub"):
        run_script("build_space", ["--model", str(tmp_path), "--output_dir", str(tmp_path / "s")])
    with pytest.raises(ValueError, match="--model is required"):
        run_script("build_space", ["--output_dir", str(tmp_path / "s")])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds other files"):
        run_script("build_space", ["--model", "a/b", "--output_dir", str(tmp_path / "other")])


def test_the_app_reads_a_spaces_models_file(tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    import importlib.util

    out = tmp_path / "space"
    run_script("build_space", ["--model", "someone/tiny-stories", "someone/student", "--output_dir", str(out)])
    spec = importlib.util.spec_from_file_location("space_app", out / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    monkeypatch.delenv("TINY_DECODER_MODELS", raising=False)
    assert app.default_models() == ["someone/tiny-stories", "someone/student"]  # models.txt beside app.py
    monkeypatch.setenv("TINY_DECODER_MODELS", "a/b,c/d")
    assert app.default_models() == ["a/b", "c/d"]  # the Space's variable wins
