"""EGNN on the charged-particle N-body task (Satorras et al., ICML 2021, section 5.1).

    python examples/nbody_egnn.py [--quick] [--epochs N] [--seed S]

Simulator (our own code, after the "charged particles" system of Kipf et al.'s NRI,
extended to 3D and without the box as in the EGNN paper):

* 5 particles in 3D, unit masses, charges +1 or -1 with probability 1/2 each.
* Initial positions ~ N(0, loc_std^2) per coordinate, loc_std = 1 (NRI's default for
  charged particles); initial velocities in a uniformly random direction with norm 0.5.
* Pairwise force on i from j: F_ij = k q_i q_j (x_i - x_j) / |x_i - x_j|^3, k = 1 (like
  charges repel). No box, no noise.
* Time step dt = 0.001, integrated like NRI (an initial velocity kick, then
  x += dt v; v += dt F per step; mass 1); a frame is recorded every 100 steps.
* Force clipping: NRI clips each component of the *total* force on a particle to
  +-0.1/dt = 100. We clip the magnitude of each *pairwise* force to 0.1/dt = 100
  instead (F_ij -> F_ij min(1, 100/|F_ij|)), which keeps F_ji = -F_ij, so the total
  momentum is conserved exactly and the simulation stays E(3)-equivariant. The clip
  acts only for pairs closer than 0.1.

Task (as the paper's data loader): input positions, velocities and charges at sampled
frame 30 (step 3000); target positions at frame 40 (step 4000), i.e. 1000 steps ahead.
Full run: 3000 train, 2000 val, 2000 test systems (seeded), the model with the best
validation MSE is evaluated on the test set.

Model: ``equiops.nn.EGNN_vel`` (the original's EGNN_vel on the fused message kernel; 4
layers, hidden 64, SiLU, recurrent/residual features), node
features h_i = |v_i|, edge attributes [q_i q_j, |x_i - x_j|^2 at the input frame]
(in_edge_nf = 2, as the original training script builds them for EGNN_vel); fully
connected graphs without self loops, a batch is one big graph. Adam, lr 5e-4, weight
decay 1e-12, batch size 100, MSE on the predicted positions, validation every 5 epochs.
The default run trains for the paper's 10000 epochs (paper test MSE 0.0071): about 0.65 s
an epoch on one free CPU core, i.e. about 2 hours (not run to the end here);
``--epochs 2000`` reached a test MSE of 0.00636 (best validation 0.00609 at epoch 1985).
``--quick`` (1000/200/500 systems, 100 epochs) reaches about 0.012.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from equiops.nn import EGNN_vel

# --------------------------------------------------------------------------- simulator

N_BALLS = 5
DIM = 3
LOC_STD = 1.0
VEL_NORM = 0.5
INTERACTION_STRENGTH = 1.0
DELTA_T = 0.001
SAMPLE_FREQ = 100
MAX_F = 0.1 / DELTA_T
FRAME_IN = 30
FRAME_OUT = 40


def pairwise_forces(loc: torch.Tensor, charges: torch.Tensor, k: float = INTERACTION_STRENGTH, max_f: float = MAX_F):
    """``(S, n, n, 3)`` clipped pairwise forces ``F[s, i, j]`` on ``i`` from ``j`` (zero for ``i == j``).

    ``loc`` is ``(S, n, 3)``, ``charges`` ``(S, n)``.
    """
    diff = loc[:, :, None, :] - loc[:, None, :, :]  # x_i - x_j
    dist = diff.norm(dim=-1)
    n = loc.size(1)
    eye = torch.eye(n, dtype=torch.bool, device=loc.device)
    dist = dist.masked_fill(eye, float("inf"))
    qq = charges[:, :, None] * charges[:, None, :]
    f = (k * qq / dist**3)[..., None] * diff
    size = (k * qq.abs() / dist**2)[..., None]  # |F_ij|
    return f * (max_f / size).clamp(max=1.0)


def simulate_from(loc, vel, charges, n_steps: int, sample_freq: int = SAMPLE_FREQ, dt: float = DELTA_T, **force_kw):
    """Integrates ``(S, n, 3)`` positions/velocities; returns ``(locs, vels)`` of shape ``(S, F, n, 3)``.

    Frame 0 is the initial state; frame ``f`` is the state after ``f * sample_freq`` steps.
    """
    loc, vel = loc.clone(), vel.clone()
    locs, vels = [loc.clone()], [vel.clone()]
    vel = vel + dt * pairwise_forces(loc, charges, **force_kw).sum(dim=2)
    for step in range(1, n_steps + 1):
        loc = loc + dt * vel
        if step % sample_freq == 0:
            locs.append(loc.clone())
            vels.append(vel.clone())
        vel = vel + dt * pairwise_forces(loc, charges, **force_kw).sum(dim=2)
    return torch.stack(locs, dim=1), torch.stack(vels, dim=1)


def initial_state(n_systems: int, seed: int, n_balls: int = N_BALLS, dtype=torch.float64):
    """Seeded ``(loc, vel, charges)``: ``(S, n, 3)``, ``(S, n, 3)``, ``(S, n)``."""
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(n_systems, n_balls, DIM, generator=g, dtype=dtype) * LOC_STD
    vel = torch.randn(n_systems, n_balls, DIM, generator=g, dtype=dtype)
    vel = vel * (VEL_NORM / vel.norm(dim=-1, keepdim=True))
    charges = torch.where(torch.rand(n_systems, n_balls, generator=g) < 0.5, -1.0, 1.0).to(dtype)
    return loc, vel, charges


def simulate(n_systems: int, seed: int, n_frames: int = FRAME_OUT, n_balls: int = N_BALLS):
    """Seeded trajectories: ``(locs (S, F+1, n, 3), vels (S, F+1, n, 3), charges (S, n))``, float64."""
    loc, vel, charges = initial_state(n_systems, seed, n_balls)
    locs, vels = simulate_from(loc, vel, charges, n_frames * SAMPLE_FREQ)
    return locs, vels, charges


def make_split(n_systems: int, seed: int):
    """The task's tensors (float32): ``loc``, ``vel``, ``charges``, ``target`` of frame 30 -> 40."""
    locs, vels, charges = simulate(n_systems, seed)
    return {
        "loc": locs[:, FRAME_IN].float(),
        "vel": vels[:, FRAME_IN].float(),
        "charges": charges.float(),
        "target": locs[:, FRAME_OUT].float(),
    }


