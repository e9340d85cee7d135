"""Parameter table, shape trace and attention maps: totals agree with the model, the trace covers every
block, the weights are causal distributions, the files are valid."""

import json
from html.parser import HTMLParser

import pytest
import torch

from conftest import run_script, small_config
from tiny_decoder import TinyDecoderForCausalLM
from tiny_decoder.evaluation.introspection import attention_maps, parameter_table, trace_shapes
from tiny_decoder.evaluation.throughput import flops_per_token


@pytest.mark.parametrize("tied", [True, False])
def test_parameter_table_totals_match_the_model(tied):
    model = TinyDecoderForCausalLM(small_config(tie_word_embeddings=tied))
    table = parameter_table(model, seq_len=32)
    unique = sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once
    assert table["total"] == unique == model.num_parameters()
    assert sum(table["by_kind"].values()) == unique == sum(table["by_module"].values())
    head = model.lm_head.weight.numel()
    assert table["total_counting_tied_head_twice"] == unique + (head if tied else 0)
    assert ("head" in table["by_kind"]) == (not tied)
    assert table["bytes_by_dtype"] == {"float32": 4 * unique}
    assert table["train_flops_per_token"] == flops_per_token(unique, model.config, 32)
    attn = sum(p.numel() for n, p in model.named_parameters() if "self_attn" in n)
    assert table["by_kind"]["attention"] == attn


def test_trace_covers_every_block_with_named_shapes():
    model = TinyDecoderForCausalLM(small_config(num_hidden_layers=3)).eval()
    trace = trace_shapes(model, torch.randint(3, 60, (2, 7)))
    for i in range(3):
        assert f"model.layers.{i} (Block): [(batch=2, seq=7, hidden=32)" in trace
        assert (
            f"model.layers.{i}.self_attn.k_proj (Linear): [(batch=2, seq=7, hidden=32)] -> (batch=2, seq=7, kv_heads*head_dim=16)"
            in trace
        )
    assert "lm_head (Linear): [(batch=2, seq=7, hidden=32)] -> (batch=2, seq=7, vocab=67)" in trace


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.script = [], ""

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        if self.tags and self.tags[-1] == "script":
            self.script += data


def test_attention_maps_are_causal_distributions_and_files_are_valid(tmp_path, tiny_tokenizer):
    torch.manual_seed(0)
    model = TinyDecoderForCausalLM(small_config(vocab_size=len(tiny_tokenizer))).eval()
    maps = attention_maps(model, tiny_tokenizer, "Lily saw a red ball. Tom found the cat.", tmp_path, heads=[0, 2])
    w = maps["weights"]
    layers, heads, t, _ = w.shape
    assert (layers, heads) == (2, 2) and t == len(maps["tokens"])
    torch.testing.assert_close(w.sum(-1), torch.ones(layers, heads, t))
    assert torch.all(w.triu(1) == 0)
    assert (tmp_path / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(tmp_path / "attention.png")  # decodes as an image, not just a header
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0
    page = _Page()
    page.feed((tmp_path / "attention.html").read_text())
    assert {"html", "select", "table", "script"} <= set(page.tags) and "http" not in page.script  # nothing fetched
    stats = json.loads((tmp_path / "attention_stats.json").read_text())
    assert [(s["layer"], s["head"]) for s in stats] == [(0, 0), (0, 2), (1, 0), (1, 2)]
    assert all(0 <= s["entropy"] <= s["max_entropy"] + 1e-6 for s in stats)
    with pytest.raises(ValueError, match="layer index 5 is out of range"):
        attention_maps(model, tiny_tokenizer, "Lily.", tmp_path, layers=[5])
    with pytest.raises(ValueError, match="head index 4 is out of range"):
        attention_maps(model, tiny_tokenizer, "Lily.", tmp_path, heads=[4])
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="eager kernel's weights"):
        attention_maps(model, tiny_tokenizer, "Lily.", tmp_path)


@pytest.mark.skipif(
    not any(__import__("shutil").which(b) for b in ("chromium", "chromium-browser")), reason="no headless chromium installed"
)
def test_attention_page_renders_in_headless_chromium(tmp_path, tiny_tokenizer):
    import shutil
    import subprocess

    model = TinyDecoderForCausalLM(small_config(vocab_size=len(tiny_tokenizer))).eval()
    maps = attention_maps(model, tiny_tokenizer, "Lily saw a cat.", tmp_path)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", f"file://{maps['html']}"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert dom.count("<td") >= len(maps["tokens"]) ** 2 and "entropy" in dom  # the script drew the grid


def test_inspect_script_writes_everything(tmp_path, tiny_tokenizer):
    model = TinyDecoderForCausalLM(small_config(vocab_size=len(tiny_tokenizer))).eval()
    model.save_pretrained(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    run_script(
        "inspect_model",
        ["--model_name_or_path", str(tmp_path / "m"), "--output_dir", str(tmp_path / "out"), "--text", "Tom found a boat."],
    )
    for f in ("parameters.md", "shapes.txt", "attention.png", "attention.html", "attention_stats.json"):
        assert (tmp_path / "out" / f).stat().st_size > 0
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a saved model folder"):
        run_script("inspect_model", ["--model_name_or_path", str(tmp_path / "empty")])
