"""Multi-process data-parallel training (torch.distributed, gloo, CPU) on equiops models.

Two processes each build the same seeded float64 model, wrap it in
``DistributedDataParallel`` and train on their half of a batch of small structures; one
process trains the same model on the whole batch with the loss DDP's gradient average
corresponds to. Proven here:

* TFN force training (energy MSE + force MSE, forces by ``autograd.grad(..., create_graph=True)``,
  so every step runs the fused kernels' double backward under DDP): the allreduced
  gradients after one step equal the single process's to 1e-12 relative, both ranks hold
  bitwise identical gradients, and the parameters after a few SGD / Adam steps agree to
  1e-10. Not bitwise against the single process: the allreduce adds the two halves' gradients
  (and the kernels their per-range partial sums) in another order than one process does.
* EGNN (``equiops.nn.EGNN``, first order: the fused EGNN backward has no double backward):
  the same comparison on a loss of its node features and coordinates.
* FSDP2 (``fully_shard``) and FSDP1 (``FullyShardedDataParallel(device_id=cpu)``) on an
  energy-only TFN loss: the same comparison on the gathered gradients and parameters.
  Force training under FSDP fails in PyTorch itself (freed parameters in the second backward
  pass); not tested, documented with its error in docs/DISTRIBUTED.md.

The ranks are subprocesses running this file (``python test_distributed.py RUNS RANK PORT OUT``)
with ``MASTER_ADDR=127.0.0.1`` and a port found free at run time; each writes its results to
a file the test compares. A rank that fails or does not finish within the timeout fails the
test with its output (the other rank is killed): the test never hangs. All runs share one
launch of the ranks (process start-up dominates the cost).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

WORLD = 2
NUM_STRUCTURES = 4  # two per rank
ATOMS = (5, 6, 7, 5)  # atoms per structure: the ranks' halves differ in size
R_MAX = 2.5
RANK_TIMEOUT_S = 60.0


# ----------------------------------------------------------------------------- the data
def _structures(seed: int):
    """``NUM_STRUCTURES`` random small structures: (pos, species, E_ref, F_ref) each, from
    a seeded generator (the same in every process)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in ATOMS:
        pos = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.9
        species = torch.randint(0, 3, (n,), generator=g)
        e_ref = torch.randn((), generator=g, dtype=torch.float64)
        f_ref = torch.randn(n, 3, generator=g, dtype=torch.float64)
        out.append((pos, species, e_ref, f_ref))
    return out


def _collate(structs):
    """One graph of the structures: concatenated atoms, radius-graph edges inside each
    structure (no self loops; edge_src = neighbour, edge_dst = centre), the batch vector."""
    pos, species, batch, src, dst, e_ref, f_ref = [], [], [], [], [], [], []
    offset = 0
    for b, (p, s, e, f) in enumerate(structs):
        n = p.shape[0]
        i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        mask = ((p[i] - p[j]).norm(dim=-1) < R_MAX) & (i != j)
        src.append(j[mask] + offset)
        dst.append(i[mask] + offset)
        pos.append(p)
        species.append(s)
        batch.append(torch.full((n,), b, dtype=torch.long))
        e_ref.append(e.reshape(1))
        f_ref.append(f)
        offset += n
    cat = torch.cat
    return dict(pos=cat(pos), species=cat(species), batch=cat(batch), src=cat(src), dst=cat(dst),
                e_ref=cat(e_ref), f_ref=cat(f_ref), num_graphs=len(structs))


def _rank_slice(rank: int) -> slice:
    per = NUM_STRUCTURES // WORLD
    return slice(rank * per, (rank + 1) * per)


# ---------------------------------------------------------------------------- the models
def _tfn():
    import equiops

    torch.manual_seed(1234)
    return equiops.nn.TensorFieldNetwork(3, "6x0e+2x0o+3x1o+2x1e", 2, num_layers=2, r_max=R_MAX, num_basis=6,
                                         radial_neurons=(12,), avg_num_neighbors=4.0).double()


