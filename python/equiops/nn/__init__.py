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
from .linear import Linear
from .radial import BesselBasis, CosineCutoff, GaussianBasis, PolynomialCutoff, RadialMLP, soft_one_hot_linspace
from .gate import Activation, Gate, NormActivation
from .tfn import InteractionBlock, RadialEmbedding, TensorFieldNetwork, TFNConv
from .egnn import E_GCL, E_GCL_vel, EGNN, EGNN_vel
from .lieconv import BottleBlock, GlobalPool, LieConv, LieConvBNrelu, LieResNet, MaskBatchNormNd, PointConv

__all__ = [
    "BottleBlock",
    "GlobalPool",
    "LieConv",
    "LieConvBNrelu",
    "LieResNet",
    "MaskBatchNormNd",
    "PointConv",
    "E_GCL",
    "E_GCL_vel",
    "EGNN",
    "EGNN_vel",
    "Activation",
    "BesselBasis",
    "CosineCutoff",
    "Gate",
    "GaussianBasis",
    "InteractionBlock",
    "Linear",
    "NormActivation",
    "PolynomialCutoff",
    "RadialEmbedding",
    "RadialMLP",
    "TFNConv",
    "TensorFieldNetwork",
    "soft_one_hot_linspace",
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
