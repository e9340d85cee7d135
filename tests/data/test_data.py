import json

import pytest

from conftest import generated_documents
from tiny_decoder.data import (
    DataArguments,
    DataError,
    build_lm_datasets,
    check_utf8,
    group_texts,
    in_validation,
    load_raw_dataset,
)


def write_jsonl(path, docs, column="text"):
    path.write_text("".join(json.dumps({column: d}) + "\n" for d in docs), encoding="utf-8")


@pytest.fixture
def corpus(tmp_path):
    docs = generated_documents(400, seed=1)
    write_jsonl(tmp_path / "train.jsonl", docs)
    return tmp_path, docs


def test_packing_keeps_every_token_once_and_in_order():
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10], [11]]
    out = group_texts({"input_ids": docs}, block_size=3)
    assert out["input_ids"] == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]  # 10, 11 dropped: last partial block


def test_packed_blocks_are_the_token_stream(corpus, tiny_tokenizer):
    path, docs = corpus
    args = DataArguments(dataset_path=str(path), block_size=16, validation_split_percentage=0, pack_batch_size=10_000)
    blocks, reports = build_lm_datasets(args, tiny_tokenizer)
    stream = [t for d in docs for t in tiny_tokenizer(d, add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]]
    flat = [t for b in blocks["train"]["input_ids"] for t in b]
    assert flat == stream[: len(flat)] and len(stream) - len(flat) < 16
    r = reports["train"]
    assert r.documents == 400 and r.tokens == len(stream) and r.blocks == len(stream) // 16


def test_hash_split_is_deterministic_disjoint_and_order_free(corpus, tmp_path):
    path, docs = corpus
    args = DataArguments(dataset_path=str(path), validation_split_percentage=20)
    a = load_raw_dataset(args)
    from tiny_decoder.data import clean_and_split

    parts, _ = clean_and_split(a, args)
    train, valid = set(parts["train"]["text"]), set(parts["validation"]["text"])
    assert not train & valid and train | valid == set(docs)
    assert 0.1 < len(valid) / len(set(docs)) < 0.3
    # same documents, reversed order, another folder: same sides
    other = tmp_path / "other"
    other.mkdir()
    write_jsonl(other / "train.jsonl", docs[::-1])
    parts2, _ = clean_and_split(load_raw_dataset(DataArguments(dataset_path=str(other), validation_split_percentage=20)), args)
    assert set(parts2["validation"]["text"]) == valid
    assert all(in_validation(d, 0.2) == (d in valid) for d in docs)


def test_streaming_gives_the_same_blocks(corpus, tiny_tokenizer):
    path, _ = corpus
    kw = dict(dataset_path=str(path), block_size=16, pack_batch_size=50)
    plain, _ = build_lm_datasets(DataArguments(**kw), tiny_tokenizer)
    streamed, reports = build_lm_datasets(DataArguments(streaming=True, **kw), tiny_tokenizer)
    assert reports == {}
    for split in ("train", "validation"):
        assert [b["input_ids"] for b in streamed[split]] == plain[split]["input_ids"]


def test_txt_files_with_a_separator_and_a_validation_file(tmp_path, tiny_tokenizer):
    docs = generated_documents(60, seed=2)
    (tmp_path / "train.txt").write_text("<|endoftext|>".join(docs[:50]), encoding="utf-8")
    (tmp_path / "validation.txt").write_text("<|endoftext|>".join(docs[50:] + ["   ", ""]), encoding="utf-8")
    args = DataArguments(dataset_path=str(tmp_path), text_separator="<|endoftext|>", block_size=8)
    blocks, reports = build_lm_datasets(args, tiny_tokenizer)
    assert reports["train"].documents == 50
    assert reports["validation"].documents == 10 and reports["validation"].dropped_empty == 2


def test_blank_line_separated_txt(tmp_path):
    (tmp_path / "corpus.txt").write_text("one story.\n\n\n\ntwo story.\n\nthree\nlines story.", encoding="utf-8")
    raw = load_raw_dataset(DataArguments(dataset_path=str(tmp_path / "corpus.txt")))
    assert [t.strip() for t in raw["train"]["text"] if t.strip()] == ["one story.", "two story.", "three\nlines story."]


def test_parquet_folder(tmp_path, tiny_tokenizer):
    from datasets import Dataset

    Dataset.from_dict({"story": generated_documents(50)}).to_parquet(str(tmp_path / "train-0.parquet"))
    blocks, reports = build_lm_datasets(
        DataArguments(dataset_path=str(tmp_path), text_column="story", block_size=8), tiny_tokenizer
    )
    assert reports["train"].documents + reports["validation"].documents == 50


