"""Option scoring: the mean per token decides, the sum and per-character scores are recorded; the
shared prompt cache gives the scores of the full text; options are read as they tokenize in it."""

from types import SimpleNamespace

import pytest
import torch

from conftest import good_record, make_dataset, write_image
from textonly.organism import vlm
from textonly.models.scoring import _inputs, option_tokens, score_options
from textonly.models.hub import ARCHS, build_tiny, load_model
from textonly.organism.tokenizer import ASSISTANT, train_tokenizer

CORPUS = ["red", "blue green", "sky", "green", "Which one is shown? A. red B. blue green C. sky D. green"] * 30


class Bigram(torch.nn.Module):
    """A model whose next-token log-probabilities depend on the current token only (a fixed table),
    so each option's token log-likelihoods are whatever the table says."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table, requires_grad=False)
        self.cache_rows = []

    def forward(self, input_ids, attention_mask=None, cache=None, use_cache=False, **kwargs):
        if cache is not None:
            self.cache_rows.append(cache.rows)
        return SimpleNamespace(logits=self.table[input_ids], past_key_values=_Cache(len(input_ids)))


class _Cache:
    def __init__(self, rows):
        self.rows = list(range(rows))

    def batch_select_indices(self, index):
        self.rows = [self.rows[i] for i in index.tolist()]


@pytest.fixture(scope="module")
def processor():
    return vlm.make_processor(train_tokenizer(CORPUS, vocab_size=300))


def test_the_mean_decides_and_the_sum_is_recorded(processor, tmp_path):
    record = good_record(0, options=["red", "blue green", "sky", "green"], answer=1, image_path=None)
    make_dataset(tmp_path, [record], images=False)
    _, ids = option_tokens(processor, record, "no_image")
    assert [len(i) for i in ids[:2]] == [1, 2], "the test needs a one-token and a two-token option"
    vocab = len(processor.tokenizer)
    probs = torch.full((vocab, vocab), 1e-6)
    assistant = processor.tokenizer.convert_tokens_to_ids(ASSISTANT)
    (a,), (b1, b2), (c, *_), (d, *_) = ids
    probs[assistant, a], probs[assistant, b1], probs[assistant, c], probs[assistant, d] = 0.30, 0.25, 0.01, 0.01
    probs[b1, b2] = 0.9
    pad = processor.tokenizer.pad_token_id  # the rest of each row's mass, so that the rows need no rescaling
    probs[assistant, pad], probs[b1, pad] = 1 - 0.57, 0.1
    model = Bigram((probs / probs.sum(-1, keepdim=True)).log())
    (scored,) = score_options(model, processor, [record], tmp_path, condition="no_image", progress=False)
    # option 0: log 0.30 = -1.20 (mean and sum); option 1: log 0.25 + log 0.9 = -1.49, mean -0.75
    assert scored["prediction"] == 1 and scored["correct"]
    assert max(range(4), key=scored["sum"].__getitem__) == 0
    assert scored["sum"][1] == pytest.approx(torch.tensor([0.25, 0.9]).log().sum().item(), abs=1e-3)
    assert scored["scores"][1] == pytest.approx(scored["sum"][1] / 2)
    assert scored["per_char"][1] == pytest.approx(scored["sum"][1] / len("blue green"))
    # the prompt ran once; the options' second tokens ran over its cache, one row per option
    assert model.cache_rows == [[0, 0, 0, 0]]


def test_options_share_one_prompt_pass_per_batch(processor, tmp_path):
    records = [good_record(i, options=["red", "blue green", "sky", "green"], image_path=None) for i in range(5)]
    make_dataset(tmp_path, records, images=False)
    vocab = len(processor.tokenizer)
    model = Bigram(torch.log_softmax(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(0)), -1))
    calls = []
    model.register_forward_hook(lambda module, args, kwargs, out: calls.append(1), with_kwargs=True)
    counts = {}
    scored = score_options(model, processor, records, tmp_path, condition="no_image", batch_size=5,
                           progress=False, counts=counts)
    assert len(calls) == 2  # one pass over the prompts, one over the options' later tokens
    assert len(scored) == 5 and all(len(p["scores"]) == 4 for p in scored)
    assert counts["text"] > 0 and counts["image"] == 0


@pytest.fixture(scope="module")
def questions(tmp_path_factory):
    root = tmp_path_factory.mktemp("questions")
    records = [good_record(i, question="Which one is shown?" + " Look at the wings." * i,
                           options=[" ".join(["orange"] * (1 + (i + j) % 3)) + (" red" if j == 2 else "")
                                    for j in range(4)]) for i in range(4)]
    make_dataset(root, records, images=False)
    for i, (r, size) in enumerate(zip(records, [(64, 64), (96, 48), (40, 80), (120, 90)])):
        write_image(root / "images" / r["image_path"], size=size, colour=(40 * i, 200 - 30 * i, 90))
    return root, records


def _reference(model, processor, record, root, condition):
    """Mean log-likelihood of each option over the full text, one sequence per option, no cache."""
    context, ids = option_tokens(processor, record, condition)
    inputs = _inputs(processor, [record], root, condition, "oracle-full", "right", "cpu", texts=[context])
    out = []
    for option in ids:
        full = torch.cat([inputs["input_ids"], torch.tensor([option])], 1)
        extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        if "mm_token_type_ids" in extra:
            kinds = extra["mm_token_type_ids"]
            extra["mm_token_type_ids"] = torch.cat([kinds, torch.zeros(1, len(option), dtype=kinds.dtype)], 1)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=full, attention_mask=torch.ones_like(full), **extra)
                                     .logits[0].float(), -1)
        start = inputs["input_ids"].shape[1]
        out.append(sum(logp[start - 1 + t, option[t]].item() for t in range(len(option))) / len(option))
    return out


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("condition", ["image", "no_image"])
def test_cached_batched_scores_equal_the_full_text(arch, condition, questions, tmp_path):
    model, processor = load_model(build_tiny(arch, tmp_path / arch))
    root, records = questions
    batched = score_options(model, processor, records, root, condition=condition, batch_size=4, progress=False)
    single = score_options(model, processor, records, root, condition=condition, batch_size=1, progress=False)
    reference = torch.tensor([_reference(model, processor, r, root, condition) for r in records])
    assert torch.allclose(torch.tensor([p["scores"] for p in batched]), reference, atol=1e-3)
    assert torch.allclose(torch.tensor([p["scores"] for p in single]), reference, atol=1e-4)


def test_an_option_is_read_as_it_tokenizes_after_the_prompt(questions, tmp_path):
    """LLaVA-NeXT's template answers ``[/INST] orange``: in the full text the space joins the word
    (one token), which the option alone would not give."""
    model, processor = load_model(build_tiny("llava_next", tmp_path / "llava_next"))
    root, records = questions
    context, ids = option_tokens(processor, records[0], "no_image")
    alone = processor.tokenizer(records[0]["options"][0], add_special_tokens=False)["input_ids"]
    assert context.endswith("[/INST]") and ids[0] != alone
    assert processor.tokenizer.decode(ids[0]) == " " + records[0]["options"][0]
