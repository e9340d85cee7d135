"""--format hf (or llama): a plain LlamaForCausalLM folder - Qwen3ForCausalLM for a QK-norm model - with our logits
and greedy tokens, loading in a Python without tiny_decoder with no prompt and no warning; configs neither can express
are refused with every blocking field."""

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig

from conftest import run_script, small_config
from tiny_decoder import TinyDecoderForCausalLM
from tiny_decoder.export.llama import _card, llama_blockers, to_llama

CONFIGS = {
    "mha_tied": {},
    "gqa": dict(num_key_value_heads=2),
    "mqa_untied": dict(num_key_value_heads=1, tie_word_embeddings=False),
    "pruned_head_dim": dict(head_dim=12, intermediate_size=40),
    "rope_linear": dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
    "rope_llama3": dict(
        rope_parameters={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
            "rope_theta": 500000.0,
        }
    ),
    "biases": dict(attention_bias=True, mlp_bias=True),
    "qk_norm_qwen3": dict(qk_norm=True),
    "qk_norm_qwen3_mqa_biases_untied": dict(qk_norm=True, num_key_value_heads=1, attention_bias=True, tie_word_embeddings=False),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_llama_gives_our_logits_and_greedy_tokens(name):
    torch.manual_seed(0)
    model = TinyDecoderForCausalLM(small_config(**CONFIGS[name])).eval()
    llama = to_llama(model)
    assert type(llama).__name__ == ("Qwen3ForCausalLM" if name.startswith("qk_norm") else "LlamaForCausalLM")
    if name.startswith("qk_norm"):  # norms away from 1, so a dropped one would show
        with torch.no_grad():
            for ours, theirs in zip(model.model.layers, llama.model.layers):
                ours.self_attn.q_norm.weight.uniform_(0.5, 1.5)
                theirs.self_attn.q_norm.weight.copy_(ours.self_attn.q_norm.weight)
    ids = torch.randint(3, 67, (2, 13))
    with torch.no_grad():
        torch.testing.assert_close(llama(ids).logits, model(ids).logits, atol=1e-5, rtol=0)
        kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)
        assert torch.equal(llama.generate(ids[:1, :4], **kw), model.generate(ids[:1, :4], **kw))


def test_every_field_that_blocks_the_export_is_named():
    config = small_config(position_embedding="alibi", norm="layernorm", hidden_act="gelu", residual="orthogonal_parallel")
    assert llama_blockers(config) == [
        "position_embedding='alibi'",
        "norm='layernorm'",
        "hidden_act='gelu'",
        "residual='orthogonal_parallel'",
    ]
    assert llama_blockers(small_config()) == []
    assert llama_blockers(small_config(norm_position="post", attention_type="linear")) == [
        "norm_position='post'",
        "attention_type='linear'",
    ]
    assert llama_blockers(small_config(sliding_window=8, early_exit_threshold=0.9)) == [
        "sliding_window=8",
        "early_exit_threshold=0.9",
    ]
    partial = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
    assert llama_blockers(small_config(rope_parameters=partial)) == ["rope_parameters.partial_rotary_factor=0.5"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_tokenizer):
    """A saved tiny-decoder folder with a chat template (as an SFT model has), and a LayerNorm one."""
    from transformers import AutoTokenizer

    from tiny_decoder.data.chat import add_chat_template

    root = tmp_path_factory.mktemp("export")
    tiny_tokenizer.save_pretrained(root / "tok")
    tok = AutoTokenizer.from_pretrained(root / "tok")  # a copy: the session's tokenizer stays without a template
    add_chat_template(tok)
    for name, over in (("native", {}), ("layernorm", {"norm": "layernorm"}), ("qk_norm", {"qk_norm": True})):
        torch.manual_seed(0)
        cfg = small_config(
            vocab_size=len(tok),
            max_position_embeddings=32,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            **over,
        )
        TinyDecoderForCausalLM(cfg).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("folder, cls", [("native", "LlamaForCausalLM"), ("qk_norm", "Qwen3ForCausalLM")])
