"""analysis.py: the numbers behind `charwise analyze`, checked against slow, obvious references."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charwise.api import load
from charwise.data.vocab import Vocab
from charwise.errors import CharwiseError
from charwise.inspect import analysis as A
from charwise.inspect import attention as ATT
from charwise.inspect import neurons as N
from charwise.inspect.plots import attention_figure
from charwise.model import CharRNN
from charwise.reference import transformer as ref_transformer
from charwise.runs.bundled import corpus_path as bundled_corpus_path
from charwise.scoring import evaluate_tokens
from charwise.settings.train import ModelConfig
from test_evaluate import naive_losses

CORPUS = bundled_corpus_path().read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def model(trained_run):
    return load(trained_run)


def test_one_pass_losses_equal_slow_reference(model):
    ids = model.vocab.encode(CORPUS[300:390])
    fast, correct = A.position_losses(model.net, ids, chunk=16)   # 16: state carried across chunks
    ref, ref_guesses = naive_losses(model.net, ids)                # re-reads every prefix
    assert fast.shape == (len(ids) - 1,)
    np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-5)
    assert (correct == (ref_guesses == ids[1:])).all()


def test_table_adds_up_to_overall_loss(model):
    ids = model.vocab.encode(CORPUS)
    losses, correct = A.position_losses(model.net, ids)
    tab = A.char_table(model.vocab, ids, losses, correct)
    assert tab.total == len(ids) - 1
    assert tab.overall_nats == pytest.approx(losses.mean(), rel=1e-12)
    assert tab.overall_nats == pytest.approx(evaluate_tokens(model.net, ids)["loss"], rel=1e-5)
    assert (np.diff(tab.mean_nats) <= 0).all()                           # hardest first
    assert tab.correct.sum() == correct.sum()
    targets = np.array(list(CORPUS[1:]))
    for ch in ("e", " ", "M", tab.chars[0]):                            # brute force, per character
        k = tab.chars.index(ch)
        mask = targets == ch
        assert tab.count[k] == mask.sum() == CORPUS[1:].count(ch)
        assert tab.mean_nats[k] == pytest.approx(losses[mask].mean(), rel=1e-12)
        assert tab.mean_bits[k] == pytest.approx(losses[mask].mean() / math.log(2), rel=1e-12)
        assert tab.accuracy[k] == pytest.approx(correct[mask].mean())
    rows = tab.rows()
    assert sum(r["share_of_loss"] for r in rows) == pytest.approx(1.0)
    assert rows[tab.chars.index(" ")]["label"] == "\u2423"
    csv = tab.csv().splitlines()
    assert csv[0].startswith("char,codepoint,count") and len(csv) == len(rows) + 1


def stepped(net, ids):
    """Reference hidden states: the model's own rnn, one character at a time. (T, L, H) each."""
    state = net.zero_state(1)
    hs, cs = [], []
    with torch.no_grad():
        emb = net.embed(torch.as_tensor(ids)[None])
        for t in range(len(ids)):
            st = (state[0], state[1]) if net.cfg.cell == "lstm" else state[0]
            _, new = net.rnn(emb[:, t:t + 1], st)
            state = tuple(new) if isinstance(new, tuple) else (new,)
            hs.append(state[0][:, 0].numpy().copy())
            if net.cfg.cell == "lstm":
                cs.append(state[1][:, 0].numpy().copy())
    return np.array(hs), (np.array(cs) if cs else None)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_layer_states_match_stepping_every_layer(cell):
    torch.manual_seed(0)
    net = CharRNN(ModelConfig(cell=cell, vocab_size=11, embed_dim=5, hidden_size=7, layers=3)).eval()
    ids = np.random.default_rng(0).integers(0, 11, 40)
    hs, cs = stepped(net, ids)
    for layer in range(3):
        np.testing.assert_allclose(N.layer_states(net, ids, layer, "h"), hs[:, layer], atol=1e-5)
        if cell == "lstm":
            np.testing.assert_allclose(N.layer_states(net, ids, layer, "c"), cs[:, layer], atol=1e-5)
    with torch.no_grad():                                  # the top layer is what forward returns
        _, _, top = net(torch.as_tensor(ids)[None], return_hidden=True)
    np.testing.assert_allclose(N.layer_states(net, ids), top[0].numpy(), atol=1e-5)
    if cell != "lstm":
        with pytest.raises(CharwiseError, match="no cell state"):
            N.layer_states(net, ids, 0, "c")
    with pytest.raises(CharwiseError, match="--layer"):
        N.layer_states(net, ids, 3)


