"""One call of each CUDA tensor-product entry point on a small problem, printing as it
goes: run under cuda-gdb by benchmarks/gpu_check.sh so that a crash in the C++ glue
leaves a native backtrace in the log rather than only Python's last frame."""

import torch

from equiops import _C
from equiops.tp_problem import build_problem

p = build_problem("2x0e+2x1o", "0e+1o", "2x0e+2x1o+2x1e", [(0, 0, 0, "uvu", True), (1, 0, 1, "uvu", True),
                                                         (0, 1, 1, "uvu", True), (1, 1, 2, "uvu", True)])
s = p.encode()
N = 5
dev = torch.device("cuda")
x1 = torch.randn(N, p.dim1, device=dev, dtype=torch.float64)
x2 = torch.randn(N, p.dim2, device=dev, dtype=torch.float64)
w = torch.randn(N, p.dim_w, device=dev, dtype=torch.float64)
print("problem", s[:80], flush=True)
out = _C.tensor_product_cuda(x1, x2, w, s)
torch.cuda.synchronize()
print("forward ok", out.shape, flush=True)
go = torch.randn_like(out)
g = _C.tensor_product_backward_cuda(go, x1, x2, w, s, True, True, True)
torch.cuda.synchronize()
print("backward ok", [t.shape for t in g], flush=True)
d = _C.tensor_product_double_backward_cuda(x1, x2, w, go, x1, x2, w, s)
torch.cuda.synchronize()
print("double backward ok", [t.shape for t in d], flush=True)
