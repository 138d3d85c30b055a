"""Tensor-product problems shared by the kernel test files (CUDA, CUDA emulation)."""

# Every connection mode, weighted and unweighted, several paths per output block, a path
# weight: arguments of equiops.tp_problem.build_problem.
ALL_MODES = (
    "3x0e+3x1o",
    "3x0e+3x1o",
    "3x0e+3x1o+9x1e+3x1e+2x2e+4x0e+1x0e",
    [
        (0, 0, 5, "uvw", True),
        (1, 1, 4, "uvw", True),
        (0, 1, 1, "uvu", True),
        (1, 0, 1, "uvv", False),
        (1, 1, 0, "uuw", True),
        (1, 1, 3, "uuu", True),
        (1, 1, 2, "uvuv", True),
        (1, 1, 3, "uvu<v", True),
        (0, 0, 0, "u<vw", True),
        (1, 1, 0, "uvu", False),
        (0, 1, 1, "uvv", True, 0.5),
        (1, 1, 6, "uuw", False),
        (1, 1, 3, "uuu", False),
        (1, 1, 2, "uvuv", False),
        (1, 1, 3, "uvu<v", False),
        (1, 1, 4, "u<vw", True),
    ],
)

# Fully connected (uvw) with mixed degrees; the tests use it with shared weights.
FULLY_CONNECTED = (
    "4x0e+3x1o",
    "2x0e+1x1o",
    "3x0e+2x1o+2x1e",
    [
        (0, 0, 0, "uvw", True),
        (1, 1, 0, "uvw", True),
        (0, 1, 1, "uvw", True),
        (1, 0, 1, "uvw", True),
        (1, 1, 2, "uvw", True),
    ],
)

# Small channel-wise problem (the convolution's product): every pair of 4x0e+4x1o and
# 0e+1o+2e that reaches 0e, 1o or 2e, uvu with per-row weights.
CHANNELWISE_SMALL = (
    "4x0e+4x1o",
    "0e+1o+2e",
    "4x0e+4x1o+4x2e",
    [(0, 0, 0, "uvu", True), (0, 1, 1, "uvu", True), (0, 2, 2, "uvu", True), (1, 0, 1, "uvu", True),
     (1, 1, 0, "uvu", True), (1, 1, 2, "uvu", True), (1, 2, 1, "uvu", True)],
)  # fmt: skip
