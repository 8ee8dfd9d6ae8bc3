"""fairseq transformer layers whose attention is AdaMRA where the options say so."""

from fairseq.modules.transformer_layer import TransformerDecoderLayerBase, TransformerEncoderLayerBase

from .multires_attention import MultiResolutionAttention
from .options import parse_adamra_options


class AdaMRAEncoderLayer(TransformerEncoderLayerBase):
    """Encoder layer with AdaMRA self-attention (if ``encoder`` is in ``--adamra-attention``)."""

    def build_self_attention(self, embed_dim, cfg):
        options = parse_adamra_options(cfg)
        if "encoder" not in options.places:
            return super().build_self_attention(embed_dim, cfg)
        return MultiResolutionAttention(
            embed_dim, cfg.encoder.attention_heads, options, self_attention=True,
        )


class AdaMRADecoderLayer(TransformerDecoderLayerBase):
    """Decoder layer with causal AdaMRA self-attention (``decoder``) and AdaMRA cross-attention (``cross``,
    with the ``--adamra-cross-*`` overrides)."""

    def build_self_attention(self, embed_dim, cfg, add_bias_kv=False, add_zero_attn=False):
        options = parse_adamra_options(cfg)
        if "decoder" not in options.places:
            return super().build_self_attention(embed_dim, cfg, add_bias_kv, add_zero_attn)
        if add_bias_kv or add_zero_attn or cfg.cross_self_attention:
            raise ValueError("AdaMRA decoder self-attention does not support add_bias_kv, "
                             "add_zero_attn or --cross-self-attention")
        return MultiResolutionAttention(
            embed_dim, cfg.decoder.attention_heads, options, self_attention=True,
            causal_decay=options.decay == "learned",
        )

    def build_encoder_attention(self, embed_dim, cfg):
        options = parse_adamra_options(cfg)
        if "cross" not in options.places:
            return super().build_encoder_attention(embed_dim, cfg)
        return MultiResolutionAttention(
            embed_dim, cfg.decoder.attention_heads, options.for_cross_attention(),
            kdim=cfg.encoder.embed_dim, vdim=cfg.encoder.embed_dim, encoder_decoder_attention=True,
        )
