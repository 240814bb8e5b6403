import os

# This suite means the CPU: bit-identical resumes, thread policies, gloo, numbers measured on a
# CPU. On a machine with a GPU (where the Makefile installs CUDA torch), device "auto" would
# train on it, so GPUs are hidden from the tests and from every process they start (set before
# torch touches CUDA); the tests whose meaning depends on it also pass device="cpu" themselves.
# The GPU paths are checked by benchmarks/gpu.sh.
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import pytest  # noqa: E402
import torch  # noqa: E402

# Two cores on CI: keep torch from oversubscribing when pytest runs tests in one process. An
# explicit OMP_NUM_THREADS wins (on a machine other processes keep busy, two threads per
# process run many times slower than one).
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or min(2, os.cpu_count() or 1)))

SHAKESPEARE = os.path.join(os.path.dirname(__file__), "..", "data", "tinyshakespeare.txt")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A spec-preset run on the bundled corpus (about 2 s), shared by read-only tests."""
    from charwise.training import train
    out = tmp_path_factory.mktemp("run") / "spec"
    train(None, out=out, progress=False, log=lambda *a: None, device="cpu")
    return out


@pytest.fixture
def text_file(tmp_path):
    def make(content: str | bytes, name: str = "corpus.txt"):
        p = tmp_path / name
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
        return p
    return make
