"""The GPU and torchrun code paths (issue 20), exercised on the CPU: each decision is a function
given the GPU's answers (faked here), and the CPU half of each fix runs for real. What only a GPU
can show (bf16 really used, fp32 really IEEE, resume bit-identical) is benchmarks/gpu.sh's."""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import charwise.scoring as ev
from charwise.errors import CharwiseError
from charwise.generation.steps import NumpyLSTMStep, make_step, step_kind
from charwise.model import CharRNN
from charwise.runs import resume
from charwise.settings.train import ModelConfig, resolve
from charwise.training import distributed, train
from charwise.training.setup import dropout_seed
from conftest import needs_bf16

QUIET = dict(progress=False, log=lambda *a: None)
CUDA = torch.device("cuda", 0)          # constructing a device touches no GPU


@pytest.fixture
def tf32_defaults():
    """Puts torch's TF32 settings (process-wide) back to its defaults after a test."""
    yield
    torch.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.fp32_precision = "none"
    torch.backends.mkldnn.matmul.fp32_precision = "none"
    torch.backends.cudnn.rnn.fp32_precision = torch.backends.cudnn.conv.fp32_precision = "tf32"


def fake_gpus(monkeypatch, *capabilities: tuple[int, int], current: int = 0):
    """GPUs of these compute capabilities (7.0: a V100, bf16 only emulated; 8.0 and later:
    in hardware), GPU `current` being torch's current device."""
    def capability(device=None):
        index = getattr(device, "index", device)
        return capabilities[current if index is None else index]
    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    monkeypatch.setattr(torch.version, "hip", None)


def test_auto_precision_does_not_count_emulated_bf16(monkeypatch):
    cfg = ModelConfig(vocab_size=10)
    fake_gpus(monkeypatch, (7, 0))
    assert ev.pick_precision("auto", CUDA, cfg) == "fp32"
    with pytest.raises(CharwiseError, match="no bf16 arithmetic"):
        ev.pick_precision("bf16", CUDA, cfg)
    assert ev.pick_precision("fp32", CUDA, cfg) == "fp32"
    fake_gpus(monkeypatch, (8, 0))
    assert ev.pick_precision("auto", CUDA, cfg) == "bf16"
    assert ev.pick_precision("bf16", CUDA, cfg) == "bf16"


def test_each_gpu_is_judged_by_its_own_capability(monkeypatch):
    """Issue 29 item 9: --device cuda:1 was judged by GPU 0 (torch.cuda.is_bf16_supported and
    is_tf32_supported ask the current device)."""
    cfg = ModelConfig(vocab_size=10)
    fake_gpus(monkeypatch, (7, 0), (9, 0), current=0)
    one = torch.device("cuda", 1)
    assert ev.pick_precision("auto", one, cfg) == "bf16"
    assert ev.pick_precision("auto", CUDA, cfg) == "fp32"
    assert ev.pick_precision("auto", torch.device("cuda"), cfg) == "fp32"       # the current GPU
    assert ev.recurrence_precision(one, "bf16") == "tf32"
    assert ev.runs_natively("bf16", one) and not ev.runs_natively("bf16", CUDA)
    fake_gpus(monkeypatch, (7, 0), (9, 0), current=1)
    assert ev.pick_precision("auto", torch.device("cuda"), cfg) == "bf16"


def test_recurrence_precision_says_what_the_recurrence_runs_in(monkeypatch, tf32_defaults):
    cpu = torch.device("cpu")
    assert ev.recurrence_precision(cpu, "bf16") == "bf16"
    assert ev.recurrence_precision(cpu, "fp32") == "fp32"
    assert ev.recurrence_precision(CUDA, "fp32") == "fp32"         # IEEE: fp32_flags
    # bf16 on a GPU: the recurrence runs outside autocast in fp32, TF32 where cuDNN uses it
    fake_gpus(monkeypatch, (8, 0))
    assert ev.recurrence_precision(CUDA, "bf16") == "tf32"
    fake_gpus(monkeypatch, (7, 5))                                 # pre-Ampere
    assert ev.recurrence_precision(CUDA, "bf16") == "fp32"
    fake_gpus(monkeypatch, (8, 0))
    with ev.fp32_flags(CUDA, "fp32"):
        assert ev.recurrence_precision(CUDA, "bf16") == "fp32"      # cuDNN set to IEEE