def test_invalid_utf8_names_file_and_offset_or_is_replaced(tmp_path):
    good = json.dumps({"text": "a fine story"}) + "\n"
    bad = tmp_path / "train.jsonl"
    bad.write_bytes(good.encode() + b'{"text": "broken \xff byte"}\n')
    assert check_utf8(str(bad)) == len(good) + len('{"text": "broken ')
    with pytest.raises(DataError, match=rf"train.jsonl: invalid UTF-8 at byte offset {len(good) + 17}"):
        load_raw_dataset(DataArguments(dataset_path=str(tmp_path)))
    raw = load_raw_dataset(DataArguments(dataset_path=str(tmp_path), encoding_errors="replace"))
    assert raw["train"]["text"] == ["a fine story", "broken \ufffd byte"]
    (tmp_path / "train.jsonl").unlink()
    (tmp_path / "train.txt").write_bytes(b"ok\n\nbad \xc3(")
    with pytest.raises(DataError, match="train.txt: invalid UTF-8 at byte offset 8"):
        load_raw_dataset(DataArguments(dataset_path=str(tmp_path)))


def test_empty_dataset_stops_before_training(tmp_path, tiny_tokenizer):
    write_jsonl(tmp_path / "train.jsonl", ["", "   ", "\n\t"])
    with pytest.raises(DataError, match="No training documents are left after dropping 3 empty"):
        build_lm_datasets(DataArguments(dataset_path=str(tmp_path)), tiny_tokenizer)


def test_too_little_text_for_one_block(tmp_path, tiny_tokenizer):
    write_jsonl(tmp_path / "train.jsonl", ["tiny."])
    with pytest.raises(DataError, match="fewer than one block"):
        build_lm_datasets(DataArguments(dataset_path=str(tmp_path), block_size=64, validation_split_percentage=0), tiny_tokenizer)


def test_missing_text_column_lists_the_columns(tmp_path, tiny_tokenizer):
    write_jsonl(tmp_path / "train.jsonl", ["a story"], column="story")
    with pytest.raises(DataError, match=r"text_column='text'.*\['story'\]"):
        build_lm_datasets(DataArguments(dataset_path=str(tmp_path)), tiny_tokenizer)


def test_no_hub_and_no_local_copy_says_how_to_fix(monkeypatch):
    monkeypatch.delenv("TINY_DECODER_DATA", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match="--dataset_path"):
        load_raw_dataset(DataArguments())


def test_missing_path_is_named(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        load_raw_dataset(DataArguments(dataset_path=str(tmp_path / "nowhere")))


def test_bad_arguments_are_refused():
    with pytest.raises(DataError, match="encoding_errors"):
        DataArguments(encoding_errors="ignore")
    with pytest.raises(DataError, match="block_size"):
        DataArguments(block_size=1)


def test_empty_jsonl_is_named_before_any_work(tmp_path):
    (tmp_path / "train.jsonl").write_text("")
    with pytest.raises(DataError, match=r"train.jsonl is empty: it holds no documents"):
        load_raw_dataset(DataArguments(dataset_path=str(tmp_path)))
    (tmp_path / "train.jsonl").write_text("\n  \n")
    with pytest.raises(DataError, match=r"train.jsonl is empty"):
        load_raw_dataset(DataArguments(dataset_path=str(tmp_path)))


@pytest.mark.parametrize("errors", ["strict", "replace"])
def test_a_line_that_is_not_json_is_named_with_file_and_line(tmp_path, errors):
    lines = [json.dumps({"text": "one"}), json.dumps({"text": "two"}), "{text: three", json.dumps({"text": "four"})]
    body = "\n".join(lines).encode()
    if errors == "replace":  # bad bytes too, so the replace path (our own reader) is the one taken
        body = json.dumps({"text": "bad \xff"}).encode().replace(b"\\u00ff", b"\xff") + b"\n" + body
    (tmp_path / "train.jsonl").write_bytes(body)
    line = 3 if errors == "strict" else 4
    with pytest.raises(DataError, match=rf"train.jsonl, line {line}: not valid JSON .*fix or delete that line"):
        load_raw_dataset(DataArguments(dataset_path=str(tmp_path), encoding_errors=errors))


def test_a_json_line_that_is_not_an_object_is_named(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"text": "one"}) + "\n" + json.dumps(["a", "list"]) + "\n")
    with pytest.raises(DataError, match=r"train.jsonl, line 2: a list, not a JSON object"):
        load_raw_dataset(DataArguments(dataset_path=str(tmp_path)))


def test_a_json_file_holding_one_list_of_records_still_loads(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps([{"text": "one"}, {"text": "two"}]))
    assert load_raw_dataset(DataArguments(dataset_path=str(tmp_path)))["train"]["text"] == ["one", "two"]


def test_empty_dataset_path_means_the_hub_even_with_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("TINY_DECODER_DATA", str(tmp_path))
    assert DataArguments().local_path == str(tmp_path)
    assert DataArguments(dataset_path="").local_path is None
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match="cannot be reached"):
        load_raw_dataset(DataArguments(dataset_path=""))


def test_make_train_data_hub_asks_for_the_hub(tmp_path):
    """`make train DATA=hub` passes an empty --dataset_path, which wins over $TINY_DECODER_DATA."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        ["make", "-n", "train", "DATA=hub"],
        cwd=root,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "TINY_DECODER_DATA": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr
    line = [x for x in out.stdout.replace("\\\n", " ").splitlines() if "scripts/train.py" in x][0]
    assert '--dataset_path ""' in line and str(tmp_path) not in line
