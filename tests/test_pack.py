"""charwise pack: a run as one file (safetensors: the best weights; run.json and a model card in
its header), taken wherever a run directory is (issue 28 item 4)."""
import json
import struct

import pytest

import charwise
from charwise.cli import main


def run_cli(capsys, *argv) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def one_line_error(capsys, *argv) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("charwise: error: "), err
    return err[0]


@pytest.fixture(scope="module")
def packed(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("pack") / "spec.charwise"
    res = charwise.pack(trained_run, out)
    assert res["path"] == str(out) and out.is_file()
    return out


def test_pack_round_trips_sample_and_eval(capsys, trained_run, packed, tmp_path):
    a = run_cli(capsys, "sample", str(packed), "--seed", "3", "-n", "100")
    b = run_cli(capsys, "sample", str(trained_run), "--seed", "3", "-n", "100")
    assert a == b and len(a) > 50
    text = tmp_path / "t.txt"
    text.write_text("Mr Bennet replied that he had not. It is a truth universally acknowledged.")
    assert charwise.evaluate(packed, text, oov="skip") == charwise.evaluate(trained_run, text, oov="skip")
    e1 = json.loads(run_cli(capsys, "eval", str(packed), str(text), "--oov", "skip", "--json"))
    e2 = json.loads(run_cli(capsys, "eval", str(trained_run), str(text), "--oov", "skip", "--json"))
    assert e1 == e2


def test_the_file_is_safetensors_with_run_json_and_a_model_card(trained_run, packed):
    from safetensors import safe_open
    with safe_open(str(packed), framework="pt") as f:
        meta = f.metadata()
        names = set(f.keys())
    run = json.loads((trained_run / "run.json").read_text())
    assert json.loads(meta["run.json"]) == run
    card = json.loads(meta["model_card"])
    assert card["text"]["name"] == "pride_and_prejudice.txt" and card["text"]["sha256"] == run["corpus"]["sha256"]
    assert card["text"]["chars"] == run["corpus"]["chars"] and card["training"]["steps"] == run["step"]
    assert card["training"]["seconds"] == run["train_seconds"]
    assert card["held_out"]["loss_nats_per_char"] == run["best"]["val_loss"]
    assert "embed.weight" in names and not any(n.startswith(("optim/", "rng/")) for n in names)
    assert charwise.info(packed)["model_card"] == card


def test_init_from_a_packed_file(packed, tmp_path):
    res = charwise.train(None, out=tmp_path / "ft", init_from=str(packed), max_steps=3, threads=1,
                         device="cpu", quiet=True)
    info = json.loads((tmp_path / "ft" / "run.json").read_text())
    assert res.steps == 3 and info["init_from"]["path"] == str(packed.resolve())
    assert info["init_from"]["weights"] == packed.name and len(info["init_from"]["sha256"]) == 64


def test_pack_refuses_to_overwrite_without_force(capsys, trained_run, packed, tmp_path):
    out = tmp_path / "m.charwise"
    run_cli(capsys, "pack", str(trained_run), "-o", str(out))
    assert "exists; use --force" in one_line_error(capsys, "pack", str(trained_run), "-o", str(out))
    assert run_cli(capsys, "pack", str(trained_run), "-o", str(out), "--force").startswith(f"wrote {out}")
    assert not list(tmp_path.glob(".*.tmp"))                 # written through a temp file + rename
    assert "packed model already" in one_line_error(capsys, "pack", str(packed), "-o", str(tmp_path / "x"))


def test_a_damaged_packed_file_is_a_one_line_error(capsys, packed, tmp_path):
    data = packed.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    cases = {"short.charwise": data[:5], "header.charwise": data[:8 + n // 2],
             "body.charwise": data[:len(data) - 1000], "noise.charwise": b"\x00\x01" * 500,
             "foreign.charwise": None}
    import torch
    from safetensors.torch import save
    cases["foreign.charwise"] = save({"w": torch.zeros(3)}, metadata={"format_version": "1"})
    for name, content in cases.items():
        bad = tmp_path / name
        bad.write_bytes(content)
        # info reads the header alone (as it reads run.json alone): a cut body is not its to see
        info = [["info", str(bad)]] if name != "body.charwise" else []
        for argv in [["sample", str(bad), "-n", "5"], ["eval", str(bad), str(bad)], *info]:
            msg = one_line_error(capsys, *argv)
            assert str(bad) in msg, (name, argv, msg)
    assert "charwise pack" in one_line_error(capsys, "sample", str(tmp_path / "foreign.charwise"))
    assert "--which last" in one_line_error(capsys, "sample", str(packed), "--which", "last")


def test_serve_and_export_take_a_packed_file(packed, trained_run, tmp_path):
    pytest.importorskip("starlette")
    from charwise.asgi import background_server
    from charwise.server import create_app
    from test_serve import events, request
    with background_server(create_app(packed)) as url:
        conn, r = request(url, "POST", "/api/generate", {"prime": "Mr", "n": 30, "temperature": 0})
        text = "".join(e["c"] for e in events(r) if "c" in e)
    assert "Mr" + text == charwise.load(trained_run).generate("Mr", 30, 0)
    copy = tmp_path / "m.charwise"
    copy.write_bytes(packed.read_bytes())
    res = charwise.export(copy, "web")               # default: beside the file, named after it
    assert res["path"] == str(tmp_path / "m.html")
