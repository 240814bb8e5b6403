"""--init-from: vocabulary merge, weight transplant, the bundled-model name, and bad input."""
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from charwise.cli import main
from charwise.data.vocab import Vocab
from charwise.errors import CharwiseError
from charwise.model import CharRNN
from charwise.runs import bundled, transfer
from charwise.runs.checkpoint import load_model
from charwise.settings.train import ModelConfig
from charwise.training import train

QUIET = dict(progress=False, log=lambda *a: None)
NEW_TEXT = "Zoë's café — {naïve} ~ façade! " * 40 + "The end.\n"     # é ë ï ç — { } ~ Z are new


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A tiny LSTM trained for a few steps on the bundled corpus: a stand-in for a real SOURCE."""
    out = tmp_path_factory.mktemp("src") / "run"
    train(None, out=out, preset="spec", max_steps=20, eval_every=0, **QUIET)
    return out


@pytest.fixture
def fake_base(source_run, tmp_path, monkeypatch):
    """The tiny run installed as the bundled `base` (run.json + weights + their sha256)."""
    root = tmp_path / "models"
    base = root / "base"
    base.mkdir(parents=True)
    for name in ("run.json", "model.safetensors"):
        shutil.copy(source_run / name, base / name)
    sha = bundled.sha256_file(base / "model.safetensors")
    (base / bundled.SHA_FILE).write_text(f"{sha}  model.safetensors\n")
    monkeypatch.setattr(bundled, "models_root", lambda: root)
    bundled._verified.clear()
    return base


@pytest.fixture
def new_text(tmp_path):
    p = tmp_path / "new.txt"
    p.write_text(NEW_TEXT, encoding="utf-8")
    return p


# ----------------------------------------------------------------------------- pure functions

def test_merged_vocab_is_the_sorted_union():
    a, b = Vocab(tuple("abcx")), Vocab(tuple("bcdé"))
    m = transfer.merge_vocab(a, b)
    assert m.chars == tuple("abcdxé")


def test_transplant_moves_shared_and_source_only_rows_and_makes_new_ones_unlikely():
    torch.manual_seed(0)
    src_vocab = Vocab(tuple("ace"))
    net = CharRNN(ModelConfig(vocab_size=3, embed_dim=4, hidden_size=5))
    with torch.no_grad():
        net.head.bias.copy_(torch.tensor([0.5, -2.0, 1.0]))
    state = net.state_dict()
    vocab = transfer.merge_vocab(src_vocab, Vocab(tuple("bce")))        # a b c e
    new = transfer.transplant(state, src_vocab, vocab)
    for c in "ace":                      # shared (c, e) and SOURCE-only (a): the same rows
        i, j = src_vocab.chars.index(c), vocab.chars.index(c)
        for key in transfer.VOCAB_ROWS:
            assert torch.equal(new[key][j], state[key][i]), (c, key)
    b = vocab.chars.index("b")           # new: zero output weights, SOURCE's lowest bias
    assert torch.equal(new["head.weight"][b], torch.zeros(5))
    assert new["head.bias"][b] == -2.0
    assert torch.allclose(new["embed.weight"][b], state["embed.weight"].mean(0))
    for key, v in state.items():         # everything else untouched
        if key not in transfer.VOCAB_ROWS:
            assert torch.equal(new[key], v)
    model = CharRNN(ModelConfig(vocab_size=4, embed_dim=4, hidden_size=5))
    model.load_state_dict(new)           # the shapes fit a model of the merged vocabulary


def test_remap_keeps_the_characters():
    a, m = Vocab(tuple("bde")), Vocab(tuple("abcdez"))
    ids = a.encode("bedeb")
    out = transfer.remap(ids, a, m, chunk=2)
    assert m.decode(out) == "bedeb" and out.dtype == m.dtype


# ----------------------------------------------------------------------------- training from a run

def test_init_from_a_run_starts_from_its_weights(source_run, new_text, tmp_path):
    src_net, src_vocab, _ = load_model(source_run)
    src = {k: v.clone() for k, v in src_net.state_dict().items()}
    out = tmp_path / "ft"
    # one step at a negligible rate: the saved weights are the transplanted ones to ~1e-12
    train(new_text, out=out, init_from=source_run, max_steps=1, lr=1e-12, warmup_steps=0, **QUIET)
    info = json.loads((out / "run.json").read_text())
    vocab = Vocab(tuple(info["vocab"]))
    assert set(vocab.chars) == set(src_vocab.chars) | set(NEW_TEXT)
    assert info["model"]["vocab_size"] == len(vocab) == len(info["char_counts"])
    for k in ("cell", "embed_dim", "hidden_size", "layers"):
        assert info["model"][k] == getattr(src_net.cfg, k)
    rec = info["init_from"]
    assert rec["sha256"] == bundled.sha256_file(source_run / "model.safetensors")
    assert rec["new_chars"] == sorted(set(NEW_TEXT) - set(src_vocab.chars))
    w = load_file(out / "model.safetensors")
    for c in src_vocab.chars:            # shared and SOURCE-only rows: SOURCE's
        i, j = src_vocab.chars.index(c), vocab.chars.index(c)
        for key in transfer.VOCAB_ROWS:
            assert torch.allclose(w[key][j], src[key][i], atol=1e-8), (c, key)
    for c in rec["new_chars"]:           # new rows: present and unlikely
        j = vocab.chars.index(c)
        assert abs(float(w["head.bias"][j]) - float(src["head.bias"].min())) < 1e-8
    assert torch.allclose(w["rnn.weight_hh_l0"], src["rnn.weight_hh_l0"], atol=1e-8)
    # the run resumes (its text is re-encoded in the merged vocabulary) and samples new characters
    train(out=out, resume=True, max_steps=3, **QUIET)
    assert json.loads((out / "run.json").read_text())["step"] == 3
    assert main(["sample", str(out), "--prime", "Zoë", "-n", "5", "--seed", "1"]) == 0


@pytest.mark.parametrize("flags, message", [
    (["--init-from", "nowhere"], "--init-from nowhere: nowhere: no such run directory"),
    (["--cell", "gru"], "is an LSTM model; --cell gru asks for a GRU"),
    (["--hidden-size", "64"], "has hidden size 128; --hidden-size 64 contradicts it"),
    (["--resume"], "--init-from and --resume do not mix"),
])
def test_bad_init_from_is_one_line_exit_2_nothing_written(source_run, new_text, tmp_path, capsys,
                                                          flags, message):
    out = tmp_path / "out"
    argv = ["train", str(new_text), "--out", str(out), "--max-steps", "1", "--quiet"]
    if flags[0] != "--init-from":
        argv += ["--init-from", str(source_run)]
    assert main(argv + flags) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_finetune_preset_needs_init_from(new_text, tmp_path, capsys):
    assert main(["train", str(new_text), "--out", str(tmp_path / "o"), "--preset", "finetune"]) == 2
    assert "--preset finetune is for --init-from" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_init_from_a_text_file_is_refused(new_text, tmp_path, capsys):
    assert main(["train", str(new_text), "--out", str(tmp_path / "o"), "--init-from",
                 str(new_text)]) == 2
    assert "--init-from" in capsys.readouterr().err and not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- the name `base`

def test_base_is_accepted_where_a_run_directory_is(fake_base, new_text, tmp_path, capsys):
    import charwise
    model = charwise.load("base")
    assert model.generate("The", 10, seed=0).startswith("The")
    assert main(["sample", "base", "--prime", "The night", "-n", "20", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("The night")
    assert main(["info", "base", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_dir"] == str(fake_base)
    held = tmp_path / "held.txt"
    held.write_text("It is a truth universally acknowledged that a single man", encoding="utf-8")
    assert main(["eval", "base", str(held), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] < np.log(len(model.vocab))
    out = tmp_path / "ft"
    train(new_text, out=out, init_from="base", max_steps=2, **QUIET)
    rec = json.loads((out / "run.json").read_text())["init_from"]
    assert rec["name"] == "base"
    assert rec["sha256"] == (fake_base / bundled.SHA_FILE).read_text().split()[0]
    assert 'init-from = "base"' in (out / "config.toml").read_text()


def test_damaged_base_is_reported_as_such(fake_base, tmp_path, capsys):
    weights = fake_base / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF                                # one flipped bit in a weight: still loadable
    weights.write_bytes(bytes(data))
    assert main(["sample", "base", "-n", "5"]) == 2
    err = capsys.readouterr().err
    assert "bundled model is damaged" in err and err.count("\n") == 1
    with pytest.raises(CharwiseError, match="damaged"):
        import charwise
        charwise.load("base")
    assert main(["train", "--out", str(tmp_path / "o"), "--init-from", "base"]) == 2
    assert "damaged" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_missing_checksum_is_damage(fake_base, capsys):
    (fake_base / bundled.SHA_FILE).unlink()
    assert main(["info", "base"]) == 2
    assert "damaged" in capsys.readouterr().err


def test_a_local_directory_is_used_with_a_path(source_run, fake_base, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(source_run, tmp_path / "base")
    assert main(["info", "./base", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_dir"] == "base"


def test_eval_every_epochs_counts_passes_over_the_text(tmp_path):
    from charwise.settings.train import resolve
    # 1,153 characters in 4 streams of windows of 8: 36 windows a pass
    res = train(None, out=tmp_path / "r", preset="spec", max_steps=80, eval_every_epochs=1.0,
                seq_len=8, batch_size=4, **QUIET)
    assert [h["step"] for h in res.history] == [36, 72, 80]
    assert resolve("finetune")[1].eval_every_epochs == 1.0
    assert resolve("finetune", eval_every=7)[1].eval_every_epochs is None   # a cadence you give wins
