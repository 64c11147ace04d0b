"""nets.formats: exact number formats (posits, OCP FP8/FP4, MX) and fake quantisation.

    from nets.formats import get_format, fake_quant
    fake_quant(w, "posit(8,0)")            # exact SoftPosit posit8 rounding, identity STE
    get_format("mxfp4").bits                # 4.25: 4-bit elements + an 8-bit scale per 32
"""

from nets.formats._float import MX_BLOCK, cast_quantize, max_normal_exponent, mx_quantize, rne_quantize
from nets.formats._posit import Posit, pow2_scale, scaled_quantize
from nets.formats._qat import STE_KINDS, fake_quant, mixture_fake_quant
from nets.formats._registry import FORMAT_NAMES, SCALINGS, NumberFormat, get_format

__all__ = [
    "FORMAT_NAMES", "MX_BLOCK", "SCALINGS", "STE_KINDS", "NumberFormat", "Posit",
    "cast_quantize", "rne_quantize", "fake_quant", "get_format", "max_normal_exponent", "mixture_fake_quant",
    "mx_quantize", "pow2_scale", "scaled_quantize",
]
