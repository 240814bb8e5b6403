"""torchrun + gloo on this CPU: 2 processes train exactly like 1 with the same global batch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
# --device cpu: these runs mean gloo on the CPU (on a GPU machine "auto" would pick NCCL and
# one GPU per rank)
FLAGS = ["--max-steps", "30", "--batch-size", "8", "--precision", "fp32", "--threads", "1",
         "--eval-every", "10", "--device", "cpu", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def charwise(*args, procs=1, check=True):
    cmd = (TORCHRUN if procs == 2 else [sys.executable]) + ["-m", "charwise", *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    if check:
        assert p.returncode == 0, "\n".join(l for l in p.stderr.splitlines() if "rank0" not in l)[-6000:]
    return p


def curve(run: Path):
    return [json.loads(l)["loss"] for l in (run / "metrics.jsonl").read_text().splitlines()
            if '"event"' not in l]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    charwise("train", "--out", d / "one", *FLAGS)
    charwise("train", "--out", d / "two", *FLAGS, procs=2)
    return d


def test_two_processes_match_one(runs):
    one, two = curve(runs / "one"), curve(runs / "two")
    assert len(one) == len(two) == 30
    assert max(abs(a - b) for a, b in zip(one, two)) < 1e-4
    wa, wb = load_file(runs / "one" / "last.safetensors"), load_file(runs / "two" / "last.safetensors")
    for k in wa:
        if k.startswith("model/"):
            assert torch.allclose(wa[k], wb[k], atol=1e-5), k
    # the carried state of all 8 streams is gathered into the checkpoint
    assert wb["state/0"].shape == wa["state/0"].shape == (1, 8, 128)
    info = json.loads((runs / "two" / "run.json").read_text())
    assert info["world_size"] == 2
    one_h = json.loads((runs / "one" / "run.json").read_text())["history"]
    assert [h["val_loss"] for h in info["history"]] == pytest.approx([h["val_loss"] for h in one_h], abs=1e-4)


def test_distributed_resume_and_world_size_mismatch(runs, tmp_path):
    part = tmp_path / "part"
    charwise("train", "--out", part, *FLAGS[:1], "20", *FLAGS[2:], procs=2)
    p = charwise("train", "--resume", "--out", part, "--max-steps", "30", "--device", "cpu",
                 check=False)
    assert p.returncode == 2 and "trained with 2 process(es)" in p.stderr
    charwise("train", "--resume", "--out", part, "--max-steps", "30", "--device", "cpu", "--quiet",
             procs=2)
    wa, wb = load_file(runs / "two" / "last.safetensors"), load_file(part / "last.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "resumed 2-process run differs"


def test_batch_must_split_evenly(tmp_path):
    p = charwise("train", "--out", tmp_path / "x", "--batch-size", "7", "--max-steps", "2",
                 "--device", "cpu", "--quiet", procs=2, check=False)
    assert p.returncode != 0 and "divisible" in p.stderr


def _worker_pids(launcher_pid: int) -> dict[int, int]:
    """rank -> pid of torchrun's worker processes (read from /proc)."""
    ranks = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if int((d / "stat").read_text().split(") ")[1].split()[1]) != launcher_pid:
                continue
            env = dict(kv.split("=", 1) for kv in (d / "environ").read_text().split("\0") if "=" in kv)
        except (OSError, IndexError, ValueError):
            continue
        if "RANK" in env:
            ranks[int(env["RANK"])] = int(d.name)
    return ranks