def _tfn_loss(model, d, e_count: int, f_count: int, scale: float):
    """``scale * (SSE(E) / e_count + SSE(F) / f_count)``: with the global counts and
    ``scale = world size`` on each rank, DDP's gradient average is the gradient of the
    whole batch's MSE loss (``scale = 1`` in one process)."""
    pos = d["pos"].clone().requires_grad_()
    energy = model(pos, d["species"], d["src"], d["dst"], batch=d["batch"], num_graphs=d["num_graphs"])
    forces = -torch.autograd.grad(energy.sum(), pos, create_graph=True)[0]
    sse_e = ((energy - d["e_ref"]) ** 2).sum()
    sse_f = ((forces - d["f_ref"]) ** 2).sum()
    return scale * (sse_e / e_count + 0.5 * sse_f / f_count)


def _egnn():
    import equiops

    torch.manual_seed(4321)
    return equiops.nn.EGNN(in_node_nf=3, hidden_nf=8, out_node_nf=2, in_edge_nf=1, n_layers=2,
                           attention=True).double()


def _egnn_loss(model, d, e_count: int, f_count: int, scale: float):
    """First-order loss on the EGNN's outputs: node features against per-structure targets
    (pooled per structure) and coordinates against per-atom targets, same scaling as
    :func:`_tfn_loss`."""
    h = torch.nn.functional.one_hot(d["species"], 3).to(torch.float64)
    edge_attr = (d["pos"][d["src"]] - d["pos"][d["dst"]]).norm(dim=-1, keepdim=True)
    h_out, x_out = model(h, d["pos"], [d["dst"], d["src"]], edge_attr)
    pooled = h_out.new_zeros(d["num_graphs"], h_out.shape[1]).index_add_(0, d["batch"], h_out)
    sse_e = ((pooled.sum(-1) - d["e_ref"]) ** 2).sum()
    sse_f = ((x_out - d["pos"] - d["f_ref"]) ** 2).sum()
    return scale * (sse_e / e_count + sse_f / f_count)


def _tfn_energy_loss(model, d, e_count: int, f_count: int, scale: float):
    """Energy-only (first-order) TFN loss, same scaling as :func:`_tfn_loss`."""
    energy = model(d["pos"], d["species"], d["src"], d["dst"], batch=d["batch"], num_graphs=d["num_graphs"])
    return scale * ((energy - d["e_ref"]) ** 2).sum() / e_count


CASES = {"tfn": (_tfn, _tfn_loss), "egnn": (_egnn, _egnn_loss), "tfn_energy": (_tfn, _tfn_energy_loss)}
STEPS = 3
OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9),
    "adam": lambda params: torch.optim.Adam(params, lr=0.01),
}


