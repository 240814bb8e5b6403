"""The batched generation loop: samples end on their own (stop string, end symbol, length),
finished rows leave the batch, and nothing runs once all are done."""
import numpy as np
import torch

from charwise.data.bytevocab import CharDecoder, Utf8Decoder
from charwise.generation.loop import Generation, run, take_rows


class Script:
    """A toy step: sample s emits scripts[s] symbol by symbol (logits one-hot), then repeats
    its last symbol. The state holds each row's sample index and position; counts the rows
    it was asked to step."""

    def __init__(self, scripts, V):
        self.scripts, self.V, self.rows_stepped, self.calls = scripts, V, [], 0

    def logits(self, state):
        who, pos = state[0][0, :, 0].astype(int), state[0][0, :, 1].astype(int)
        out = np.full((len(who), self.V), -10.0)
        for r, (w, p) in enumerate(zip(who, pos)):
            seq = self.scripts[w]
            out[r, seq[min(p, len(seq) - 1)]] = 10.0
        return out

    def start(self):
        S = len(self.scripts)
        state = (np.stack([np.arange(S), np.zeros(S)], axis=1)[None].astype(float),)
        return self.logits(state), state

    def __call__(self, ids, state):
        self.calls += 1
        self.rows_stepped.append(len(ids))
        h = state[0].copy()
        h[0, :, 1] += 1
        return self.logits((h,)), (h,)


argmax = lambda logits: logits.argmax(axis=1)        # noqa: E731
CHARS = tuple("ab\n.XYZ")
ID = {c: i for i, c in enumerate(CHARS)}


def ids(text):
    return [ID[c] for c in text]


def collect(gen, S):
    cols = [""] * S
    for out in gen:
        assert len(out) == S
        for s, t in enumerate(out):
            cols[s] += t
    return cols


def test_each_sample_stops_on_its_own_and_rows_leave():
    scripts = [ids("ab\n\nXYZ"), ids("aaaaaaaaaa"), ids("b\n\nab")]
    step = Script(scripts, len(CHARS))
    logits, state = step.start()
    res = Generation()
    texts = collect(run(step, logits, state, 10, argmax, [CharDecoder(CHARS) for _ in scripts],
                        stops=["\n\n"], result=res), 3)
    assert texts == ["ab", "aaaaaaaaaa", "b"]
    assert [e.reason for e in res.ends] == ["stop", "length", "stop"]
    assert res.ends[0].stop == "\n\n" and res.ends[0].steps == 4
    # sample 2 ends at step 3, sample 0 at step 4: the batch shrinks 3 -> 2 -> 1
    assert step.rows_stepped == [3, 3, 2] + [1] * 6


def test_keep_stop_and_all_done_early():
    scripts = [ids("a.b"), ids("ab.")]
    step = Script(scripts, len(CHARS))
    logits, state = step.start()
    texts = collect(run(step, logits, state, 100, argmax, [CharDecoder(CHARS)] * 2,
                        stops=["."], keep_stop=True), 2)
    assert texts == ["a.", "ab."]
    assert step.calls == 2                          # not 99: the loop ends with the last sample


def test_end_symbol_ends_an_item():
    scripts = [ids("ab") + [len(CHARS)], ids("b") + [len(CHARS)]]
    step = Script(scripts, len(CHARS) + 1)
    logits, state = step.start()
    res = Generation()
    texts = collect(run(step, logits, state, 50, argmax, [CharDecoder(CHARS)] * 2,
                        end_id=len(CHARS), result=res), 2)
    assert texts == ["ab", "b"] and [e.reason for e in res.ends] == ["end", "end"]


def test_without_stops_it_is_plain_sampling():
    scripts = [ids("abXab"), ids("YYYYY")]
    step = Script(scripts, len(CHARS))
    logits, state = step.start()
    steps = list(run(step, logits, state, 5, argmax, [CharDecoder(CHARS)] * 2))
    assert steps == [["a", "Y"], ["b", "Y"], ["X", "Y"], ["a", "Y"], ["b", "Y"]]


def test_bytes_count_characters_and_hold_back():
    text = "é世a".encode()                               # 2 + 3 + 1 bytes, 3 characters
    step = Script([list(text) + [ord("z")] * 20], 257)
    logits, state = step.start()
    steps = list(run(step, logits, state, 3, argmax, [Utf8Decoder()]))
    # a character appears only when its last byte has come
    assert [s[0] for s in steps] == ["", "é", "", "", "世", "a"]


def test_bytes_stop_inside_multibyte_text():
    text = "世界。次".encode()
    step = Script([list(text)], 257)
    logits, state = step.start()
    res = Generation()
    out = collect(run(step, logits, state, 20, argmax, [Utf8Decoder()], stops=["。"], result=res), 1)
    assert out == ["世界"] and res.ends[0].reason == "stop"


def test_invalid_bytes_are_replaced_and_reported():
    step = Script([[0x80, ord("a"), 0xE4, 0xB8]], 257)      # stray byte; truncated at the end
    logits, state = step.start()
    res = Generation()
    out = collect(run(step, logits, state, 3, argmax, [Utf8Decoder()], max_steps=4, result=res), 1)
    assert out == ["\ufffda\ufffd"] and res.invalid == 2


def test_take_rows_numpy_and_torch():
    a = np.arange(12.0).reshape(1, 4, 3)
    assert take_rows((a,), np.array([2, 0]))[0].tolist() == [[a[0, 2].tolist(), a[0, 0].tolist()]]
    t = torch.arange(12.0).reshape(1, 4, 3)
    got = take_rows((t, t), np.array([3, 3]))
    assert got[0].shape == (1, 2, 3) and torch.equal(got[1][0, 1], t[0, 3])
