"""The thread policy, driven by a fake clock and made-up step times (no real timing)."""
import pytest

from charwise.errors import CharwiseError
from charwise.threads import ThreadPolicy, check_threads, usable_cpus


class FakeMachine:
    """A clock and a cost model: seconds per unit of work as a function of the thread count,
    which the test changes to simulate load arriving and leaving."""

    def __init__(self, cost):
        self.t = 0.0
        self.cost = dict(cost)
        self.applied = []

    def clock(self):
        return self.t

    def apply(self, n):
        self.applied.append(n)

    def policy(self, others=None, **kw):
        return ThreadPolicy(max_threads=2, clock=self.clock, apply=self.apply, current=lambda: 2,
                            others=others, **kw)

    def run(self, policy, units):
        used = []
        for _ in range(units):
            with policy.measure(1) as n:
                self.t += self.cost[n]
            used.append(n)
        return used


def test_quiet_machine_keeps_the_faster_many_threads():
    m = FakeMachine({1: 0.130, 2: 0.080})             # the small preset on 2 quiet cores
    p = m.policy()
    used = m.run(p, 30)
    assert p.threads == 2 and used[-10:] == [2] * 10
    assert p.probes[0].chosen == 2 and set(p.probes[0].per_unit) == {1, 2}


def test_busy_core_picks_one_thread_and_cuts_the_collapsed_probe_short():
    m = FakeMachine({1: 0.004, 2: 0.150})             # spec step, other process on one core
    p = m.policy()
    used = m.run(p, 40)
    assert p.threads == 1 and used[-20:] == [1] * 20
    # warm-up and the probe start at 1 thread; 2 threads is cut short after one unit
    assert used.count(2) == 1
    assert 2 in p.probes[0].cut_short
    # the cost of deciding: at most ~4 slow units, then full speed
    assert m.t < 40 * 0.004 + 0.150


def test_load_arriving_mid_run_triggers_a_new_probe():
    m = FakeMachine({1: 0.130, 2: 0.080})
    p = m.policy(recheck_every=1e9)                   # only the jump can trigger it
    m.run(p, 30)
    assert p.threads == 2
    m.cost = {1: 0.135, 2: 2.0}                       # another process takes a core
    used = m.run(p, 20)
    assert p.threads == 1 and used[-8:] == [1] * 8
    assert len(p.probes) == 2 and p.probes[1].why.startswith("slower")


def test_load_leaving_is_noticed_by_the_periodic_recheck():
    m = FakeMachine({1: 0.004, 2: 0.150})
    p = m.policy(recheck_every=1.0)
    m.run(p, 40)
    assert p.threads == 1
    m.cost = {1: 0.004, 2: 0.002}                     # the other process finished
    m.run(p, 3000)
    assert p.threads == 2
    assert any(pr.why == "periodic" for pr in p.probes)
    # the first probe's cut-short unit cost ~0.15 s: the next waited >= 0.15 / 2 % = 7 s
    assert p.probes[1].at - p.probes[0].at >= 0.146 / 0.02


def test_a_busier_machine_at_one_thread_is_no_reason_to_probe():
    m = FakeMachine({1: 0.010, 2: 0.030})
    p = m.policy(recheck_every=1e9)
    m.run(p, 20)
    m.cost = {1: 0.030, 2: 0.090}                     # everything 3x slower: more threads won't help
    m.run(p, 100)
    assert len(p.probes) == 1 and p.threads == 1


def test_a_slower_machine_at_many_threads_reprobes_once_then_settles():
    m = FakeMachine({1: 0.020, 2: 0.010})
    p = m.policy(recheck_every=1e9)
    m.run(p, 20)
    m.cost = {1: 0.060, 2: 0.030}                     # 3x slower, 2 threads still best
    m.run(p, 100)
    assert len(p.probes) == 2 and p.threads == 2


def test_other_processes_busy_on_a_core_skip_the_many_thread_probe():
    m = FakeMachine({1: 0.004, 2: 1.5})               # a collapse so bad one unit would hurt
    p = m.policy(others=lambda: 1.0)                  # /proc/stat: another process uses a CPU
    used = m.run(p, 200)
    assert 2 not in used and p.threads == 1
    assert 2 in p.probes[0].skipped and "1.0 CPUs" in p.describe()
    # half a core busy: still worth trying
    m2 = FakeMachine({1: 0.130, 2: 0.080})
    p2 = m2.policy(others=lambda: 0.4)
    m2.run(p2, 30)
    assert p2.threads == 2


def test_others_load_reads_proc_stat():
    import time

    from charwise.threads import OthersLoad
    load = OthersLoad()
    time.sleep(0.3)
    x = load()
    assert x is None or 0.0 <= x <= len(load.cpus) + 0.01


def test_fixed_threads_never_probe_and_are_capped():
    m = FakeMachine({1: 0.01, 2: 0.5})
    p = ThreadPolicy(fixed=1_000_000, max_threads=2, clock=m.clock, apply=m.apply, current=None,
                     others=None)
    assert p.threads == 2 and not p.deciding
    m.run(p, 10)
    assert p.probes == [] and set(m.applied) == {2}
    assert "fixed" in p.describe()


def test_one_cpu_means_one_thread_without_probing():
    m = FakeMachine({1: 0.01})
    p = ThreadPolicy(max_threads=1, clock=m.clock, apply=m.apply, current=None, others=None)
    m.run(p, 5)
    assert p.threads == 1 and p.probes == []


def test_restore_gives_back_the_callers_count():
    m = FakeMachine({1: 0.004, 2: 0.150})
    p = m.policy()
    m.run(p, 20)
    assert m.applied[-1] == 1
    p.restore()
    assert m.applied[-1] == 2


def test_units_normalise_unequal_chunks():
    # evaluation chunks of different lengths: seconds per character is what is compared
    m = FakeMachine({1: 0.0, 2: 0.0})
    p = m.policy(warmup=1, probe_min=2, probe_seconds=0)
    per_char = {1: 1e-5, 2: 2e-5}
    for size in [8192, 8192, 100, 8192, 8192, 8192, 50, 8192, 8192]:
        with p.measure(size) as n:
            m.t += per_char[n] * size
    assert p.probes and p.probes[0].chosen == 1


def test_check_threads():
    assert check_threads(None) is None
    assert check_threads(1) == 1
    assert check_threads(1_000_000) == usable_cpus()
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(CharwiseError, match="--threads"):
            check_threads(bad)


def test_real_torch_threads_are_restored():
    import torch

    from charwise.threads import policy_for
    before = torch.get_num_threads()
    p = policy_for(1)
    p.begin()
    assert torch.get_num_threads() == 1
    p.restore()
    assert torch.get_num_threads() == before


def test_training_measures_and_records_its_choice(tmp_path):
    import json

    import torch

    from charwise.api import train
    before = torch.get_num_threads()
    train(None, out=tmp_path / "r", max_steps=40, eval_every=20, progress=False, log=lambda *a: None)
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert "thread" in info["threads"]["train"] and "thread" in info["threads"]["eval"]
    assert torch.get_num_threads() == before                       # the caller's count is back
    train(None, out=tmp_path / "f", max_steps=5, eval_every=0, threads=1, progress=False,
          log=lambda *a: None)
    info = json.loads((tmp_path / "f" / "run.json").read_text())
    assert info["threads"]["train"] == "1 thread (fixed)"
