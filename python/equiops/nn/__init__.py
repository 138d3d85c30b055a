"""Modules built on equiops' operators."""

from .tensor_product import (
    ChannelWiseTensorProduct,
    ElementwiseTensorProduct,
    FullTensorProduct,
    FullyConnectedTensorProduct,
    TensorProduct,
    channelwise_instructions,
    from_e3nn,
    replace_e3nn_tensor_products,
)
from .tp_conv import TensorProductConv, tensor_product_conv

__all__ = [
    "ChannelWiseTensorProduct",
    "ElementwiseTensorProduct",
    "FullTensorProduct",
    "FullyConnectedTensorProduct",
    "TensorProduct",
    "TensorProductConv",
    "channelwise_instructions",
    "from_e3nn",
    "replace_e3nn_tensor_products",
    "tensor_product_conv",
]
