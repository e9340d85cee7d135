"""Perplexity as an `evaluate` metric kept in this repo (the Hub's "perplexity" needs the network):

    import evaluate
    ppl = evaluate.load("metrics/perplexity")          # a local path: no Hub
    ppl.compute(predictions=["Once upon a time ..."], model_id="runs/tiny", stride=128)

Returns the fields of the Hub metric (`perplexities`, `mean_perplexity`) plus the token-weighted
corpus `perplexity` and `loss`; the numbers come from tiny_decoder.evaluation.perplexity.
"""

import datasets
import evaluate

_DESCRIPTION = "Perplexity of a causal language model (a folder or Hub name) on the given texts."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): the texts to score.
    model_id (str): a saved model folder or Hub name (tiny-decoder or any transformers causal LM).
    batch_size (int): texts (windows) per forward pass. Default 8.
    max_length (int): window length; default the model's context.
    stride (int): sliding-window step, needed for texts longer than the context.
    trust_remote_code (bool): pass on to from_pretrained.
Returns:
    perplexities (list of float), mean_perplexity (float), perplexity (float, token-weighted), loss (float).
"""


class Perplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
            reference_urls=["https://huggingface.co/docs/transformers/perplexity"],
        )

    def _compute(self, predictions, model_id, batch_size=8, max_length=None, stride=None, trust_remote_code=False):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        import tiny_decoder  # noqa: F401  (registers the Auto classes)
        from tiny_decoder.evaluation.perplexity import perplexity

        model = AutoModelForCausalLM.from_pretrained(model_id, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=trust_remote_code)
        result = perplexity(model, tokenizer, list(predictions), batch_size, max_length, stride)
        return {
            "perplexities": result.perplexities,
            "mean_perplexity": sum(result.perplexities) / len(result.perplexities),
            "perplexity": result.perplexity,
            "loss": result.loss,
        }
