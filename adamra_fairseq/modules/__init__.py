from .multires_attention import MultiResolutionAttention
from .options import AdaMRAOptionError, AdaMRAOptions, parse_adamra_options
from .resolution_gate import ResolutionGate
from .transformer_layers import AdaMRADecoderLayer, AdaMRAEncoderLayer

__all__ = [
    "AdaMRADecoderLayer",
    "AdaMRAEncoderLayer",
    "AdaMRAOptionError",
    "AdaMRAOptions",
    "MultiResolutionAttention",
    "ResolutionGate",
    "parse_adamra_options",
]
