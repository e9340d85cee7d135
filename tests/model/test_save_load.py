"""save_pretrained -> Auto* loading, with the package and without it (trust_remote_code)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

import tiny_decoder
from conftest import small_config
from tiny_decoder import TinyDecoderForCausalLM, TinyDecoderModel


@pytest.mark.parametrize("pe", ["rope", "learned"])
@pytest.mark.parametrize("tied", [True, False])
def test_reload_gives_identical_logits(tmp_path, pe, tied):
    torch.manual_seed(0)
    model = TinyDecoderForCausalLM(small_config(position_embedding=pe, tie_word_embeddings=tied)).eval()
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    # The remote code a saved folder carries is exactly tiny_decoder/model/ (its __init__ aside), nothing more.
    model_dir = Path(tiny_decoder.model.__file__).parent
    assert {f for f in files if f.endswith(".py")} == {p.name for p in model_dir.glob("*.py")} - {"__init__.py"}
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForCausalLM",
        "AutoModelForSequenceClassification",
        "AutoModelForTokenClassification",
        "AutoModelForQuestionAnswering",
    }

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is TinyDecoderForCausalLM
    ids = torch.randint(3, 60, (2, 10))
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    if tied:
        assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    assert type(AutoConfig.from_pretrained(tmp_path)).__name__ == "TinyDecoderConfig"
    assert type(AutoModel.from_pretrained(tmp_path)) is TinyDecoderModel


@pytest.mark.slow
def test_trust_remote_code_load_without_the_package(tmp_path):
    torch.manual_seed(0)
    model = TinyDecoderForCausalLM(small_config(position_embedding="alibi")).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    ids = torch.randint(3, 60, (2, 10))
    expected = {"ids": ids, "logits": model(ids).logits, "hidden": model.model(ids).last_hidden_state}
    torch.save(expected, tmp_path / "expected.pt")  # test-made file
    script = textwrap.dedent(f"""
        import sys
        sys.modules["tiny_decoder"] = None  # any `import tiny_decoder` now fails
        try:
            import tiny_decoder
            raise SystemExit("tiny_decoder is still importable")
        except ImportError:
            pass
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert "tiny_decoder" not in type(model).__module__.split(".")[0], type(model).__module__
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        assert torch.equal(model(expected["ids"]).logits, expected["logits"])
        from transformers import AutoModel
        base = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert torch.equal(base(expected["ids"]).last_hidden_state, expected["hidden"])
        out = model.generate(expected["ids"][:, :3], max_new_tokens=5, do_sample=False)
        assert out.shape == (2, 8)
        from transformers import AutoModelForSequenceClassification
        head = AutoModelForSequenceClassification.from_pretrained({str(folder)!r}, trust_remote_code=True, num_labels=3)
        assert torch.equal(head.model(expected["ids"]).last_hidden_state, expected["hidden"])  # same body
        assert head(expected["ids"]).logits.shape == (2, 3)
        print("REMOTE_OK", type(model).__module__)
    """)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE_OK" in result.stdout
