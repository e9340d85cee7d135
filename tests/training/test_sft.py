"""SFT: the chat template, assistant-only labels, bad input, the instruction builder, the script end to end."""

import json

import pytest
import torch

from conftest import cli_args, generated_documents, metrics, run, run_script
from tiny_decoder.data.chat import CHAT_TEMPLATE, add_chat_template, encode_conversation, load_conversations, to_messages
from tiny_decoder.data.instructions import build_instruction_set, content_words, story_to_conversation, words_present

CONV = [
    {"role": "system", "content": "Be kind."},
    {"role": "user", "content": "Lily saw"},
    {"role": "assistant", "content": "a red ball."},
    {"role": "user", "content": "More"},
    {"role": "assistant", "content": "Tom found the cat."},
]


@pytest.fixture
def chat_tok(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    assert add_chat_template(tok) == 3 and add_chat_template(tok) == 0
    return tok


def test_template_renders_every_role_and_the_generation_prompt(chat_tok):
    eos = chat_tok.eos_token
    text = chat_tok.apply_chat_template(CONV[:3], tokenize=False)
    assert text == f"<|system|>\nBe kind.{eos}<|user|>\nLily saw{eos}<|assistant|>\na red ball.{eos}"
    prompt = chat_tok.apply_chat_template(CONV[:2], tokenize=False, add_generation_prompt=True)
    assert prompt == f"<|system|>\nBe kind.{eos}<|user|>\nLily saw{eos}<|assistant|>\n"
    assert chat_tok.chat_template == CHAT_TEMPLATE


def test_labels_are_minus_100_exactly_off_the_assistant_tokens(chat_tok):
    enc = encode_conversation(chat_tok, CONV, 64)
    # Rebuild the expectation piece by piece: only each answer and its EOS are the assistant's.
    expected = []
    for m in CONV:
        head = chat_tok(f"<|{m['role']}|>\n", add_special_tokens=False)["input_ids"]
        body = chat_tok(m["content"], add_special_tokens=False)["input_ids"] + [chat_tok.eos_token_id]
        if m["role"] == "assistant":
            expected += [-100] * len(head) + body
        else:
            expected += [-100] * len(head + body)
    n = len(expected)
    assert enc["input_ids"][:n] == [t if t != -100 else enc["input_ids"][i] for i, t in enumerate(expected)]
    assert enc["labels"] == expected + [-100] * (64 - n)
    assert enc["attention_mask"] == [1] * n + [0] * (64 - n)
    assert enc["input_ids"][n:] == [chat_tok.pad_token_id] * (64 - n)


def test_a_conversation_longer_than_the_context_is_cut_or_dropped(chat_tok, caplog):
    from transformers.utils import logging

    long = [{"role": "user", "content": "Lily saw a red ball. " * 20}, {"role": "assistant", "content": "Tom found it."}]
    before = logging.get_verbosity()
    logging.set_verbosity_warning()
    try:
        assert encode_conversation(chat_tok, long, 16) is None  # nothing of the answer fits: dropped
    finally:
        logging.set_verbosity(before)
    assert "Token indices sequence length" not in caplog.text  # expected here (it is cut): no warning
    n = sum(encode_conversation(chat_tok, CONV[:3], 64)["attention_mask"])
    cut = encode_conversation(chat_tok, CONV[:3], n - 2)  # the answer's last two tokens fall off
    assert cut["truncated"] and len(cut["input_ids"]) == n - 2 and any(t != -100 for t in cut["labels"])
    assert not encode_conversation(chat_tok, CONV[:3], n)["truncated"]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"text": "hi"}', "line 2: no 'messages' field"),
        (
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]}',
            "line 2: message 1 .* no content",
        ),
        ('{"messages": [{"role": "narrator", "content": "hi"}]}', "line 2: message 0 has role 'narrator'"),
        ('{"messages": [{"role": "user", "content": "hi"}]}', "line 2: no assistant turn"),
        ('{"messages": [', "line 2: not valid JSON"),
    ],
)
def test_bad_lines_are_refused_with_their_number(tmp_path, line, message):
    f = tmp_path / "chat.jsonl"
    f.write_text('{"prompt": "Say hi", "completion": "Hi."}\n' + line + "\n")
    with pytest.raises(ValueError, match=message):
        load_conversations(str(f))


def test_prompt_completion_pairs_become_messages():
    assert to_messages({"prompt": "Say hi", "completion": "Hi."}, "x") == [
        {"role": "user", "content": "Say hi"},
        {"role": "assistant", "content": "Hi."},
    ]