def test_a_dead_rank_stops_the_others(tmp_path):
    import signal
    import time
    out = tmp_path / "run"
    p = subprocess.Popen(TORCHRUN + ["-m", "charwise", "train", "--out", str(out), "--max-steps", "100000",
                                     "--eval-every", "0", "--threads", "1", "--device", "cpu", "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    t = time.time()
    while time.time() - t < 120 and p.poll() is None:
        if (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").stat().st_size > 0:
            break
        time.sleep(0.05)
    ranks = {}
    while len(ranks) < 2 and time.time() - t < 120:
        ranks = _worker_pids(p.pid)
    os.kill(ranks[1], signal.SIGKILL)
    killed = time.time()
    _, err = p.communicate(timeout=120)
    assert p.returncode != 0
    assert time.time() - killed < 60                       # stopped, did not hang
    assert "Traceback" not in "\n".join(l for l in err.splitlines() if l.startswith("[rank0]"))


RANK_SCRIPT = r"""
import os, sys
import torch
from safetensors.torch import save_file
from charwise.training.trainer import Trainer

masks = []


def first_mask(module, inputs, output):
    # the first dropout mask this rank draws (on the embedding's output)
    if isinstance(module, torch.nn.Dropout) and module.training and not masks:
        masks.append((output != 0).to(torch.uint8).contiguous())


torch.nn.modules.module.register_module_forward_hook(first_mask)
out = sys.argv[1]
t = Trainer(None, out=out, preset="spec", progress=False, log=lambda *a: None, device="cpu",
            precision="fp32", threads=1, max_steps=12, eval_every=0, batch_size=8, dropout=0.3)
t.fit()
weights = {k: v.contiguous() for k, v in t.run.model.state_dict().items()}
save_file({**weights, "mask": masks[0]}, f"{out}/rank{os.environ['RANK']}.safetensors")
"""


def test_ranks_draw_their_own_dropout_masks_and_keep_the_same_weights(tmp_path):
    """Issue 20 item 2: with one seed every rank drew the same dropout masks; now each rank has
    its own, while DDP keeps the weights identical on every rank."""
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    out = tmp_path / "run"
    p = subprocess.run(TORCHRUN + [str(script), str(out)], capture_output=True, text=True,
                       timeout=300, env=ENV)
    assert p.returncode == 0, p.stderr[-4000:]
    r0, r1 = load_file(out / "rank0.safetensors"), load_file(out / "rank1.safetensors")
    assert r0["mask"].shape == r1["mask"].shape == (4, 40, 32)      # 4 of the 8 streams each
    assert not torch.equal(r0["mask"], r1["mask"])
    for k in r0:
        if k != "mask":
            assert torch.equal(r0[k], r1[k]), k
    # the checkpoint keeps each rank's own RNG state (a resume continues both)
    rng = load_file(out / "last.safetensors")["rng/torch"]
    assert rng.shape[0] == 2 and not torch.equal(rng[0], rng[1])


RANK_REPORT = """
import json, os, sys
from safetensors.torch import save_file
from charwise.training.trainer import Trainer
out = sys.argv[1]
t = Trainer(None, out=out, preset="spec", max_time=float(sys.argv[2]), max_steps=10**6,
            device="cpu", batch_size=8, precision="fp32", threads=1, eval_every=0, progress=False,
            log=lambda *a: None)
res = t.fit()
rank = os.environ["RANK"]
save_file({k: v.detach().contiguous() for k, v in t.run.model.state_dict().items()},
          f"{out}/rank{rank}.safetensors")
with open(f"{out}/rank{rank}.json", "w") as f:
    json.dump({"steps": res.steps, "why": res.stopped_because,
               "lr": t.run.engine.opt.param_groups[0]["lr"]}, f)
"""


def test_a_time_budget_is_decided_by_rank_0_for_every_rank(tmp_path):
    # Each rank has its own clock and only rank 0 measures the evaluation: if each computed the
    # learning rate and the stop from its own, the replicas would drift apart (issue 20, item 3)
    script, out = tmp_path / "report.py", tmp_path / "run"
    script.write_text(RANK_REPORT)
    p = subprocess.run(TORCHRUN + [str(script), str(out), "4"], capture_output=True, text=True,
                       timeout=300, env=ENV)
    assert p.returncode == 0, p.stderr[-4000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["why"] == r1["why"] == "time" and r0["steps"] == r1["steps"] > 0
    assert r0["lr"] == r1["lr"]
    w0, w1 = load_file(out / "rank0.safetensors"), load_file(out / "rank1.safetensors")
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)


RANK_OOM = """
import os, sys
import torch
from charwise.training.trainer import Trainer
out = sys.argv[1]
real = Trainer.train_step


def train_step(self, *a):
    if os.environ["RANK"] == "1" and self.state.step == 3:      # rank 1's own failure, not a peer's
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return real(self, *a)


Trainer.train_step = train_step
Trainer(None, out=out, preset="spec", progress=False, log=lambda *a: None, device="cpu",
        precision="fp32", threads=1, max_steps=50, eval_every=0, batch_size=8).fit()
"""


def test_a_ranks_own_error_is_reported_as_it_is(tmp_path):
    """Issue 29 item 6: rank 1's own out-of-memory was reported as "another training process
    stopped"; now only a backend (gloo/NCCL) error or timeout is, as rank 0 sees it here."""
    script = tmp_path / "oom.py"
    script.write_text(RANK_OOM)
    p = subprocess.run(TORCHRUN + [str(script), str(tmp_path / "run")], capture_output=True,
                       text=True, timeout=300, env=ENV)
    assert p.returncode != 0
    rank1 = "\n".join(l for l in p.stderr.splitlines() if l.startswith("[rank1]"))
    assert "OutOfMemoryError: CUDA out of memory" in rank1, p.stderr[-3000:]
    assert "another training process stopped" not in rank1


RANK_SYNCS = """
import json, os, sys
import torch.distributed as dist
from charwise.training import trainer as loop
out = sys.argv[1]
reads, reduces = [], []
real_reduce = dist.all_reduce


def all_reduce(t, *a, **kw):
    reduces.append(t.numel())
    return real_reduce(t, *a, **kw)


dist.all_reduce = all_reduce
loop.read_host = lambda values: reads.append(len(values)) or values.tolist()
loop.Trainer(None, out=out, preset="spec", progress=False, log=lambda *a: None, device="cpu",
             precision="fp32", threads=1, max_steps=12, eval_every=0, batch_size=8).fit()
with open(f"{out}/syncs{os.environ['RANK']}.json", "w") as f:
    json.dump({"reads": reads, "reduces": reduces}, f)
"""


def test_one_all_reduce_per_step_carries_the_loss_and_grad_norm(tmp_path):
    """Issue 29 item 10: under torchrun each step read its loss and grad norm (a sync) and then
    all-reduced and read the agreement (another); they now travel in the one all-reduce. Its
    mean loss is what metrics.jsonl records (test_two_processes_match_one)."""
    script = tmp_path / "syncs.py"
    script.write_text(RANK_SYNCS)
    p = subprocess.run(TORCHRUN + [str(script), str(tmp_path / "run")], capture_output=True,
                       text=True, timeout=300, env=ENV)
    assert p.returncode == 0, p.stderr[-4000:]
    for rank in (0, 1):
        syncs = json.loads((tmp_path / "run" / f"syncs{rank}.json").read_text())
        assert syncs["reads"] == []                           # no separate read of the step
        # 12 steps of (loss, grad norm, signal, 4 of rank 0's decisions); the start: no step
        assert syncs["reduces"] == [5] + [7] * 12


def test_one_process_is_a_dist_whose_collectives_return_their_input():
    """The loop calls the same collectives in one process as under torchrun (it never asks
    which): there they agree with no one, and each returns what it was given."""
    from charwise.training import distributed
    d = distributed.setup("cpu")
    assert type(d) is distributed.Dist and d.main and not d.enabled
    values, state = torch.tensor([2.5, 0.5]), torch.ones(1, 4, 3)
    assert d.agree(values, True, False, lead=(1.0, 0.25)) == (None, (True, False), (1.0, 0.25))
    assert d.broadcast_floats([3.0, 7.0]) == [3.0, 7.0]
    assert d.gather_rows(state, 1) is state
    model = torch.nn.Linear(2, 2)
    assert d.wrap(model, torch.device("cpu")) is model
    assert d.wait_group(10.0) is None and d.lost_peer(RuntimeError("gloo: timed out"), Path(".")) is None
    d.barrier(), d.shutdown()


def test_device_cuda_n_under_torchrun_is_one_line(monkeypatch):
    """Under torchrun each rank trains on its LOCAL_RANK's GPU: a cuda:N would pin them all to one."""
    from charwise.errors import CharwiseError
    from charwise.training import distributed
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(CharwiseError, match="--device cuda:1: under torchrun each process trains on "
                                            "the GPU of its LOCAL_RANK; use --device cuda"):
        distributed.setup("cuda:1")


def test_a_transformer_trains_under_torchrun_like_in_one_process(tmp_path):
    """No carried state to gather: the ranks' windows make the same global batch as one process's."""
    tiny = ["--cell", "transformer", "--layers", "1", "--embed-dim", "16", "--heads", "2",
            "--seq-len", "16", "--max-steps", "8", "--batch-size", "4", "--precision", "fp32",
            "--threads", "1", "--eval-every", "4", "--device", "cpu", "--quiet"]
    charwise("train", "--out", tmp_path / "one", *tiny)
    charwise("train", "--out", tmp_path / "two", *tiny, procs=2)
    one, two = curve(tmp_path / "one"), curve(tmp_path / "two")
    assert len(one) == len(two) == 8 and max(abs(a - b) for a, b in zip(one, two)) < 1e-4
    wb = load_file(tmp_path / "two" / "last.safetensors")
    assert not any(k.startswith("state/") for k in wb)