# --------------------------------------------------------------------------- graphs


def fully_connected_edges(n_balls: int, batch_size: int):
    """``(row, col)`` of ``batch_size`` disjoint complete graphs without self loops."""
    idx = torch.arange(n_balls)
    row, col = torch.meshgrid(idx, idx, indexing="ij")
    keep = row != col
    row, col = row[keep], col[keep]
    offsets = (torch.arange(batch_size) * n_balls)[:, None]
    return (row[None] + offsets).reshape(-1), (col[None] + offsets).reshape(-1)


def batch_inputs(loc, vel, charges):
    """Flattens ``(B, n, 3)`` systems into one graph: ``(h, x, edges, vel, edge_attr)``."""
    b, n, _ = loc.shape
    row, col = fully_connected_edges(n, b)
    x = loc.reshape(b * n, DIM)
    v = vel.reshape(b * n, DIM)
    q = charges.reshape(b * n, 1)
    h = v.norm(dim=1, keepdim=True)
    dist2 = ((x[row] - x[col]) ** 2).sum(dim=1, keepdim=True)
    edge_attr = torch.cat([q[row] * q[col], dist2], dim=1)
    return h, x, (row, col), v, edge_attr


def make_model(seed: int = 0) -> EGNN_vel:
    torch.manual_seed(seed)
    return EGNN_vel(in_node_nf=1, in_edge_nf=2, hidden_nf=64, act_fn=nn.SiLU(), n_layers=4, recurrent=True)


def predict(model, loc, vel, charges):
    h, x, edges, v, edge_attr = batch_inputs(loc, vel, charges)
    return model(h, x, edges, v, edge_attr).reshape(loc.shape)


@torch.no_grad()
def evaluate(model, data, batch_size: int = 500) -> float:
    total, count = 0.0, 0
    for s in range(0, data["loc"].size(0), batch_size):
        sl = slice(s, s + batch_size)
        pred = predict(model, data["loc"][sl], data["vel"][sl], data["charges"][sl])
        total += float(((pred - data["target"][sl]) ** 2).sum())
        count += pred.numel()
    return total / count


def train_step(model, optimizer, loc, vel, charges, target) -> float:
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(predict(model, loc, vel, charges), target)
    loss.backward()
    optimizer.step()
    return loss.item()


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small data and few epochs (~2-3 min on 2 CPU cores)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--time-limit", type=float, default=None, help="stop training after this many seconds")
    args = parser.parse_args()

    if args.quick:
        n_train, n_val, n_test, epochs, lr, val_every = 1000, 200, 500, 100, 5e-4, 10
    else:
        n_train, n_val, n_test, epochs, lr, val_every = 3000, 2000, 2000, 10000, 5e-4, 5
    n_train = args.n_train or n_train
    epochs = args.epochs if args.epochs is not None else epochs
    lr = args.lr or lr

    t0 = time.perf_counter()
    # Distinct seeds per split; the model seed is the run seed.
    train = make_split(n_train, seed=3 * args.seed + 1000)
    val = make_split(n_val, seed=3 * args.seed + 1001)
    test = make_split(n_test, seed=3 * args.seed + 1002)
    t_data = time.perf_counter() - t0
    linear = ((test["loc"] + test["vel"] * (SAMPLE_FREQ * (FRAME_OUT - FRAME_IN) * DELTA_T) - test["target"]) ** 2).mean()
    static = ((test["loc"] - test["target"]) ** 2).mean()
    print(f"data: {n_train}/{n_val}/{n_test} systems in {t_data:.1f} s; "
          f"test MSE of x(t) = x0: {float(static):.4f}, of x0 + v0 t: {float(linear):.4f}")

    model = make_model(args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-12)
    g = torch.Generator().manual_seed(args.seed)
    best_val, best_state, best_epoch = float("inf"), None, -1
    t1 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(n_train, generator=g)
        losses = []
        for s in range(0, n_train, args.batch_size):
            idx = perm[s : s + args.batch_size]
            losses.append(train_step(model, optimizer, *(train[k][idx] for k in ("loc", "vel", "charges", "target"))))
        out_of_time = args.time_limit is not None and time.perf_counter() - t1 > args.time_limit
        if epoch % val_every == 0 or epoch == epochs or out_of_time:
            v = evaluate(model, val)
            if v < best_val:
                best_val, best_epoch = v, epoch
                best_state = {k: t.clone() for k, t in model.state_dict().items()}
            print(f"epoch {epoch:5d}  train {sum(losses) / len(losses):.5f}  val {v:.5f}  "
                  f"({time.perf_counter() - t1:.0f} s)", flush=True)
        if out_of_time:
            break
    model.load_state_dict(best_state)
    print(f"best val MSE {best_val:.5f} at epoch {best_epoch}; training {time.perf_counter() - t1:.0f} s")
    print(f"test MSE {evaluate(model, test):.6f}")


if __name__ == "__main__":
    main()
