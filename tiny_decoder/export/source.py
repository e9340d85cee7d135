"""The first step of every export: a saved tiny-decoder folder (or Hub name), checked before anything is written."""


def load_tiny_decoder(source: str):
    """(model in eval mode, tokenizer) of a saved tiny-decoder folder or Hub name, refused in one line if it is
    missing or another kind of model: the first step of every export."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..io.sources import check_model_source
    from ..model import TinyDecoderForCausalLM

    check_model_source(source)
    model = AutoModelForCausalLM.from_pretrained(source)
    if not isinstance(model, TinyDecoderForCausalLM):
        raise ValueError(f"{source!r} is a {type(model).__name__}, not a tiny-decoder model; it needs no export.")
    check_finite_weights(model, source)
    return model.eval(), AutoTokenizer.from_pretrained(source)


def check_finite_weights(model, source: str) -> None:
    """Refuse weights holding NaN or inf before anything is written: another runtime would load them without a
    word and produce garbage."""
    import torch

    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(
                f"{source!r}: weight {name} holds {bad} non-finite value(s) (NaN or inf); nothing was exported. "
                f"Export an earlier checkpoint of the run."
            )