@pytest.mark.parametrize("precision", [pytest.param("bf16", marks=needs_bf16), "fp32"])
def test_cpu_records_the_dtype_the_recurrence_really_uses(precision):
    net = CharRNN(ModelConfig(vocab_size=10, hidden_size=16, embed_dim=8))
    seen = []
    net.rnn.register_forward_hook(lambda m, i, o: seen.append(o[0].dtype))
    x = torch.zeros(2, 5, dtype=torch.long)
    names = {torch.bfloat16: "bf16", torch.float32: "fp32"}
    with ev.autocast(torch.device("cpu"), precision):
        net(x)
    assert names[seen[-1]] == ev.recurrence_precision(torch.device("cpu"), precision)


def _ieee_now() -> tuple[str, ...]:
    return (torch.backends.cudnn.rnn.fp32_precision, torch.backends.cuda.matmul.fp32_precision,
            torch.backends.cudnn.conv.fp32_precision)


def test_fp32_on_a_gpu_means_ieee_for_cudnn_rnns_and_matmuls(tf32_defaults):
    rnn, matmul = torch.backends.cudnn.rnn, torch.backends.cuda.matmul
    before = rnn.fp32_precision, matmul.fp32_precision
    assert before[0] == "tf32"          # torch's default for cuDNN RNNs (docs/how-it-works.md says so)
    with ev.fp32_flags(CUDA, "fp32"):
        assert _ieee_now() == ("ieee",) * 3
        with ev.fp32_flags(CUDA, "fp32"):                  # nested: the inner exit keeps it
            pass
        assert _ieee_now() == ("ieee",) * 3
    assert (rnn.fp32_precision, matmul.fp32_precision) == before
    for device, precision in ((CUDA, "bf16"), (torch.device("cpu"), "fp32")):
        with ev.fp32_flags(device, precision):
            assert (rnn.fp32_precision, matmul.fp32_precision) == before


@pytest.mark.parametrize("legacy", ["set_float32_matmul_precision", "allow_tf32"])
def test_fp32_flags_after_the_callers_legacy_tf32_setting(tf32_defaults, legacy):
    """Issue 29 item 5: a caller that turned TF32 on through the legacy API. Reading
    matmul.allow_tf32 runs the check every cuBLAS fp32 matmul runs (Context::allowTF32CuBLAS:
    the legacy and the new setting must agree); it raised inside fp32_flags when only the new
    flag was set. The flag objects exist on a CPU build; CUDA is only named."""
    if legacy == "allow_tf32":
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        torch.set_float32_matmul_precision("high")
    callers = torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.fp32_precision
    with ev.fp32_flags(CUDA, "fp32"):
        assert torch.backends.cuda.matmul.allow_tf32 is False          # no "mix" error: IEEE
        assert torch.backends.cudnn.allow_tf32 is False                # conv and RNN agree
        assert _ieee_now() == ("ieee",) * 3
    assert (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.fp32_precision) == callers
    assert torch.backends.cuda.matmul.allow_tf32 is True                # the caller's TF32, as it was
    assert torch.backends.cudnn.rnn.fp32_precision == "tf32"


def test_fp32_flags_when_the_caller_already_mixed_the_apis(tf32_defaults):
    # TF32 turned on through the new flag alone: torch refuses to report the legacy setting;
    # fp32_flags still runs IEEE inside and puts the caller's state back as it was
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    with pytest.raises(RuntimeError, match="mix"):
        torch.get_float32_matmul_precision()
    with ev.fp32_flags(CUDA, "fp32"):
        assert torch.backends.cuda.matmul.allow_tf32 is False
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    with pytest.raises(RuntimeError, match="mix"):
        torch.get_float32_matmul_precision()