def test_heatmap_data_is_the_models_hidden_states(model):
    hm = N.heatmap(model.net, model.vocab, A.SPEC_SENTENCE)
    ids = model.vocab.encode(A.SPEC_SENTENCE)
    assert hm.data.shape == (128, len(A.SPEC_SENTENCE))                # (units, chars)
    assert sorted(hm.units.tolist()) == list(range(128))
    assert hm.chars == list(A.SPEC_SENTENCE)
    hs, _ = stepped(model.net, ids)
    np.testing.assert_allclose(hm.data, hs[:, 0][:, hm.units].T, atol=1e-5)
    small = N.heatmap(model.net, model.vocab, A.SPEC_SENTENCE, kind="c", max_units=16, sort="variance")
    assert small.data.shape == (16, len(A.SPEC_SENTENCE)) and "16 most variable of 128" in small.note
    assert (np.diff(small.data.var(axis=1)) <= 1e-12).all()


def test_cluster_order_puts_similar_units_together():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 50))
    rows = np.repeat(base, 5, axis=0) + 0.05 * rng.normal(size=(15, 50))   # 3 groups of 5
    perm = rng.permutation(15)
    order = N.order_units(rows[perm], "cluster")
    groups = (perm // 5)[order]
    assert sorted(order.tolist()) == list(range(15))
    assert (np.diff(groups) != 0).sum() == 2                               # each group contiguous
    with pytest.raises(CharwiseError, match="--sort"):
        N.order_units(rows, "alphabetical")


def test_oov_and_empty_text_are_explicit():
    v = Vocab.from_text("abc ")
    with pytest.raises(CharwiseError, match=r"'z'.*--oov skip"):
        v.encode_text("abz", "error", "--text")
    ids, skipped = v.encode_text("abzzc", "skip")
    assert v.decode(ids) == "abc" and skipped == 2
    with pytest.raises(CharwiseError, match="empty"):
        v.encode_text("", "skip")
    with pytest.raises(CharwiseError, match="none of its characters"):
        v.encode_text("xyz", "skip")
    with pytest.raises(CharwiseError, match="at least 2"):
        A.position_losses(CharRNN(ModelConfig(vocab_size=4)), np.array([1]))


def test_analysis_text_falls_back_to_training_text_and_says_so(model, trained_run, tmp_path):
    t = A.analysis_text(trained_run, model.info, model.vocab)
    assert "no validation split" in t.note and "val_fraction 0" in t.note
    assert model.vocab.decode(t.ids) == CORPUS
    info = {**model.info, "train": {**model.info["train"], "val_fraction": 0.25}}
    t = A.analysis_text(trained_run, info, model.vocab)
    assert t.note == "" and "validation split" in t.source
    assert model.vocab.decode(t.ids) == CORPUS[len(CORPUS) - int(len(CORPUS) * 0.25):]
    f = tmp_path / "t.txt"
    f.write_text("Mr Bennet~ said\u00e9")
    with pytest.raises(CharwiseError, match="--oov skip"):
        A.analysis_text(trained_run, model.info, model.vocab, f)
    t = A.analysis_text(trained_run, model.info, model.vocab, f, oov="skip")
    assert t.skipped == 2 and "2 character(s)" in t.note


def test_novelty_copied_vs_random():
    copied = CORPUS[200:500]
    nv = A.novelty(copied, CORPUS)
    assert nv["longest_copy"] == copied and nv["ngram_overlap"] == {10: 1.0, 20: 1.0}
    rng = np.random.default_rng(0)
    rand = "".join(rng.choice(sorted(set(CORPUS)), 300))
    nv = A.novelty(rand, CORPUS)
    assert nv["ngram_overlap"][10] == 0.0 and nv["ngram_overlap"][20] == 0.0
    assert nv["longest_copy_len"] < 6
    half = CORPUS[:100] + rand[:100]                                     # half copied
    assert A.ngram_overlap(half, CORPUS, 10) == pytest.approx(91 / 191, abs=0.03)
    assert A.ngram_overlap("short", CORPUS, 10) is None


def test_longest_copy_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(200):
        ref = "".join(rng.choice(list("abc"), rng.integers(0, 30)))
        s = "".join(rng.choice(list("abcd"), rng.integers(0, 15)))
        brute = max((s[i:j] for i in range(len(s) + 1) for j in range(i, len(s) + 1) if s[i:j] in ref),
                    key=len)
        assert len(A.longest_copy(s, ref)) == len(brute) and A.longest_copy(s, ref) in ref


def test_temperature_sweep_loglik_is_the_models(model):
    res = A.temperature_sweep(model, "Mr Bennet", (0.5, 1.5), n=40, seed=3)
    assert [r["temperature"] for r in res] == [0.5, 1.5]
    for r in res:
        assert r["text"] == model.generate("Mr Bennet", 40, temperature=r["temperature"], seed=3)
        ids = torch.as_tensor(model.vocab.encode(r["text"]))
        with torch.no_grad():
            logp = F.log_softmax(model.net(ids[None])[0][0].double(), -1)         # (T, V)
        lp = logp[torch.arange(len(ids) - 1), ids[1:]][8:]                          # the 40 generated
        assert len(lp) == 40
        assert r["loglik_nats"] == pytest.approx(float(lp.mean()), rel=1e-5)
        assert r["loglik_bits"] == pytest.approx(r["loglik_nats"] / math.log(2))
    assert res[0]["loglik_nats"] > res[1]["loglik_nats"]         # colder samples are likelier


def test_features_and_selective_units():
    text = 'ab "cd e"\nfg\nhij'
    f = N.text_features(text)
    np.testing.assert_array_equal(f["inside double quotes"], [0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(f["position in the line"], [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 0, 1, 2, 3])
    assert f["just read a newline (line start)"].sum() == 2
    assert "inside double quotes" not in N.text_features("no quotes here")
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(len(text), 6))
    acts[:, 4] = -f["inside double quotes"]                  # unit 4 is an (inverted) quote detector
    sel = N.selective_units(acts, f, top=2)
    quote = [s for s in sel if s["feature"] == "inside double quotes"]
    assert quote[0]["unit"] == 4 and quote[0]["r"] == pytest.approx(-1.0)


def test_plateau_from_history():
    def info(losses, **kw):
        return {"history": [{"step": 100 * (i + 1), "val_loss": v, "eval_split": "val"}
                            for i, v in enumerate(losses)], "train": {"patience": 2}, **kw}
    p = A.plateau(info([3.0, 2.0, 1.5]))
    assert p["best_step"] == 300 and p["evals_since_best"] == 0 and "still improving" in p["verdict"]
    p = A.plateau(info([3.0, 1.5, 1.505, 1.52, 1.51]))
    assert p["best_step"] == 200 and p["evals_since_best"] == 3 and "plateaued" in p["verdict"]
    assert p["within_tol_step"] == 200
    p = A.plateau(info([3.0, 1.6, 1.501, 1.5, 1.7, 1.8], stopped_because="patience"))
    assert p["within_tol_step"] == 300 and "--patience 2" in p["verdict"]
    assert A.plateau({"history": []}) is None
    p = A.plateau(info([1.5]))                                      # one evaluation: no trend
    assert "one evaluation" in p["verdict"] and "no plateau information" in p["verdict"]
    assert "improving" not in p["verdict"]



# ----------------------------------------------------------------------------- a transformer

@pytest.fixture(scope="module")
def gpt(transformer_run):
    return load(transformer_run)


def test_attention_maps_are_the_models_weights(gpt):
    text = "It is a truth universally acknowledged"                 # 38 chars, context 24
    am = ATT.attention(gpt.net, gpt.vocab, text)
    assert am.weights.shape == (2, 2, 24, 24) and am.layers == [0, 1] and am.heads == 2
    assert am.text == text[:24] and "cut to its first 24 of 38 characters" in am.note
    np.testing.assert_allclose(am.weights.sum(-1), 1.0, atol=1e-6)    # each row a distribution
    assert (np.triu(am.weights, k=1) == 0).all()                      # causal: no future key
    params = {k: v.detach().double().numpy() for k, v in gpt.net.state_dict().items()}
    expected = ref_transformer.attention_maps(params, gpt.vocab.encode(text[:24]), heads=2)
    assert np.abs(am.weights - expected).max() < 1e-6
    top = ATT.attention(gpt.net, gpt.vocab, text[:10], layer=-1)      # a prefix: the same rows
    assert top.layers == [1] and top.note == ""
    assert np.abs(top.weights[0] - expected[1, :, :10, :10]).max() < 1e-6


def test_the_attention_figure_draws_those_weights_labelled_by_character(gpt):
    am = ATT.attention(gpt.net, gpt.vocab, "Mr Bennet replied")
    fig = attention_figure(am)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 4                                           # 2 layers x 2 heads
    for k, ax in enumerate(panels):
        np.testing.assert_array_equal(ax.images[0].get_array(), am.weights[k // 2, k % 2])
    labels = [t.get_text() for t in panels[-1].get_xticklabels()]
    assert labels == [A.visible(c) for c in "Mr Bennet replied"] and labels[2] == "\u2423"


def test_attention_and_hidden_units_each_refuse_the_other_model(gpt, model):
    with pytest.raises(CharwiseError, match="has no attention"):
        ATT.attention(model.net, model.vocab, "Mr Bennet")
    with pytest.raises(CharwiseError, match="no units to draw"):
        N.layer_states(gpt.net, gpt.vocab.encode("Mr Bennet"))
    with pytest.raises(CharwiseError, match="--layer must be in 0..1"):
        ATT.attention(gpt.net, gpt.vocab, "Mr Bennet", layer=2)