def test_the_exported_folder_loads_without_the_package_no_prompt_no_warning(saved, tmp_path, folder, cls):
    out = tmp_path / "llama"
    run_script("export", ["--model_name_or_path", str(saved / folder), "--output_dir", str(out), "--format", "hf"])
    assert not any(p.suffix == ".py" for p in out.iterdir()) and (out / "model.safetensors").exists()
    card = (out / "README.md").read_text()
    assert "base_model:" not in card and str(saved) not in card and "library_name: transformers" in card  # no local path
    assert "base_model: someone/tiny\n" in _card(AutoConfig.from_pretrained(out), "someone/tiny")  # a Hub id is linked
    ids = [5, 9, 17, 3, 11, 40]
    with torch.no_grad():
        ours = TinyDecoderForCausalLM.from_pretrained(saved / folder).eval()(torch.tensor([ids])).logits
    code = f"""
import sys, json, warnings
sys.modules["tiny_decoder"] = None  # a Python where the package is not installed
warnings.simplefilter("error")
import torch
from transformers import AutoConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=False).eval()
tok = AutoTokenizer.from_pretrained({str(out)!r}, trust_remote_code=False)
chat = tok.apply_chat_template([{{"role": "user", "content": "hi"}}], add_generation_prompt=True, tokenize=False)
with torch.no_grad():
    logits = model(torch.tensor([{ids}])).logits
print(json.dumps({{"class": type(model).__name__, "chat": chat, "logits": logits.tolist()}}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "warning"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "custom code" not in proc.stderr and "warn" not in proc.stderr.lower(), proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["class"] == cls and "<|assistant|>" in result["chat"]  # the chat template survived
    torch.testing.assert_close(torch.tensor(result["logits"]), ours, atol=1e-5, rtol=0)


def test_bad_exports_are_refused_in_one_line_and_write_nothing(saved, tmp_path):
    with pytest.raises(ValueError, match=r"not expressible as a Llama \(norm='layernorm' differ.*native folder"):
        run_script("export", ["--model_name_or_path", str(saved / "layernorm"), "--output_dir", str(tmp_path / "a")])
    assert not (tmp_path / "a").exists()
    with pytest.raises(ValueError, match=r"--format 'tflite' is not available"):
        run_script(
            "export", ["--model_name_or_path", str(saved / "native"), "--output_dir", str(tmp_path / "b"), "--format", "tflite"]
        )
    with pytest.raises(ValueError, match=r"'.*nope' does not exist"):
        run_script("export", ["--model_name_or_path", str(tmp_path / "nope"), "--output_dir", str(tmp_path / "c")])
    out = tmp_path / "d"
    run_script("export", ["--model_name_or_path", str(saved / "native"), "--output_dir", str(out)])
    with pytest.raises(ValueError, match="already holds a Llama/Qwen3 export's output"):
        run_script("export", ["--model_name_or_path", str(saved / "native"), "--output_dir", str(out)])
    run_script(
        "export", ["--model_name_or_path", str(saved / "native"), "--output_dir", str(out), "--overwrite_output_dir", "true"]
    )
    with pytest.raises(ValueError, match="holds files a Llama/Qwen3 export does not write"):
        run_script("export", ["--model_name_or_path", str(saved / "native"), "--output_dir", str(saved / "layernorm")])


def fake_hub(monkeypatch):
    """The Hub's upload calls, recorded instead of sent (the Hub cannot be reached here)."""
    import huggingface_hub

    import tiny_decoder.training.trainer as trainer_module

    uploads = []

    def upload_folder(self, repo_id, folder_path, **kw):
        from pathlib import Path

        folder = Path(folder_path)
        uploads.append(
            {
                "repo": repo_id,
                "files": sorted(p.name for p in folder.iterdir()),
                "config": json.loads((folder / "config.json").read_text()),
                "card": (folder / "README.md").read_text(),
            }
        )

    monkeypatch.setattr(trainer_module, "check_hub_access", lambda: None)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, *a, **k: None)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return uploads


def test_push_to_hub_can_push_the_llama_export(workdir, tmp_path, monkeypatch):
    from conftest import cli_args, run

    uploads = fake_hub(monkeypatch)
    out = tmp_path / "run"
    run(cli_args(workdir, out, max_steps=2, push_to_hub="true", hub_model_id="me/tiny", hub_format="llama"))
    (up,) = uploads
    assert up["repo"] == "me/tiny" and up["config"]["architectures"] == ["LlamaForCausalLM"]
    assert "model.safetensors" in up["files"] and "tokenizer.json" in up["files"]
    assert not any(f.endswith(".py") for f in up["files"]) and "auto_map" not in up["config"]
    assert "base_model:" not in up["card"] and str(out) not in up["card"]  # the run folder is no Hub model