def test_cuda_rng_state_is_restored_per_rank_and_only_on_a_gpu():
    class FakeCuda:
        def __init__(self):
            self.calls = []

        def set_rng_state(self, state, device):
            self.calls.append((state.clone(), device))

    cpu_rows = torch.stack([torch.get_rng_state(), torch.Generator().manual_seed(5).get_state()])
    cuda_rows = torch.arange(32, dtype=torch.uint8).reshape(2, 16)
    tensors = {"rng/torch": cpu_rows, "rng/cuda": cuda_rows}
    fake = FakeCuda()
    resume.restore_torch_rng(tensors, 1, torch.device("cuda", 1), cuda=fake)
    assert torch.equal(torch.get_rng_state(), cpu_rows[1])
    assert len(fake.calls) == 1 and torch.equal(fake.calls[0][0], cuda_rows[1])
    assert fake.calls[0][1] == torch.device("cuda", 1)
    # a GPU run resumed on the CPU: its CUDA state is not used; a CPU checkpoint on a GPU: none
    resume.restore_torch_rng(tensors, 0, torch.device("cpu"), cuda=fake)
    resume.restore_torch_rng({"rng/torch": cpu_rows}, 0, CUDA, cuda=fake)
    assert len(fake.calls) == 1
    assert torch.equal(torch.get_rng_state(), cpu_rows[0])


def test_sampling_on_a_gpu_takes_the_numpy_step_for_few_streams_of_a_small_model():
    spec, _ = resolve("spec", vocab_size=65)
    large, _ = resolve("large", vocab_size=65)
    assert step_kind(spec, False, "cuda", 1) == "numpy"       # CPU copies of the weights
    assert step_kind(spec, False, "cuda", 256) == "fused"
    assert step_kind(large, False, "cuda", 1) == "fused"      # 21M weights a step: the GPU
    assert step_kind(large, False, "cpu", 1) == "numpy"
    assert step_kind(spec, False, "cuda", 1, fast=False) == "module"
    assert step_kind(spec, True, "cuda", 1) == "module"
    gru, _ = resolve("spec", vocab_size=65, cell="gru")
    assert step_kind(gru, False, "cuda", 1) == "module"
    net = CharRNN(spec).eval()
    assert isinstance(make_step(net, 1), NumpyLSTMStep)


def test_ranks_draw_their_own_dropout_masks():
    assert dropout_seed(1337, 0) != dropout_seed(1337, 1)
    assert dropout_seed(1337, 1) == dropout_seed(1337, 1)      # repeatable, resumable
    assert dropout_seed(1337, 1) != dropout_seed(1338, 0)


def test_rank0_waits_are_sized_to_the_work():
    assert distributed.rank0_timeout(0) == 600.0
    # a 10 MB validation split scored at the assumed slowest rate: far past NCCL's 600 s
    chars = 10_000_000
    assert distributed.rank0_timeout(chars * distributed.SCORE_SECONDS_PER_CHAR) > 2 * chars * 1e-3
    assert distributed.Dist().wait_group(1e4) is None      # one process: no group


def _torchrun_env(monkeypatch, rank: int, local: int):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(local))


def test_more_ranks_than_gpus_is_one_line(monkeypatch):
    _torchrun_env(monkeypatch, 1, 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: pytest.fail("set_device called"))
    with pytest.raises(CharwiseError, match="LOCAL_RANK 1 but 1 CUDA GPU"):
        distributed.setup("auto")


