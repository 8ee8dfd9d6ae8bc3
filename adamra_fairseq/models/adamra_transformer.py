"""The ``adamra_transformer`` model: fairseq's transformer with AdaMRA attention layers."""

from typing import Callable, Optional, Sequence

import torch
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import (
    TransformerConfig,
    TransformerDecoderBase,
    TransformerEncoderBase,
    TransformerModel,
    base_architecture,
    transformer_iwslt_de_en,
    transformer_wmt_en_de,
)

from ..modules.multires_attention import MultiResolutionAttention, causal_marker
from ..modules.options import (
    AdaMRAOptionError,
    add_adamra_args,
    check_balance_criterion,
    fill_adamra_defaults,
    parse_adamra_options,
)
from ..modules.transformer_layers import AdaMRADecoderLayer, AdaMRAEncoderLayer

class AdaMRAEncoder(TransformerEncoderBase):
    def build_encoder_layer(self, cfg):
        if cfg.checkpoint_activations:
            raise ValueError("AdaMRA layers do not support --checkpoint-activations yet")
        return AdaMRAEncoderLayer(cfg, return_fc=self.return_fc)


class AdaMRADecoder(TransformerDecoderBase):
    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        if cfg.checkpoint_activations:
            raise ValueError("AdaMRA layers do not support --checkpoint-activations yet")
        return AdaMRADecoderLayer(cfg, no_encoder_attn)

    def buffered_future_mask(self, tensor):
        """No T x T mask when every self-attention is AdaMRA: an empty marker tells it to run causally."""
        if all(isinstance(layer.self_attn, MultiResolutionAttention) for layer in self.layers):
            return causal_marker(tensor.device)
        return super().buffered_future_mask(tensor)


@register_model("adamra_transformer")
class AdaMRATransformerModel(TransformerModel):
    """Transformer whose attention is AdaMRA in the places ``--adamra-attention`` names."""

    @staticmethod
    def add_args(parser):
        TransformerModel.add_args(parser)
        add_adamra_args(parser)

    @classmethod
    def build_model(cls, args, task):
        parse_adamra_options(args)
        check_balance_criterion(args)
        return super().build_model(args, task)

    @classmethod
    def build_encoder(cls, args, src_dict, embed_tokens):
        return AdaMRAEncoder(TransformerConfig.from_namespace(args), src_dict, embed_tokens)

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        cfg = TransformerConfig.from_namespace(args)
        return AdaMRADecoder(cfg, tgt_dict, embed_tokens, no_encoder_attn=cfg.no_cross_attention)

    def adamra_balance_loss(self) -> Optional[torch.Tensor]:
        """Sum of the load-balancing losses of every AdaMRA attention in the last training forward."""
        losses = [
            module.balance_loss()
            for module in self.modules()
            if isinstance(module, MultiResolutionAttention) and module.balance_loss() is not None
        ]
        return torch.stack(losses).sum() if losses else None


def check_translation_options(args) -> None:
    """AdaMRAOptionError unless the ``--adamra-*`` values suit a translation model."""
    parse_adamra_options(args)
    check_balance_criterion(args)


def validated_or_exit(args, check: Callable = check_translation_options) -> None:
    """Fills the AdaMRA defaults and stops the command with one line if ``check`` finds a bad value."""
    fill_adamra_defaults(args)
    try:
        check(args)
    except AdaMRAOptionError as error:
        raise SystemExit(f"error: {error}") from None


@register_model_architecture("adamra_transformer", "adamra_transformer")
def adamra_base_architecture(args):
    base_architecture(args)
    validated_or_exit(args)


@register_model_architecture("adamra_transformer", "adamra_transformer_iwslt_de_en")
def adamra_transformer_iwslt_de_en(args):
    transformer_iwslt_de_en(args)
    validated_or_exit(args)


@register_model_architecture("adamra_transformer", "adamra_transformer_wmt_en_de")
def adamra_transformer_wmt_en_de(args):
    transformer_wmt_en_de(args)
    validated_or_exit(args)


def set_sizes(args, sides: Sequence[str], embed_dim: int, ffn_dim: int, heads: int, layers: int) -> None:
    """The same sizes for each of ``sides`` (``encoder``, ``decoder``), where the command line did not set them."""
    for side in sides:
        for name, value in (("embed_dim", embed_dim), ("ffn_embed_dim", ffn_dim),
                            ("attention_heads", heads), ("layers", layers)):
            setattr(args, f"{side}_{name}", getattr(args, f"{side}_{name}", value))


def tiny_sizes(args):
    """A 2+2-layer, 128-wide model for CPU demos and tests (8 heads of 16, so that 1,2,4,8 fits)."""
    set_sizes(args, ("encoder", "decoder"), embed_dim=128, ffn_dim=256, heads=8, layers=2)


def small_sizes(args):
    """A 3+3-layer, 256-wide model with 4 heads of 64 (the head width of real MT models), FFN 1024."""
    set_sizes(args, ("encoder", "decoder"), embed_dim=256, ffn_dim=1024, heads=4, layers=3)


@register_model_architecture("adamra_transformer", "adamra_transformer_tiny")
def adamra_transformer_tiny(args):
    tiny_sizes(args)
    base_architecture(args)
    validated_or_exit(args)


@register_model_architecture("transformer", "transformer_adamra_tiny_baseline")
def transformer_adamra_tiny_baseline(args):
    """The vanilla transformer with ``adamra_transformer_tiny``'s sizes, for like-for-like comparisons."""
    tiny_sizes(args)
    base_architecture(args)


@register_model_architecture("adamra_transformer", "adamra_transformer_small")
def adamra_transformer_small(args):
    small_sizes(args)
    base_architecture(args)
    validated_or_exit(args)


@register_model_architecture("transformer", "transformer_adamra_small_baseline")
def transformer_adamra_small_baseline(args):
    """The vanilla transformer with ``adamra_transformer_small``'s sizes."""
    small_sizes(args)
    base_architecture(args)
