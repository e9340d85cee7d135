"""Structured pruning: removing units that contribute nothing changes nothing; sizes, targets, refusals, the script."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import POSITION_EMBEDDINGS, cli_args, run_script, small_config
from tiny_decoder import TinyDecoderForCausalLM
from tiny_decoder.pruning import collect_importance, count_parameters, parse_target, plan_sizes, prune_model

IDS = torch.randint(3, 67, (3, 14), generator=torch.Generator().manual_seed(0))
CALIB = [torch.randint(3, 67, (4, 16), generator=torch.Generator().manual_seed(s)) for s in (1, 2)]


def model_with(seed=0, **over):
    torch.manual_seed(seed)
    return TinyDecoderForCausalLM(small_config(**over)).eval()


@torch.no_grad()
def silence(model, axis):
    """Zero on purpose the weights that make some units contribute nothing; returns what to prune to."""
    cfg = model.config
    layers = model.model.layers
    n_rep, hd = cfg.num_attention_heads // cfg.num_key_value_heads, cfg.head_dim
    if axis == "heads":  # KV group 1 of every layer: its values are zero, so its heads output zero
        for b in layers:
            b.self_attn.v_proj.weight[hd : 2 * hd] = 0
        return dict(num_heads=cfg.num_attention_heads - n_rep)
    if axis == "mlp":  # channels 5, 17, 40: up (and gate) rows zero, so act(gate) * up == 0
        for b in layers:
            b.mlp.up_proj.weight[[5, 17, 40]] = 0
            if b.mlp.gated:
                b.mlp.gate_proj.weight[[5, 17, 40]] = 0
        return dict(intermediate_size=cfg.intermediate_size - 3)
    if axis == "layers":  # layer 0 writes nothing to the residual stream: a pre-norm identity
        layers[0].self_attn.o_proj.weight.zero_()
        layers[0].mlp.down_proj.weight.zero_()
        return dict(num_layers=cfg.num_hidden_layers - 1)
    if axis == "hidden":  # channels 3 and 20 of the residual stream hold zeros everywhere
        z = [3, 20]
        model.model.embed_tokens.weight[:, z] = 0
        if cfg.position_embedding == "learned":
            model.model.embed_positions.weight[:, z] = 0
        for b in layers:
            b.self_attn.o_proj.weight[z] = 0
            b.mlp.down_proj.weight[z] = 0
        return dict(hidden_size=cfg.hidden_size - 2)
    raise ValueError(axis)


def exact_after_pruning(model, axis):
    sizes = silence(model, axis)
    expected = model(IDS).logits
    small, report = prune_model(model, CALIB, **sizes)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    assert count_parameters(small.config) == report.after["params"]
    torch.testing.assert_close(small(IDS).logits, expected, atol=2e-5, rtol=1e-5)
    return small


@pytest.mark.parametrize("axis", ["heads", "mlp", "layers", "hidden"])
@pytest.mark.parametrize("pe", POSITION_EMBEDDINGS)
def test_pruning_silent_units_keeps_the_logits(axis, pe):
    if axis == "hidden" and pe == "sinusoidal":
        pytest.skip("sinusoidal positions fill every channel, so no hidden channel is silent (see the next test)")
    small = exact_after_pruning(model_with(position_embedding=pe), axis)
    if pe == "alibi" and axis == "heads":
        assert small.config.alibi_slopes == [0.25, 0.0625]  # the kept heads 0 and 1 of 4 keep their slopes


@pytest.mark.parametrize("axis", ["heads", "mlp", "layers"])
@pytest.mark.parametrize("norm", ["rmsnorm", "layernorm"])
@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_every_axis_with_both_norms_and_head_sharing(axis, norm, kv_heads):
    if axis == "heads" and kv_heads == 1:
        pytest.skip("one KV group: removing it would leave no head")
    exact_after_pruning(model_with(norm=norm, num_key_value_heads=kv_heads, hidden_act="gelu"), axis)


@pytest.mark.parametrize("axis", ["heads", "mlp", "layers", "hidden"])
def test_the_recipe_switches_prune_like_the_rest(axis):
    """QK-norm's weights span the head dimension, which pruning keeps whole; squared ReLU and soft-capping add none."""
    small = exact_after_pruning(model_with(qk_norm=True, hidden_act="relu2", final_logit_softcapping=5.0), axis)
    assert small.config.qk_norm and small.model.layers[0].self_attn.q_norm.weight.shape == (small.config.head_dim,)


def test_hidden_pruning_rescales_rmsnorm_and_is_approximate_for_layernorm():
    exact_after_pruning(model_with(norm="rmsnorm", num_key_value_heads=4), "hidden")
    model = model_with(norm="layernorm")
    sizes = silence(model, "hidden")
    small, _ = prune_model(model, CALIB, **sizes)
    drift = (small(IDS).logits - model(IDS).logits).abs().max()
    assert 0 < drift < 1.0  # LayerNorm's mean moves when channels go: close, not equal


def test_sinusoidal_positions_become_the_kept_channels_of_a_learned_table():
    model = model_with(position_embedding="sinusoidal")
    small, _ = prune_model(model, CALIB, hidden_size=24)
    assert small.config.position_embedding == "learned"
    from tiny_decoder.model.positions import sinusoidal_embedding

    table = model.config.sinusoidal_scale * sinusoidal_embedding(torch.arange(64)[None], 32, torch.float32)[0]
    kept = [int(j) for j in _kept_channels(model, small)]
    torch.testing.assert_close(small.model.embed_positions.weight, table[:, kept])


