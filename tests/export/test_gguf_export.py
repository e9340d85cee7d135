"""--format gguf: one llama.cpp file, read back by a reader we did not write (transformers' GGUF loader): the same
token ids, logits equal in f32 and within a stated tolerance in f16 / q8_0, the same greedy tokens."""

import pytest
import torch

from conftest import run_script, small_config
from tiny_decoder import TinyDecoderForCausalLM

pytest.importorskip("gguf")

TEXT = 'Lily saw a big dog. "Hello!" she said, and the dog ran to the tree.'
# max |logit difference| allowed, as a fraction of the largest |logit| (f16: 11-bit mantissa; q8_0: 8-bit blocks)
TOLERANCE = {"f32": 1e-5, "f16": 5e-3, "q8_0": 5e-2}


@pytest.fixture(scope="module")
def source(tmp_path_factory, tiny_tokenizer):
    """A saved tiny-decoder (GQA, untied head, sharpened so greedy choices are clear) with its tokenizer."""
    root = tmp_path_factory.mktemp("gguf")
    torch.manual_seed(0)
    cfg = small_config(
        vocab_size=len(tiny_tokenizer),
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        max_position_embeddings=64,
        eos_token_id=tiny_tokenizer.eos_token_id,
        bos_token_id=tiny_tokenizer.bos_token_id,
        pad_token_id=tiny_tokenizer.pad_token_id,
    )
    model = TinyDecoderForCausalLM(cfg)
    with torch.no_grad():
        model.lm_head.weight.mul_(40)
    model.save_pretrained(root / "model")
    tiny_tokenizer.save_pretrained(root / "model")
    return root / "model"


@pytest.mark.parametrize("outtype", ["f32", "f16", "q8_0"])
def test_transformers_reads_our_gguf_back(source, tmp_path, outtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = run_script(
        "export", ["--model_name_or_path", str(source), "--format", "gguf", "--outtype", outtype, "--output_dir", str(tmp_path)]
    )
    assert path.name == f"model-{outtype}.gguf" and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    ours_tok = AutoTokenizer.from_pretrained(source)
    theirs_tok = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    ids = ours_tok(TEXT)["input_ids"]
    assert theirs_tok(TEXT)["input_ids"] == ids
    ours = TinyDecoderForCausalLM.from_pretrained(source).eval()
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name).eval()
    assert type(theirs).__name__ == "LlamaForCausalLM"
    x = torch.tensor([ids])
    with torch.no_grad():
        a, b = ours(x).logits, theirs(x).logits
        assert (a - b).abs().max() <= TOLERANCE[outtype] * a.abs().max()
        kw = dict(max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=None)
        assert torch.equal(theirs.generate(x[:, :6], **kw), ours.generate(x[:, :6], **kw))


def test_gguf_refusals(source, tmp_path):
    with pytest.raises(ValueError, match=r"--outtype 'q4_k' is not a GGUF type written here"):
        run_script(
            "export",
            ["--model_name_or_path", str(source), "--format", "gguf", "--outtype", "q4_k", "--output_dir", str(tmp_path / "a")],
        )
    with pytest.raises(ValueError, match=r"--outtype q8_0 is for --format gguf"):
        run_script("export", ["--model_name_or_path", str(source), "--outtype", "q8_0", "--output_dir", str(tmp_path / "b")])
    out = tmp_path / "c"
    run_script("export", ["--model_name_or_path", str(source), "--format", "gguf", "--output_dir", str(out)])
    with pytest.raises(ValueError, match="already holds a GGUF export's output"):
        run_script("export", ["--model_name_or_path", str(source), "--format", "gguf", "--output_dir", str(out)])


def test_llama_cpp_itself_runs_our_gguf(source, tmp_path):
    """llama.cpp (through llama-cpp-python, the optional [llamacpp] extra) decodes our f32 file greedily to our tokens."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install -e '.[llamacpp]')")
    path = run_script("export", ["--model_name_or_path", str(source), "--format", "gguf", "--output_dir", str(tmp_path)])
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, verbose=False, logits_all=False)
    prompt = [5, 9, 17, 3, 11, 40]
    theirs = []
    for token in llm.generate(prompt, top_k=1, top_p=1.0, temp=0.0):
        theirs.append(token)
        if len(theirs) == 10:
            break
    ours = TinyDecoderForCausalLM.from_pretrained(source).eval()
    with torch.no_grad():
        ref = ours.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert theirs == ref[0, len(prompt) :].tolist()


def test_a_qk_norm_model_is_refused_as_gguf_and_pointed_at_the_qwen3_folder():
    from conftest import small_config
    from tiny_decoder.export.gguf import check_gguf

    with pytest.raises(ValueError, match=r"no QK-norm .*--format hf writes a Qwen3ForCausalLM folder"):
        check_gguf(small_config(qk_norm=True))
