"""Training a Tensor Field Network on energies and forces of metal clusters (EMT).

    python examples/tfn_forces.py [--quick] [--seed S] [--threads N]

Data (generated here with ASE, float64 throughout; numpy RNG seeded by ``--seed``, the test
set from its own stream so that it is the same for the quick and the full run, and the quick
training set is the first half of the full one):

* Clusters of 8-20 atoms, each a random Cu/Ag/Au alloy: the atoms of an fcc lattice nearest to
  a random point (a compact fragment), lattice constant by Vegard's law from the elements'
  (Cu 3.61, Ag 4.09, Au 4.08 A) strained by a random factor in [0.97, 1.03], every atom
  displaced by a Gaussian of standard deviation drawn in [0.05, 0.2] A per cluster.
* Non-periodic (no cell). Energies and forces from ASE's ``EMT()`` calculator.
* Full run: 400 training, 50 test clusters; ``--quick``: 200 / 50. No validation set: nothing
  is selected on held-out data (the test set is only reported, every 5 epochs and at the end).

Model: ``equiops.nn.TensorFieldNetwork`` (3 species, hidden ``16x0e+8x1o+8x1e``, harmonics up
to l = 2, 3 layers, r_max 4.5 A, 8 Bessel functions, polynomial cutoff p = 6, radial MLP
8-32-weights, ``avg_num_neighbors`` measured on the training set, ~10.7k parameters), wrapped
as NequIP does: ``E = force_rms * TFN(...) + sum_atoms shift[species]``, the per-species
energies ``shift`` fit by least squares on the training energies, ``force_rms`` the RMS of the
training force components. Forces ``-dE/dpos`` by autograd. Edges from
``ase.neighborlist.neighbor_list("ij", atoms, r_max)``: ``j`` (the neighbour) sends to ``i``,
i.e. ``edge_src = j, edge_dst = i``; a mini-batch concatenates its clusters into one graph
(offset indices, a ``batch`` vector, one ``equiops.Graph`` for deterministic sums).

Training: Adam, batches of 5 clusters, 40 epochs, ``OneCycleLR`` (peak 1e-2, 10%
warm-up, torch's other defaults). Loss ``1 * MSE(E / N_atoms) + 10 * MSE(F components)``, both
divided by ``force_rms**2`` (NequIP's per-atom energy loss with a force weight >> energy
weight; only their ratio matters much to Adam), the forces with ``create_graph=True`` so that
every step runs the double backward of the fused kernels.

Printed: ``force MAE <value> eV/A`` (mean absolute error over the test force components) and
the energy MAE per atom, before training, every 5 epochs and after training, with timings.

Results on 2 CPU cores (torch 2.13 CPU, the C++ kernels; seed 0; mean |force component| of the
test set 0.85 eV/A, the per-species energies alone miss by 0.14 eV/atom there):

=========  ===========================  =========================  ==============
run        test force MAE (eV/A)        test energy MAE (eV/atom)  wall time
=========  ===========================  =========================  ==============
--quick    0.906 before -> 0.085 after  0.290 -> 0.034             52 s (48 train)
full       0.899 before -> 0.062 after  0.253 -> 0.012             99 s (93 train)
=========  ===========================  =========================  ==============

(``--quick --seed 1``: 0.994 -> 0.074 eV/A, 0.144 -> 0.010 eV/atom.) The numbers are the same
with 1 or 2 threads (deterministic sums), and 1 thread is as fast here (small graphs of ~70
atoms); with another job on the cores, 2 threads were several times slower than 1, hence
``--threads``. The energies are fit less well than the forces (by design of the loss weights,
and 200-400 structures are few); ``--energy-weight`` / ``--force-weight`` change the balance.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import equiops
from equiops.nn import TensorFieldNetwork

try:
    from ase import Atoms
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.neighborlist import neighbor_list
except ImportError as exc:  # pragma: no cover
    raise SystemExit(f"this example needs ASE (pip install ase): {exc}")

DTYPE = torch.float64
ELEMENTS = ("Cu", "Ag", "Au")
LATTICE = {"Cu": 3.61, "Ag": 4.09, "Au": 4.08}  # fcc lattice constants (Angstrom)
MIN_ATOMS, MAX_ATOMS = 8, 20
R_MAX = 4.5

# --------------------------------------------------------------------------- data


def make_cluster(rng: np.random.Generator) -> Atoms:
    """A random compact fcc fragment of a random Cu/Ag/Au alloy, rattled, with EMT energy and forces."""
    n = int(rng.integers(MIN_ATOMS, MAX_ATOMS + 1))
    symbols = list(rng.choice(ELEMENTS, size=n))
    # Vegard's law lattice constant, strained by +-3%.
    a = np.mean([LATTICE[s] for s in symbols]) * rng.uniform(0.97, 1.03)
    lattice = bulk("Cu", "fcc", a=a, cubic=True).repeat((4, 4, 4)).positions
    centre = lattice[rng.integers(len(lattice))] + rng.normal(scale=0.5 * a, size=3)
    nearest = np.argsort(np.linalg.norm(lattice - centre, axis=1), kind="stable")[:n]
    pos = lattice[nearest] - centre
    pos = pos + rng.normal(scale=rng.uniform(0.05, 0.2), size=pos.shape)  # random displacements
    atoms = Atoms(symbols=symbols, positions=pos)  # no cell, no periodicity
    atoms.calc = EMT()
    atoms.info["energy"] = atoms.get_potential_energy()
    atoms.arrays["forces"] = atoms.get_forces()
    return atoms


def to_tensors(atoms: Atoms, r_max: float) -> dict:
    """One structure as tensors; edges j -> i for every neighbour j of i within r_max."""
    i, j = neighbor_list("ij", atoms, r_max)
    species = [ELEMENTS.index(s) for s in atoms.get_chemical_symbols()]
    return {
        "pos": torch.tensor(atoms.positions, dtype=DTYPE),
        "species": torch.tensor(species, dtype=torch.int64),
        "edge_src": torch.as_tensor(j, dtype=torch.int64),
        "edge_dst": torch.as_tensor(i, dtype=torch.int64),
        "energy": torch.tensor(atoms.info["energy"], dtype=DTYPE),
        "forces": torch.tensor(atoms.arrays["forces"], dtype=DTYPE),
    }


def make_dataset(n: int, rng: np.random.Generator, r_max: float) -> list:
    return [to_tensors(make_cluster(rng), r_max) for _ in range(n)]


def collate(structs: list) -> dict:
    """Structures concatenated into one graph: node indices offset, a ``batch`` vector, an ``equiops.Graph``."""
    offsets = np.cumsum([0] + [s["pos"].shape[0] for s in structs[:-1]])
    src = torch.cat([s["edge_src"] + o for s, o in zip(structs, offsets)])
    dst = torch.cat([s["edge_dst"] + o for s, o in zip(structs, offsets)])
    num_nodes = int(sum(s["pos"].shape[0] for s in structs))
    return {
        "pos": torch.cat([s["pos"] for s in structs]),
        "species": torch.cat([s["species"] for s in structs]),
        "edge_src": src,
        "edge_dst": dst,
        "batch": torch.cat([torch.full((s["pos"].shape[0],), k, dtype=torch.int64) for k, s in enumerate(structs)]),
        "num_graphs": len(structs),
        "num_atoms": torch.tensor([s["pos"].shape[0] for s in structs], dtype=DTYPE),
        "graph": equiops.Graph(src, dst, num_nodes),
        "energy": torch.stack([s["energy"] for s in structs]),
        "forces": torch.cat([s["forces"] for s in structs]),
    }


def species_counts(structs: list, num_species: int) -> torch.Tensor:
    return torch.stack([torch.bincount(s["species"], minlength=num_species).to(DTYPE) for s in structs])


# --------------------------------------------------------------------------- model


class EnergyModel(torch.nn.Module):
    """``E = scale * TFN(pos, species) + sum_atoms shift[species]`` (NequIP's per-species shift and
    global scale): the TFN learns the residual of the per-species least-squares energies, in units
    of the training forces' RMS."""

    def __init__(self, num_species: int, shift: torch.Tensor, scale: float, avg_num_neighbors: float, r_max: float):
        super().__init__()
        self.tfn = TensorFieldNetwork(num_species, "16x0e+8x1o+8x1e", 2, num_layers=3, r_max=r_max, num_basis=8,
                                      cutoff_p=6, radial_neurons=(32,), avg_num_neighbors=avg_num_neighbors)
        self.register_buffer("shift", shift)
        self.scale = float(scale)

    def forward(self, b: dict) -> torch.Tensor:
        e = self.tfn(b["pos"], b["species"], b["edge_src"], b["edge_dst"], b["batch"], b["num_graphs"], b["graph"])
        ref = torch.zeros_like(e).index_add_(0, b["batch"], self.shift[b["species"]])
        return self.scale * e + ref


