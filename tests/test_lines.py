"""Line mode on a real list (tests/data/first_names.txt, from Faker: see tests/data/README.md):
detection, warnings, item batches, per-item evaluation, whole items sampled, novelty."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charwise.data.bytevocab import CharDecoder
from charwise.data.lines import (
    IGNORE,
    LineStats,
    NoveltyFilter,
    encode_items,
    evaluate_items,
    huge_lines_warning,
    item_arrays,
    split_items,
    split_train_val,
    suggest_line_mode,
)
from charwise.data.vocab import Vocab
from charwise.errors import CharwiseError
from charwise.generation.loop import Generation, run
from charwise.generation.sampler import draw
from charwise.generation.steps import make_step
from charwise.model import CharRNN
from charwise.settings.train import ModelConfig
from charwise.training.batches import ItemBatches

HERE = Path(__file__).parent
NAMES = (HERE / "data" / "first_names.txt").read_text(encoding="utf-8")
SHAKESPEARE = HERE.parent / "data" / "tinyshakespeare.txt"


def test_split_items():
    assert split_items("a\r\nbb\n\n  \nc\rd\n") == ["a", "bb", "c", "d"]


def test_names_suggest_line_mode_prose_does_not():
    stats = LineStats.of(NAMES)
    assert stats.lines == 690 and stats.distinct == 690 and stats.blank == 0
    note = suggest_line_mode(stats)
    assert note and "690 lines" in note and "--line-mode" in note
    play = SHAKESPEARE.read_text(encoding="utf-8")[:200_000]
    assert suggest_line_mode(LineStats.of(play)) is None
    assert suggest_line_mode(LineStats.of("same\n" * 100)) is None      # not distinct
    assert suggest_line_mode(LineStats.of("a\nb\n")) is None             # too few lines


def test_huge_lines_warned_with_numbers():
    assert huge_lines_warning(LineStats.of(NAMES)) is None
    text = "\n".join(["short"] * 50 + ["x" * 50_000])
    w = huge_lines_warning(LineStats.of(text))
    assert w and "50,000" in w and "median 5" in w


def test_split_is_by_item_not_position():
    items = split_items(NAMES)
    train, val = split_train_val(items, 0.1)
    assert len(train) + len(val) == 690 and 30 < len(val) < 110
    assert not set(train) & set(val)
    # the held-out names are spread over the alphabet, not the list's tail
    assert val[0][0] < "D" and val[-1][0] > "R"
    assert split_train_val(list(reversed(items)), 0.1)[1] == list(reversed(val))


def test_item_arrays_and_batches():
    x, y = item_arrays([np.array([1, 2, 3]), np.array([4])], end_id=9)
    assert x.tolist() == [[9, 1, 2, 3], [9, 4, 9, 9]]
    assert y.tolist() == [[1, 2, 3, 9], [4, 9, IGNORE, IGNORE]]
    items = [np.array([i] * (1 + i % 3)) for i in range(10)]
    b = ItemBatches(items, 4, end_id=99, seed=0)
    assert b.windows_per_epoch == 3 and not b.carries_state
    seen = []
    for k in range(3):
        x, y = b.window(k, 0)
        assert x.shape[0] == 4 and (x[:, 0] == 99).all()
        seen += [int(r[0]) for r in x[:, 1:2]]
    assert set(seen) == set(range(10))                         # every item in an epoch
    assert not np.array_equal(b.order(0), b.order(1))
    with pytest.raises(CharwiseError):
        ItemBatches([], 4, 0)


def train_names(steps=60):
    items = split_items(NAMES)
    vocab = Vocab.from_text("".join(items))
    end = len(vocab)
    torch.manual_seed(0)
    net = CharRNN(ModelConfig(embed_dim=16, hidden_size=48, vocab_size=end + 1))
    opt = torch.optim.Adam(net.parameters(), lr=2e-2)
    batches = ItemBatches(encode_items(vocab.encode, items), 32, end, seed=0)
    for step in range(steps):
        x, y = batches.window(step % batches.windows_per_epoch, step // batches.windows_per_epoch)
        logits, _ = net(torch.from_numpy(x))                      # a fresh state per batch
        loss = F.cross_entropy(logits.reshape(-1, end + 1), torch.from_numpy(y).reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval(), vocab, items


@pytest.fixture(scope="module")
def names_model():
    return train_names()


def test_evaluate_items_matches_a_manual_sum(names_model):
    net, vocab, items = names_model
    end = len(vocab)
    some = encode_items(vocab.encode, items[:7])
    res = evaluate_items(net, some, end, batch_size=3)
    total = 0.0
    with torch.no_grad():
        for a in some:
            x = torch.tensor([[end] + a.tolist()])
            y = torch.tensor(a.tolist() + [end])
            total += float(F.cross_entropy(net(x)[0][0], y, reduction="sum"))
    chars = sum(len(a) for a in some)
    assert res["items"] == 7 and res["chars"] == chars
    assert res["loss_per_item"] == pytest.approx(total / 7, rel=1e-5)
    assert res["loss"] == pytest.approx(total / chars, rel=1e-5)
    assert res["bits_per_char"] == pytest.approx(total / chars / math.log(2), rel=1e-5)


def test_model_learned_and_samples_whole_items(names_model):
    net, vocab, items = names_model
    end = len(vocab)
    res = evaluate_items(net, encode_items(vocab.encode, items), end)
    assert res["loss"] < math.log(len(vocab)) - 1.0             # well below uniform guessing
    S = 20
    step = make_step(net, S)
    with torch.inference_mode():
        logits, state = net(torch.full((S, 1), end), net.zero_state(S))
    rng = np.random.default_rng(0)
    gen = Generation()
    texts = [""] * S
    for out in run(step, logits[:, -1].numpy(), step.begin(state), 40,
                   lambda lg: draw(lg, rng, 0.8), [CharDecoder(vocab.chars) for _ in range(S)],
                   end_id=end, result=gen):
        texts = [t + o for t, o in zip(texts, out)]
    assert sum(e.reason == "end" for e in gen.ends) >= S - 1      # whole items end on their own
    assert all("\n" not in t for t in texts)
    assert sum(t[:1].isupper() for t in texts) >= S - 2          # names start with a capital
    novelty = NoveltyFilter(items)
    new = [t for t in texts if novelty(t)]
    assert novelty.seen == S and novelty.new == len(new) and set(new).isdisjoint(items)
    assert f"of {S} generated items were new" in novelty.report()


def test_an_empty_item_is_not_a_new_item():
    """--new-only: an item ended at once (empty) is dropped like a training line, and said."""
    novelty = NoveltyFilter(["Anna", "Bob"])
    assert [novelty(t) for t in ("Anna", "", "Cleo", "")] == [False, False, True, False]
    assert (novelty.seen, novelty.new, novelty.empty) == (4, 1, 2)
    assert novelty.report().endswith("lines of the training text, 2 empty")
