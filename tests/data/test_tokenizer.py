import pytest
from transformers import AutoTokenizer

from conftest import generated_documents, shared_tinystories
from tiny_decoder.data.tokenizer import SPECIAL_TOKENS, load_tokenizer, train_bpe_tokenizer

ROUND_TRIP = [
    "Once upon a time, there was a little cat.",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n\n\nand   runs of spaces",
    "unicode: Zoë, Ángel, 北京, Ελληνικά, emoji 🙂🐱‍👤, combining é",
    "special-token-like: <|endoftext|> <|pad|> <|bos|> <s> </s> [PAD] <unk>",
    "",
    "\u200b zero width and \u00a0 nbsp",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip_is_exact(tiny_tokenizer, text):
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.decode(ids) == text


def test_saved_folder_loads_with_auto_tokenizer(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = ROUND_TRIP[3]
    assert loaded(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]
    assert loaded.decode(loaded(text, add_special_tokens=False)["input_ids"]) == text
    assert loaded.model_max_length == 32
    assert [loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id] == [0, 1, 2]
    assert loaded.eos_token == SPECIAL_TOKENS["eos_token"]


def test_training_consumes_an_iterator_of_batches():
    seen = []

    def batches():
        docs = generated_documents(200, seed=3)
        for i in range(0, 200, 50):
            seen.append(i)
            yield docs[i : i + 50]

    tok = train_bpe_tokenizer(batches(), vocab_size=280)
    assert seen == [0, 50, 100, 150] and len(tok) == 280
    # merges were learned: common words take fewer tokens than bytes
    assert len(tok("Lily found the cat.")["input_ids"]) < len("Lily found the cat.")


def test_too_small_vocabulary_is_refused():
    with pytest.raises(ValueError, match="vocab_size=100"):
        train_bpe_tokenizer([["a b c"]], vocab_size=100)


def test_load_tokenizer_missing_folder_names_the_path(tmp_path):
    with pytest.raises(OSError, match="nowhere"):
        load_tokenizer(str(tmp_path / "nowhere"))


@pytest.mark.skipif(shared_tinystories() is None, reason="../shared/data/tinystories is absent (set TINY_DECODER_DATA)")
def test_tinystories_4096_bpe_characters_per_token():
    from tiny_decoder.data import DataArguments, load_raw_dataset
    from tiny_decoder.data.tokenizer import text_batches

    raw = load_raw_dataset(DataArguments(dataset_path=str(shared_tinystories())))
    tok = train_bpe_tokenizer(text_batches(raw["train"]), vocab_size=4096)
    texts = raw["validation"]["text"][:300]
    tokens = sum(len(x) for x in tok(texts, add_special_tokens=False)["input_ids"])
    ratio = sum(map(len, texts)) / tokens
    print(f"TinyStories sample, 4096-token BPE: {ratio:.2f} characters per token")
    assert 3.5 <= ratio <= 4.5


def test_train_tokenizer_script_writes_a_loadable_folder(tmp_path):
    import json

    from conftest import run_script

    docs = generated_documents(120, seed=4)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    out = tmp_path / "tok"
    config = tmp_path / "args.yaml"
    config.write_text(f"dataset_path: {tmp_path}\nvocab_size: 300\noutput_dir: {out}\nblock_size: 64\n")
    run_script("train_tokenizer", [str(config)])
    loaded = AutoTokenizer.from_pretrained(out)
    assert len(loaded) == 300 and loaded.model_max_length == 64
    assert loaded.decode(loaded(docs[0], add_special_tokens=False)["input_ids"]) == docs[0]


def test_train_tokenizer_script_refuses_an_output_dir_that_is_a_file(tmp_path):
    import json

    from conftest import run_script
    from tiny_decoder.io.run_dir import OutputDirError

    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in generated_documents(50)))
    target = tmp_path / "taken"
    target.write_text("not a folder")
    with pytest.raises(OutputDirError, match="is a file, not a folder"):
        run_script("train_tokenizer", ["--dataset_path", str(tmp_path), "--vocab_size", "300", "--output_dir", str(target)])
    assert target.read_text() == "not a folder"