def test_pushing_a_llama_export_of_a_non_llama_config_is_refused_before_training(workdir, tmp_path, monkeypatch):
    from conftest import cli_args, run

    fake_hub(monkeypatch)
    with pytest.raises(ValueError, match=r"not expressible as a Llama \(norm='layernorm'"):
        run(
            cli_args(
                workdir,
                tmp_path / "run",
                max_steps=2,
                push_to_hub="true",
                hub_model_id="me/tiny",
                hub_format="llama",
                config_overrides="norm=layernorm",
            )
        )
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_pruned_model_exports_exactly():
    from tiny_decoder.pruning import prune_model

    torch.manual_seed(0)
    model = TinyDecoderForCausalLM(small_config(hidden_size=64, num_attention_heads=4, num_key_value_heads=2)).eval()
    calibration = [torch.randint(3, 67, (4, 12)) for _ in range(2)]
    small, _ = prune_model(model, calibration, num_heads=2, intermediate_size=96)
    assert small.config.head_dim * small.config.num_attention_heads != small.config.hidden_size  # explicit head_dim
    llama = to_llama(small.eval())
    ids = torch.randint(3, 67, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(llama(ids).logits, small(ids).logits, atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["llama", "gguf", "onnx"])
def test_non_finite_weights_are_refused_naming_the_tensor_and_nothing_is_written(saved, tmp_path, fmt):
    from transformers import AutoModelForCausalLM

    broken = tmp_path / "broken"
    model = AutoModelForCausalLM.from_pretrained(saved / "native")
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[3, 2] = float("nan")
    model.save_pretrained(broken)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((saved / "native" / name).read_bytes())
    out = tmp_path / "out"
    with pytest.raises(
        ValueError, match=r"weight model\.layers\.1\.mlp\.down_proj\.weight holds 1 non-finite value.*nothing was exported"
    ):
        run_script("export", ["--model_name_or_path", str(broken), "--output_dir", str(out), "--format", fmt])
    assert not out.exists()


@pytest.mark.slow
def test_linear_attention_onnx_is_refused_in_one_line(tmp_path, tiny_tokenizer):
    pytest.importorskip("onnxscript")
    source = tmp_path / "linear"
    cfg = small_config(vocab_size=len(tiny_tokenizer), attention_type="linear", position_embedding="none")
    TinyDecoderForCausalLM(cfg).save_pretrained(source)
    tiny_tokenizer.save_pretrained(source)
    out = tmp_path / "onnx"
    with pytest.raises(ValueError, match="attention_type='linear' keeps a running state"):
        run_script("export", ["--model_name_or_path", str(source), "--output_dir", str(out), "--format", "onnx"])
    assert not out.exists()


@pytest.mark.slow
def test_exported_files_are_readable_like_every_other_file(saved, tmp_path):
    out = tmp_path / "llama"
    run_script("export", ["--model_name_or_path", str(saved / "native"), "--output_dir", str(out)])
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir() if p.is_file()}
    assert modes["model.safetensors"] == 0o666 & ~umask and set(modes.values()) == {0o666 & ~umask}, modes


def test_the_trainer_asks_for_the_exporter_a_hub_format_needs(workdir, tmp_path, monkeypatch):
    """Training never imports the export formats: a library user who asks for --hub_format llama passes the exporter
    (the scripts do), and is told so in one line before any work."""
    from conftest import cli_args
    from tiny_decoder.cli import parse_args
    from tiny_decoder.data import DataArguments
    from tiny_decoder.data.tokenizer import TokenizerArguments
    from tiny_decoder.training import ModelArguments, TrainArguments, Trainer

    fake_hub(monkeypatch)
    argv = cli_args(workdir, tmp_path / "run", max_steps=2, push_to_hub="true", hub_model_id="me/tiny", hub_format="llama")
    groups = parse_args((ModelArguments, DataArguments, TokenizerArguments, TrainArguments), argv)
    with pytest.raises(ValueError, match="--hub_format llama needs the Trainer's hub_exporter"):
        Trainer(*groups)
    assert not (tmp_path / "run").exists()