def _full(t):
    """The whole tensor of a parameter or gradient (an FSDP2 shard is a DTensor: gathered)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _wrap(model, wrapper: str):
    if wrapper == "ddp":
        return torch.nn.parallel.DistributedDataParallel(model)
    if wrapper == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel

        # device_id=cpu: without it FSDP1 looks for an accelerator and raises.
        return FullyShardedDataParallel(model, device_id=torch.device("cpu"), use_orig_params=True)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (WORLD,))
    for layer in model.layers:
        fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def _train(case: str, opt_name: str, rank=None, wrapper: str = "ddp"):
    """Train ``STEPS`` steps (a new batch each step) on the whole batch (``rank=None``) or
    on the rank's half under DDP / FSDP2. Returns the first step's gradients and the final
    parameters (whole tensors)."""
    build, loss_fn = CASES[case]
    model = build()
    trained = model if rank is None else _wrap(model, wrapper)
    opt = OPTIMIZERS[opt_name](trained.parameters())
    first_grads = None
    for step in range(STEPS):
        structs = _structures(seed=100 + step)
        e_count = len(structs)
        f_count = 3 * sum(p.shape[0] for p, *_ in structs)
        if rank is None:
            d, scale = _collate(structs), 1.0
        else:
            d, scale = _collate(structs[_rank_slice(rank)]), float(WORLD)
        opt.zero_grad()
        loss_fn(trained, d, e_count, f_count, scale).backward()
        if first_grads is None:
            with _whole(trained, wrapper, rank):
                first_grads = {k: _full(p.grad).detach().clone() for k, p in model.named_parameters()}
        opt.step()
    with _whole(trained, wrapper, rank):
        params = {k: _full(p).detach().clone() for k, p in model.named_parameters()}
    return first_grads, params


def _whole(trained, wrapper: str, rank):
    """FSDP1 keeps flat shards: inside this block the module's parameters (and gradients)
    are whole again. DDP and FSDP2 (DTensors, see :func:`_full`) need nothing."""
    if rank is None or wrapper != "fsdp1":
        return contextlib.nullcontext()
    from torch.distributed.fsdp import FullyShardedDataParallel

    return FullyShardedDataParallel.summon_full_params(trained, with_grads=True)


# What the rank processes run, in this order, in one process group (one start-up for all).
RUNS = (("tfn", "ddp"), ("egnn", "ddp"), ("tfn_energy", "fsdp2"), ("tfn_energy", "fsdp1"))


def _worker(runs, rank: int, port: int, out: str) -> None:
    """One rank: train each (case, wrapper) of ``runs`` with every optimizer, save the results.
    Any exception ends the process with its traceback (the driver reports it)."""
    import torch.distributed as dist

    torch.set_num_threads(1)  # two ranks share the CI's cores
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=RANK_TIMEOUT_S))
    try:
        results = {}
        for case, wrapper in runs:
            for opt_name in OPTIMIZERS:
                grads, params = _train(case, opt_name, rank, wrapper)
                results[(case, wrapper, opt_name)] = {"grads": grads, "params": params}
        torch.save(results, out)
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------- driver
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Ranks:
    """The WORLD rank processes of one launch: started at once, joined by :meth:`results`
    (so the caller's own work runs meanwhile)."""

    def __init__(self, runs, tmp_path: Path, timeout: float = RANK_TIMEOUT_S + 60, command=None):
        self.runs, self.tmp_path, self.timeout, self.command = runs, tmp_path, timeout, command
        self._results, self._retried, self._failure = None, False, None
        self._start()

    def _start(self) -> None:
        self.deadline = time.monotonic() + self.timeout
        self.procs, self.logs = [], []
        port = _free_port()
        env = dict(os.environ, OMP_NUM_THREADS="1")
        spec = ",".join(f"{case}:{wrapper}" for case, wrapper in self.runs)
        for rank in range(WORLD):
            log = open(self.tmp_path / f"rank{rank}.log", "w+")
            cmd = [sys.executable, __file__, spec, str(rank), str(port), str(self.tmp_path / f"rank{rank}.pt")]
            if self.command is not None:  # the harness's own tests
                cmd = self.command(rank)
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
            self.logs.append(log)

    def _wait(self):
        try:
            while any(p.poll() is None for p in self.procs) and time.monotonic() < self.deadline:
                if any(p.poll() not in (None, 0) for p in self.procs):
                    break
                time.sleep(0.05)
        finally:
            self.kill()
        codes = [p.returncode for p in self.procs]
        outputs = []
        for log in self.logs:
            log.seek(0)
            outputs.append(log.read()[-6000:])
            log.close()
        return codes, outputs

    def results(self):
        """Every rank's results; a rank's failure or a timeout fails the test with every
        rank's output (all killed at the deadline, or as soon as one fails: the other would
        wait in a collective). Once, a port taken between the search and the bind restarts
        the launch on another port."""
        if self._results is not None:
            return self._results
        if self._failure is not None:  # every test of the launch reports it
            pytest.fail(self._failure, pytrace=False)
        codes, outputs = self._wait()
        if any(c != 0 for c in codes) and not self._retried and any("address already in use" in o.lower()
                                                                    for o in outputs):
            self._retried = True
            self._start()
            codes, outputs = self._wait()
        if any(c != 0 for c in codes):
            report = "\n".join(f"--- rank {r} (exit {c}) ---\n{o}" for r, (c, o) in enumerate(zip(codes, outputs)))
            self._failure = f"the distributed run failed or timed out:\n{report}"
            pytest.fail(self._failure, pytrace=False)
        self._results = [torch.load(self.tmp_path / f"rank{r}.pt") for r in range(WORLD)]
        return self._results

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    import equiops

    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    if not equiops._extension.available():
        pytest.skip("C++ extension not built")
    launch = _Ranks(RUNS, tmp_path_factory.mktemp("ranks"))
    yield launch
    launch.kill()


def _check_against_single_process(ranks: _Ranks, case: str, wrapper: str) -> None:
    expected = {opt_name: _train(case, opt_name) for opt_name in OPTIMIZERS}  # while the ranks run
    r0_all, r1_all = ranks.results()
    for opt_name, (grads, params) in expected.items():
        r0, r1 = r0_all[(case, wrapper, opt_name)], r1_all[(case, wrapper, opt_name)]
        assert set(r0["grads"]) == set(grads)
        for name in grads:
            # Every rank holds the same averaged gradient and the same parameters.
            assert torch.equal(r0["grads"][name], r1["grads"][name]), name
            assert torch.equal(r0["params"][name], r1["params"][name]), name
            # Equal to the single process's up to the order of the sums (not bitwise).
            g, ref = r0["grads"][name], grads[name]
            assert float(ref.abs().max()) > 0, f"{name}: no gradient, the comparison would prove nothing"
            err = float((g - ref).abs().max() / ref.abs().max())
            assert err < 1e-12, f"{opt_name} {name}: gradient relative error {err:.2e}"
            torch.testing.assert_close(r0["params"][name], params[name], rtol=1e-10, atol=1e-10,
                                       msg=lambda m: f"{opt_name} {name} after {STEPS} steps: {m}")


# -------------------------------------------------------------------------------- tests
def test_ddp_tfn_force_training_equals_single_process(ranks):
    """DDP over 2 gloo ranks, TFN energy + force loss (double backward through the fused
    kernels): allreduced gradients == one process's on the whole batch (1e-12 relative),
    parameters after 3 SGD-momentum and 3 Adam steps equal (1e-10)."""
    _check_against_single_process(ranks, "tfn", "ddp")


def test_ddp_egnn_equals_single_process(ranks):
    """The same for equiops.nn.EGNN (first-order loss: the fused EGNN backward is first order)."""
    _check_against_single_process(ranks, "egnn", "ddp")


def test_fsdp2_tfn_energy_training_equals_single_process(ranks):
    """FSDP2 (``fully_shard`` per TFN layer and at the root, CPU mesh, gloo) on an energy-only
    loss: gathered gradients and parameters equal one process's. (Force training under FSDP2
    fails in PyTorch itself: docs/DISTRIBUTED.md.)"""
    _check_against_single_process(ranks, "tfn_energy", "fsdp2")


def test_fsdp1_tfn_energy_training_equals_single_process(ranks):
    """The same with FSDP1 (``FullyShardedDataParallel(device_id=cpu, use_orig_params=True)``),
    the gradients and parameters gathered with ``summon_full_params``."""
    _check_against_single_process(ranks, "tfn_energy", "fsdp1")


def test_failed_or_hung_rank_fails_the_test_with_its_output(tmp_path):
    """The harness cannot pass silently or hang: a rank that raises fails the test with its
    traceback (at once, though the other rank still runs), one that outlives the deadline is
    killed and fails it. (Stand-in ranks that skip torch's start-up.)"""
    def failing(rank):
        return [sys.executable, "-c", "import time; time.sleep(60)" if rank else "raise KeyError('boom')"]

    t0 = time.monotonic()
    launch = _Ranks(RUNS, tmp_path, command=failing)
    for _ in range(2):  # and again for the next test of the same launch
        with pytest.raises(pytest.fail.Exception, match=r"(?s)rank 0 \(exit 1\).*KeyError: 'boom'"):
            launch.results()
    with pytest.raises(pytest.fail.Exception, match="failed or timed out"):
        _Ranks(RUNS, tmp_path, timeout=1.0, command=lambda rank: [sys.executable, "-c", "import time; time.sleep(60)"]).results()
    assert time.monotonic() - t0 < 30


if __name__ == "__main__":
    _spec, _rank, _port, _out = sys.argv[1:]
    _worker([tuple(run.split(":")) for run in _spec.split(",")], int(_rank), int(_port), _out)