def test_device_cpu_under_torchrun_is_gloo_and_picks_no_gpu(monkeypatch):
    import torch.distributed as dist
    _torchrun_env(monkeypatch, 1, 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: pytest.fail("set_device called"))
    backends = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: backends.append(backend))
    d = distributed.setup("cpu")
    assert backends == ["gloo"] and (d.rank, d.world) == (1, 2)
    assert distributed.device_for(d, torch.device("cpu")) == torch.device("cpu")


@needs_bf16
def test_bf16_state_is_saved_float32_and_resumes_in_fp32(tmp_path, monkeypatch):
    """A run trained in bf16 (CPU autocast makes the LSTM's state bf16) resumed where "auto"
    means fp32 -- another machine, or a GPU run continued on a CPU: the checkpoint holds
    float32 state, and a checkpoint holding bf16 state (older charwise) resumes too."""
    run = tmp_path / "r"
    kw = dict(hidden_size=256, eval_every=0, device="cpu", threads=1, **QUIET)
    monkeypatch.setattr(ev, "cpu_has_fast_bf16", lambda: True)
    train(None, out=run, max_steps=4, **kw)
    info = json.loads((run / "run.json").read_text())
    assert (info["precision"], info["recurrence_precision"]) == ("bf16", "bf16")
    saved = load_file(run / "last.safetensors")
    assert saved["state/0"].dtype == saved["state/1"].dtype == torch.float32
    monkeypatch.setattr(ev, "cpu_has_fast_bf16", lambda: False)
    # (3 windows an epoch here: steps 4 and 5 start from the carried state, not a cold one)
    train(None, out=run, resume=True, max_steps=5, **kw)
    assert json.loads((run / "run.json").read_text())["precision"] == "fp32"
    # the state as charwise before this fix stored it: in bf16
    with safe_open(str(run / "last.safetensors"), "pt") as f:
        header, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    for k in ("state/0", "state/1"):
        tensors[k] = tensors[k].to(torch.bfloat16)
    save_file(tensors, run / "last.safetensors", metadata=header)
    res = train(None, out=run, resume=True, max_steps=6, **kw)
    assert res.steps == 6 and load_file(run / "last.safetensors")["state/0"].dtype == torch.float32


def test_line_mode_scoring_and_layer_states_run_the_recurrence_in_ieee_fp32(monkeypatch, tf32_defaults):
    """Issue 29 item 8: two fp32 paths ran cuDNN's RNN in its default TF32 on a GPU: scoring
    items (line mode: CharModel.evaluate, training's evaluation and its budget sample) and
    inspect's layer states. Here fp32_flags is told each model is on a GPU (the device check
    patched), and every recurrence must run with cuDNN's RNN flag at "ieee"."""
    import numpy as np

    from charwise.data import lines
    from charwise.inspect import neurons

    real = ev.fp32_flags
    as_if_gpu = lambda device, precision: real(CUDA, precision)        # noqa: E731
    monkeypatch.setattr(lines, "fp32_flags", as_if_gpu)
    monkeypatch.setattr(neurons, "fp32_flags", as_if_gpu)
    seen = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: seen.append(torch.backends.cudnn.rnn.fp32_precision)
        if isinstance(m, torch.nn.LSTM) else None)
    try:
        net = CharRNN(ModelConfig(vocab_size=10, hidden_size=16, embed_dim=8, layers=2)).eval()
        lines.evaluate_items(net, [np.array([1, 2, 3]), np.array([4, 5])], end_id=9)
        neurons.layer_states(net, np.array([1, 2, 3, 4]), layer=1, kind="h")
    finally:
        hook.remove()
    assert len(seen) >= 3 and set(seen) == {"ieee"}, seen
    assert torch.backends.cudnn.rnn.fp32_precision == "tf32"          # put back after