def _kept_channels(model, small):
    """Which original channel each kept channel is, read off the token embedding."""
    big, cut = model.model.embed_tokens.weight, small.model.embed_tokens.weight
    return [next(j for j in range(big.shape[1]) if torch.equal(big[:, j], cut[:, i])) for i in range(cut.shape[1])]


def test_importance_ranks_zeroed_units_lowest():
    model = model_with()
    silence(model, "mlp")
    silence(model, "heads")
    imp = collect_importance(model, CALIB)
    assert (imp.mlp[:, [5, 17, 40]] == 0).all() and (imp.mlp.sum(0) > 0).sum() == model.config.intermediate_size - 3
    assert (imp.heads[:, 1] == 0).all() and (imp.heads[:, 0] > 0).all()
    by_loss = collect_importance(model, CALIB, layer_metric="loss")
    assert by_loss.layers.shape == (2,) and torch.isfinite(by_loss.layers).all()


@pytest.mark.parametrize("target", ["50%", "0.3", "15000"])
def test_a_parameter_target_is_met_within_one_unit(target):
    model = model_with()
    current = sum(p.numel() for p in model.parameters())
    wanted = parse_target(target, current)
    small, report = prune_model(model, CALIB, target=target)
    got = sum(p.numel() for p in small.parameters())
    cfg = small.config
    one_mlp_channel = 3 * cfg.hidden_size * cfg.num_hidden_layers  # gate, up and down: one row/column each
    assert wanted - one_mlp_channel < got <= wanted, (wanted, got)
    assert report.after["params"] == got


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(target="0"), "leaves no parameters"),
        (dict(target="100%"), "not below the model"),
        (dict(target="1.5"), "neither a fraction below 1 nor a whole parameter count"),
        (dict(target="1e9"), "not below the model"),
        (dict(target="much"), "not a number"),
        (dict(target="10"), "below the smallest model"),
        (dict(num_layers=0), "leaves no layer"),
        (dict(num_heads=0), "leaves no head"),
        (dict(num_heads=3), "multiple of 2"),
        (dict(hidden_size=64), "pruning only removes"),
        (dict(), "Nothing to prune"),
    ],
)
def test_impossible_targets_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        prune_model(model_with(), CALIB, **kwargs)


def test_pruned_model_round_trips_and_generates_with_its_cache_like_without(tmp_path):
    from transformers import AutoModelForCausalLM

    model = model_with(position_embedding="alibi")
    small, _ = prune_model(model, CALIB, num_heads=2, hidden_size=24, intermediate_size=50, num_layers=1)
    small.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["head_dim"] == 8 and saved["hidden_size"] == 24 and len(saved["alibi_slopes"]) == 2
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded(IDS).logits, small(IDS).logits)
    kw = dict(max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)
    torch.testing.assert_close(loaded.generate(IDS[:, :4], **kw), loaded.generate(IDS[:, :4], use_cache=False, **kw))


def test_old_config_files_without_head_dim_still_load(tmp_path):
    from transformers import AutoModelForCausalLM

    model = model_with()
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg["head_dim"], cfg["alibi_slopes"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.head_dim == 8 and torch.equal(loaded(IDS).logits, model(IDS).logits)


def test_plan_keeps_fixed_sizes_and_solves_the_rest():
    cfg = small_config()
    sizes = plan_sizes(cfg, target=12000, num_layers=1)
    assert sizes.num_layers == 1 and sizes.num_heads == 4
    with pytest.raises(ValueError, match="either a target or"):
        plan_sizes(cfg, target=12000, hidden_size=16, intermediate_size=32)


# ---------------------------------------------------------------- the script


def prune_script(argv):
    return run_script("prune", argv)


def test_prune_script_writes_a_smaller_model_that_loads_anywhere(workdir, tmp_path, capsys):
    from conftest import run

    trained = tmp_path / "trained"
    run(cli_args(workdir, trained, max_steps=4, config_overrides="position_embedding=alibi"))
    out = tmp_path / "pruned"
    argv = [
        "--model_name_or_path",
        str(trained),
        "--target_params",
        "50%",
        "--num_heads",
        "2",
        "--dataset_path",
        str(workdir / "data"),
        "--block_size",
        "16",
        "--calibration_samples",
        "16",
        "--output_dir",
        str(out),
        "--max_eval_batches",
        "2",
    ]
    result = prune_script(argv)
    printed = capsys.readouterr().out
    assert "validation loss" in printed and "generate tokens/s" in printed and "parameters" in printed
    assert result["after"]["params"] <= 0.5 * result["before"]["params"]
    card = (out / "README.md").read_text()
    assert "KV group(s) of heads per layer" in card and "hidden channels" in card
    assert "base_model:" not in card  # the source is a local folder: named in the text, not Hub metadata
    assert json.loads((out / "prune_report.json").read_text())["after"]["params"] == result["after"]["params"]
    with pytest.raises(ValueError, match="already holds"):
        prune_script(argv)

    # loads without the package, through the modeling code saved beside the weights
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = AutoTokenizer.from_pretrained(out)("Lily found", return_tensors="pt")["input_ids"]
    torch.save({"ids": ids, "logits": local(ids).logits}, tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["tiny_decoder"] = None
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True).eval()
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        assert torch.equal(model(expected["ids"]).logits, expected["logits"])
        print("REMOTE_OK")
    """)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "REMOTE_OK" in done.stdout, done.stderr[-3000:]


def test_prune_script_refuses_a_missing_model(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        prune_script(["--model_name_or_path", str(tmp_path / "nope"), "--target_params", "50%"])