def energy_and_forces(model: EnergyModel, b: dict, create_graph: bool):
    pos = b["pos"].detach().requires_grad_(True)
    energy = model({**b, "pos": pos})
    (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=create_graph)
    return energy, -grad


def evaluate(model: EnergyModel, batches: list) -> tuple:
    """(force MAE per component in eV/A, energy MAE per atom in eV/atom) over ``batches``."""
    f_err, f_n, e_err, e_n = 0.0, 0, 0.0, 0
    for b in batches:
        energy, forces = energy_and_forces(model, b, create_graph=False)
        f_err += float((forces.detach() - b["forces"]).abs().sum())
        f_n += forces.numel()
        e_err += float(((energy.detach() - b["energy"]) / b["num_atoms"]).abs().sum())
        e_n += energy.numel()
    return f_err / f_n, e_err / e_n


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="half the data and training (~1-2 min on 2 CPU cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--energy-weight", type=float, default=1.0)
    parser.add_argument("--force-weight", type=float, default=10.0)
    args = parser.parse_args()

    n_train, n_test, epochs = (200, 50, 40) if args.quick else (400, 50, 40)
    n_train = args.n_train or n_train
    epochs = args.epochs if args.epochs is not None else epochs
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    # Separate streams: the test set is the same for every n_train, the quick train set is the
    # first half of the full one.
    test = make_dataset(n_test, np.random.default_rng([args.seed, 1]), R_MAX)
    train = make_dataset(n_train, np.random.default_rng([args.seed, 0]), R_MAX)
    num_species = len(ELEMENTS)

    # Per-species reference energies by least squares on the training set.
    counts = species_counts(train, num_species)
    energies = torch.stack([s["energy"] for s in train])
    shift = torch.linalg.lstsq(counts, energies.unsqueeze(-1), driver="gelsd").solution.squeeze(-1)
    residual = energies - counts @ shift
    n_atoms = counts.sum(1)
    forces = torch.cat([s["forces"] for s in train])
    force_rms = float(forces.pow(2).mean().sqrt())
    avg_num_neighbors = sum(s["edge_src"].numel() for s in train) / float(n_atoms.sum())
    test_counts = species_counts(test, num_species)
    test_residual = torch.stack([s["energy"] for s in test]) - test_counts @ shift
    print(f"data: {n_train} train / {n_test} test clusters of {MIN_ATOMS}-{MAX_ATOMS} atoms "
          f"({'/'.join(ELEMENTS)}, EMT, {str(DTYPE).split('.')[-1]}) in {time.perf_counter() - t0:.1f} s; "
          f"{avg_num_neighbors:.2f} neighbours per atom within {R_MAX} A; train force RMS {force_rms:.3f} eV/A")
    print(f"baselines on the test set: mean |force component| {float(torch.cat([s['forces'] for s in test]).abs().mean()):.4f}"
          f" eV/A; per-species energies alone: energy error {float((test_residual / test_counts.sum(1)).abs().mean()):.4f}"
          f" eV/atom (train {float((residual / n_atoms).abs().mean()):.4f})")

    torch.manual_seed(args.seed)
    model = EnergyModel(num_species, shift, force_rms, avg_num_neighbors, R_MAX).to(DTYPE)
    print(f"model: TensorFieldNetwork, {sum(p.numel() for p in model.parameters())} parameters", flush=True)
    test_batches = [collate(test[s:s + 25]) for s in range(0, n_test, 25)]
    f_mae, e_mae = evaluate(model, test_batches)
    print(f"before training: test force MAE {f_mae:.4f} eV/A, energy MAE {e_mae:.4f} eV/atom", flush=True)

    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = (n_train + args.batch_size - 1) // args.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=epochs * steps_per_epoch,
                                                    pct_start=0.1)
    g = torch.Generator().manual_seed(args.seed)
    t1 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(n_train, generator=g).tolist()
        total = 0.0
        for s in range(0, n_train, args.batch_size):
            b = collate([train[k] for k in perm[s:s + args.batch_size]])
            optimizer.zero_grad()
            energy, forces = energy_and_forces(model, b, create_graph=True)
            loss_e = (((energy - b["energy"]) / b["num_atoms"]) ** 2).mean() / force_rms**2
            loss_f = ((forces - b["forces"]) ** 2).mean() / force_rms**2
            loss = args.energy_weight * loss_e + args.force_weight * loss_f
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item()
        if epoch % 5 == 0 or epoch == epochs:
            f_mae, e_mae = evaluate(model, test_batches)
            print(f"epoch {epoch:3d}  loss {total / steps_per_epoch:.4f}  test force MAE {f_mae:.4f} eV/A  "
                  f"energy MAE {e_mae:.4f} eV/atom  ({time.perf_counter() - t1:.0f} s)", flush=True)
    t_train = time.perf_counter() - t1
    f_mae, e_mae = evaluate(model, test_batches)
    print(f"after training ({t_train:.0f} s incl. evaluations): test force MAE {f_mae:.4f} eV/A, energy MAE {e_mae:.4f} eV/atom")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