def test_gpu_memory_is_checked_on_the_gpu_for_its_share_of_the_streams(monkeypatch, tmp_path):
    """Issue 29 item 2: on a GPU the check compared the host's MemAvailable with the global
    batch. It now asks the GPU (torch.cuda.mem_get_info, faked: 2 GB free of 80) for the
    streams that GPU trains, and refuses in one line before anything is built or written."""
    from charwise import bounds
    asked = []

    def mem_get_info(device=None):
        asked.append(device)
        return 2 << 30, 80 << 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    monkeypatch.setattr(bounds, "available_bytes", lambda: pytest.fail("host memory asked"))
    cfg = ModelConfig(hidden_size=1024, layers=3, vocab_size=100)
    need = bounds.training_bytes(cfg, 64, 512)
    assert need > 2 << 30 > bounds.training_bytes(cfg, 8, 512)
    with pytest.raises(CharwiseError, match=r"on 64 x 512 windows needs ~.* GB of GPU memory; cuda:0 has 2.15 GB free"):
        bounds.check_training(cfg, 64, 512, device=CUDA)
    bounds.check_training(cfg, 64, 512, device=CUDA, world=8)          # 8 streams a GPU fit
    assert asked == [CUDA, CUDA]
    # the trainer asks before it reads the corpus or builds the model
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(CharwiseError, match="GB of GPU memory; cuda has 2.15 GB free") as e:
        train(None, out=tmp_path / "r", device="cuda", hidden_size=1024, layers=3, batch_size=64,
              seq_len=512, max_steps=1, **QUIET)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "r" / "run.json").exists()


def test_only_backend_errors_and_timeouts_are_a_peer_failure():
    """Issue 29 item 6: under torchrun every RuntimeError became "another training process
    stopped", a rank's own CUDA out-of-memory or cuDNN error included."""
    import torch.distributed as dist
    peer = [dist.DistBackendError("NCCL communicator was aborted"),
            dist.DistNetworkError("connection refused"), dist.DistStoreError("store timeout"),
            RuntimeError("[third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer"),
            RuntimeError("[third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out "
                         "waiting 5000ms for recv operation to complete"),
            RuntimeError("NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled system error")]
    own = [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
           RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"),
           RuntimeError("CUDA error: an illegal memory access was encountered"),
           RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 16x4)")]
    assert all(distributed.peer_failure(e) for e in peer)
    assert not any(distributed.peer_failure(e) for e in own)


def test_each_step_read_in_a_batch_gets_its_own_time(monkeypatch, tmp_path):
    """Issue 29 item 1: on one GPU the steps are read 16 at a time (forced here to 4 on the
    CPU), and metrics.jsonl stamped each with the time of the read: 4 rows shared one `t`, and
    chars/s over a span that started inside an interval counted its time for fewer steps
    (~11 % high). Each step now gets its own end, the read interval shared evenly. A fake
    clock: every step takes exactly 1 s, the rest of the loop none."""
    import types

    from charwise.training import trainer as loop
    clock = types.SimpleNamespace(t=100.0)
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=lambda: clock.t))
    real_step = loop.Trainer.train_step

    def train_step(self, *a):
        clock.t += 1.0
        return real_step(self, *a)
    monkeypatch.setattr(loop.Trainer, "train_step", train_step)
    monkeypatch.setattr(loop, "read_interval", lambda device, distributed_run: 4)
    train(None, out=tmp_path / "r", preset="spec", max_steps=12, eval_every=6, device="cpu",
          threads=1, **QUIET)
    rows = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    steps = [(r["step"], r["t"]) for r in rows if "event" not in r]
    assert steps == [(k, float(k)) for k in range(1, 13)]      # the evaluation at 6 takes no time here
    # TensorBoard's chars/s from those times: one step a second, never a spike
    from charwise.training.tblog import TBLogger
    tb = TBLogger.__new__(TBLogger)
    tb.chars_per_step, tb._mark, added = 100, None, []
    tb.writer = types.SimpleNamespace(add_scalar=lambda tag, v, step: added.append((tag, step, v)))
    for k, t in steps:
        tb.step(k, 1.0, 1e-3, 1.0, t)
    assert [v for tag, _, v in added if tag == "train/chars_per_s"] == [100.0]
