"""hardware.py: what this CPU runs natively is decided from its flags and the caps a user sets
(ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA), never by running a kernel. Each decision is tested
here with the CPU faked; the refusals it leads to are one line and write nothing."""
import pytest
import torch

import charwise
from charwise import hardware
from charwise.cli import main
from charwise.errors import CharwiseError
from charwise.generation.steps import check_precision
from charwise.scoring import pick_precision
from charwise.settings.train import ModelConfig

AVX2 = "flags : fpu sse4_2 avx avx2 fma f16c"
AVX512 = AVX2 + " avx512f avx512bw avx512vl"
AVX512_VNNI = AVX512 + " avx512_vnni"
ZEN4 = AVX512_VNNI + " avx512_bf16"
SAPPHIRE = ZEN4 + " amx_bf16 amx_int8 amx_tile"


@pytest.fixture
def cpu(monkeypatch, tmp_path):
    """cpu(flags, **env): make hardware.py see a /proc/cpuinfo with these flags and these caps."""
    def fake(flags, **env):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor : 0\nmodel name : Fake CPU\n{flags}\n\nprocessor : 1\n{flags}\n")
        monkeypatch.setattr(hardware, "CPUINFO", str(info))
        for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
    return fake


@pytest.mark.parametrize("flags, bf16, int8, cls", [
    (AVX2, False, False, "AVX2"),
    (AVX512, False, False, "AVX-512"),
    (AVX512_VNNI, False, True, "AVX-512"),
    (ZEN4, True, True, "AVX-512-BF16"),
    (SAPPHIRE, True, True, "AMX"),
])
def test_capabilities_come_from_the_flags(cpu, flags, bf16, int8, cls):
    cpu(flags)
    assert hardware.cpu_has_fast_bf16() is bf16
    assert hardware.cpu_has_exact_int8() is int8
    assert hardware.cpu_class() == cls


def test_unreadable_cpuinfo_means_no_special_kernels(monkeypatch, tmp_path):
    monkeypatch.setattr(hardware, "CPUINFO", str(tmp_path / "missing"))
    assert hardware.cpu_flags() == frozenset()
    assert not hardware.cpu_has_fast_bf16() and not hardware.cpu_has_exact_int8()


@pytest.mark.parametrize("env, bf16, int8, cls", [
    (dict(ATEN_CPU_CAPABILITY="avx2"), False, False, "AVX2"),
    (dict(ATEN_CPU_CAPABILITY="default"), False, False, "AVX2"),
    (dict(ONEDNN_MAX_CPU_ISA="AVX2"), False, True, "AVX-512"),
    (dict(ONEDNN_MAX_CPU_ISA="avx512_core"), False, True, "AVX-512"),
    (dict(ONEDNN_MAX_CPU_ISA="AVX512_CORE_AMX"), True, True, "AMX"),
    (dict(ATEN_CPU_CAPABILITY="avx512", ONEDNN_MAX_CPU_ISA="ALL"), True, True, "AMX"),
])
def test_caps_make_the_cpu_look_plainer(cpu, env, bf16, int8, cls):
    """CI caps a fast CPU to AVX2 to run the suite as a laptop would: the decisions follow."""
    cpu(SAPPHIRE, **env)
    assert hardware.cpu_has_fast_bf16() is bf16
    assert hardware.cpu_has_exact_int8() is int8
    assert hardware.cpu_class() == cls


def test_bf16_is_refused_in_one_sentence_where_it_is_not_in_hardware(cpu):
    cfg, here = ModelConfig(hidden_size=640), torch.device("cpu")
    cpu(AVX2)
    with pytest.raises(CharwiseError, match=r"neither AVX512-BF16 nor AMX \(its class: AVX2\)"):
        pick_precision("bf16", here, cfg)
    assert pick_precision("auto", here, cfg) == "fp32"
    cpu(ZEN4, ONEDNN_MAX_CPU_ISA="AVX2")
    with pytest.raises(CharwiseError, match="cap them away"):
        pick_precision("bf16", here, cfg)
    cpu(ZEN4)
    assert pick_precision("bf16", here, cfg) == pick_precision("auto", here, cfg) == "bf16"


def test_int8_is_offered_only_with_vnni(cpu):
    cpu(AVX512)
    with pytest.raises(CharwiseError, match="no AVX-512 VNNI .*saturate"):
        check_precision("int8")
    cpu(AVX512_VNNI, ATEN_CPU_CAPABILITY="avx2")
    with pytest.raises(CharwiseError, match="caps it away"):
        check_precision("int8")
    cpu(AVX512_VNNI)
    assert check_precision("int8") == "int8"
    assert check_precision("fp32") == "fp32"


@pytest.mark.parametrize("args", [
    ["train", "--precision", "bf16"],
    ["eval", "base", "TEXT", "--precision", "bf16"],
    ["sample", "base", "-n", "5", "--precision", "int8"],
])
def test_cli_refusals_are_one_line_and_write_nothing(cpu, tmp_path, capsys, monkeypatch, args):
    cpu(AVX2)
    text = tmp_path / "a.txt"
    text.write_text("hello world, hello again\n" * 40)
    monkeypatch.chdir(tmp_path)
    args = [str(text) if a == "TEXT" else a for a in args]
    if args[0] == "train":
        args += [str(text), "--out", "run", "--max-steps", "3", "--quiet"]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("charwise: error: --precision ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before       # no half-made run dir


def test_api_refuses_like_the_cli(cpu):
    cpu(AVX2)
    with pytest.raises(CharwiseError, match="--precision int8: this CPU has no AVX-512 VNNI"):
        charwise.sample("base", n=5, precision="int8")
