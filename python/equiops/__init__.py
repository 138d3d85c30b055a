"""equiops: fused kernels for equivariant graph neural networks.

Operators are registered under ``torch.ops.equiops`` (see ARCHITECTURE.md); this
package exposes them with e3nn / torch_scatter-compatible Python APIs.
"""

from . import _extension, backend, so3  # noqa: F401  (_extension: equiops._extension.with_cuda() etc.)
from .irreps import Irrep, Irreps, as_irreps
from .backend import deterministic, get_backend, is_deterministic, set_backend, set_deterministic, use_backend
from .graph import Graph
from .harmonics import (
    SphericalHarmonics,
    patch_e3nn,
    spherical_harmonics,
    spherical_harmonics_with_gradients,
)
from .ops import segment as _segment_ops  # noqa: F401  registers fake kernels, autograd, CUDA dispatch
from .ops import spherical_harmonics as _sh_ops  # noqa: F401  (same, for the harmonics)
from .ops import tensor_product as _tp_ops  # noqa: F401  (same, for the tensor products)
from .ops import tp_conv as _tp_conv_ops  # noqa: F401  (same, for the fused convolution)
from . import nn  # noqa: F401
from .nn.tensor_product import (
    ChannelWiseTensorProduct,
    ElementwiseTensorProduct,
    FullTensorProduct,
    FullyConnectedTensorProduct,
    TensorProduct,
    from_e3nn,
    replace_e3nn_tensor_products,
)
from .nn.tp_conv import TensorProductConv, tensor_product_conv
from .ops.scatter import (
    gather_csr,
    scatter,
    scatter_add,
    scatter_max,
    scatter_mean,
    scatter_min,
    scatter_sum,
    segment_add_csr,
    segment_csr,
    segment_max_csr,
    segment_mean_csr,
    segment_min_csr,
    segment_sum_csr,
)

__version__ = "0.1.0"

__all__ = [
    "ChannelWiseTensorProduct",
    "ElementwiseTensorProduct",
    "FullTensorProduct",
    "FullyConnectedTensorProduct",
    "Graph",
    "Irrep",
    "Irreps",
    "SphericalHarmonics",
    "as_irreps",
    "so3",
    "TensorProduct",
    "TensorProductConv",
    "from_e3nn",
    "replace_e3nn_tensor_products",
    "backend",
    "deterministic",
    "gather_csr",
    "get_backend",
    "is_deterministic",
    "patch_e3nn",
    "scatter",
    "scatter_add",
    "scatter_max",
    "scatter_mean",
    "scatter_min",
    "scatter_sum",
    "segment_add_csr",
    "segment_csr",
    "segment_max_csr",
    "segment_mean_csr",
    "segment_min_csr",
    "segment_sum_csr",
    "set_backend",
    "set_deterministic",
    "spherical_harmonics",
    "spherical_harmonics_with_gradients",
    "use_backend",
    "tensor_product_conv",
]