def test_instruction_builder_is_deterministic_and_splits_by_story():
    stories = generated_documents(200, seed=3)
    a, b = build_instruction_set(stories, seed=1), build_instruction_set(stories, seed=1)
    assert a == b and a != build_instruction_set(stories, seed=2)
    train_answers = {c["messages"][-1]["content"] for c in a["train"]}
    assert a["validation"] and not train_answers & {c["messages"][-1]["content"] for c in a["validation"]}
    story = "Lily found a shiny stone near the river. She showed the stone to her happy dog. They played all day."
    conv = story_to_conversation(story, seed=0)
    if conv["task"] == "words":
        assert words_present(conv["messages"][-1]["content"], conv["words"]) == 1.0
        assert set(conv["words"]) <= set(content_words(story))
    assert words_present("The dog ran.", ["dog", "cat"]) == 0.5


def test_requested_words_come_from_the_story_start_in_story_order_with_names_capitalised():
    story = "Lily saw a dog. The dog ran to Lily. " + " ".join(["Then they played."] * 40) + " At last a purple zebra came."
    for seed in range(20):
        conv = story_to_conversation(story, seed=seed, words_within=12)
        if conv["task"] != "words":
            continue
        assert set(conv["words"]) <= {"Lily", "dog", "ran", "played"} and "zebra" not in conv["words"]
        order = content_words(story)
        assert conv["words"] == sorted(conv["words"], key=order.index)
    # always capitalised -> kept ("Lily"); capitalised once, lower case once -> lower case ("ball")
    assert content_words("Lily found Ball. Lily threw the ball.") == ["Lily", "found", "ball", "threw"]


def test_per_story_makes_several_training_conversations_and_one_validation():
    stories = generated_documents(120, seed=8)
    one = build_instruction_set(stories, seed=0, validation_fraction=0.3)
    three = build_instruction_set(stories, seed=0, validation_fraction=0.3, per_story=3)
    assert three["validation"] == one["validation"]
    assert len(one["train"]) < len(three["train"]) <= 3 * len(one["train"])
    assert all(c in three["train"] for c in one["train"])  # the first choice is the per_story=1 one
    with pytest.raises(ValueError, match="per_story"):
        build_instruction_set(stories, per_story=0)


# ---------------------------------------------------------------- the script on the training loop


@pytest.fixture(scope="module")
def base_and_data(workdir):
    base = workdir / "sft-base"
    if not (base / "model.safetensors").exists():
        run(cli_args(workdir, base, max_steps=4, block_size=48, config_overrides="hidden_size=64"))
    data = workdir / "instruct"
    data.mkdir(exist_ok=True)
    sets = build_instruction_set(generated_documents(300, seed=11), seed=0, validation_fraction=0.15)
    for split, convs in sets.items():
        (data / f"{split}.jsonl").write_text("".join(json.dumps(c) + "\n" for c in convs))
    return base, data


def test_sft_script_trains_and_the_model_chats_after_from_pretrained(workdir, base_and_data, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, data = base_and_data
    out = tmp_path / "sft"
    argv = cli_args(
        workdir,
        out,
        preset=None,
        tokenizer_name=None,
        model_name_or_path=str(base),
        dataset_path=str(data),
        block_size=48,
        max_steps=30,
        learning_rate=3e-3,
        eval_steps=10,
        logging_steps=5,
        save_steps=30,
        sample_prompt="Write a story that uses the words: cat, cake, tree.",
    )
    run_script("sft", argv)
    evals = [m["eval_loss"] for m in metrics(out) if "eval_loss" in m]
    assert evals[-1] < evals[0], evals  # the assistant-token loss falls
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert tok.chat_template == CHAT_TEMPLATE and model.config.vocab_size == len(tok) == 303
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # still tied
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "Write a story that uses the words: cat, cake, tree."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    torch.manual_seed(0)
    gen = model.generate(**ids, max_new_tokens=20, do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] > ids["input_ids"].shape[1]
    answer = tok.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert answer.strip() and "<|" not in answer
    card = (out / "README.md").read_text()
    assert "## Supervised fine-tuning" in card and '"sft"' in card
    samples = card.split("## Samples")[1]
    assert "> Write a story" not in samples  # a chat sample is the answer, not the prompt


def test_sft_needs_a_model_and_chat_data(workdir, base_and_data, tmp_path):
    base, _ = base_and_data
    with pytest.raises(ValueError, match="model_name_or_path is required"):
        run_script("sft", cli_args(workdir, tmp_path / "a", tokenizer_name=None))
    with pytest.raises(ValueError, match="no 'messages' field"):  # the pre-training corpus is not chat data
        run_script("sft", cli_args(workdir, tmp_path / "b", preset=None, tokenizer_name=None, model_name_or_path=str(base)))
