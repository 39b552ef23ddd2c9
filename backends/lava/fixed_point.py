"""The fixed-point API in one place (the pieces live in fixed, quant, quantizer, integer):
``lower_fixed`` / ``quantize`` / ``quantize_plan``, the integer reference ``run_integer`` /
``simulate``, and the arithmetic helpers tests and tools use."""
from snncc.backends.lava.fixed import (FixedConn, FixedParams, FixedPop, lava_conv_kwargs, lava_dense_kwargs,
                                       lava_lif_kwargs, sample_bias)
from snncc.backends.lava.integer import run_integer, simulate
from snncc.backends.lava.quant import SignMode, conv_apply, lava_weights, quant_weights, row_pos_neg
from snncc.backends.lava.quantizer import attach_fixed, lower_fixed, quantize, quantize_plan

__all__ = ["FixedConn", "FixedParams", "FixedPop", "lava_conv_kwargs", "lava_dense_kwargs", "lava_lif_kwargs",
           "sample_bias", "run_integer", "simulate", "SignMode", "conv_apply", "lava_weights", "quant_weights",
           "row_pos_neg", "attach_fixed", "lower_fixed", "quantize", "quantize_plan"]
