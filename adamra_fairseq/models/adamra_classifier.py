"""``adamra_roberta``: an encoder-only AdaMRA classifier for fairseq's ``sentence_prediction`` task.

fairseq's RoBERTa model (token and learned position embeddings, a
transformer encoder, classification heads on the first token) with AdaMRA
self-attention in every encoder layer. ``roberta_adamra_*_baseline`` are the
vanilla twins of the same sizes, registered on fairseq's own ``roberta``.
Train with ``fairseq-train DATA --task sentence_prediction --init-token 0
--num-classes C --max-positions N --criterion sentence_prediction --arch
adamra_roberta_tiny`` (examples/long_range/ builds the data).
"""

from fairseq.models import register_model, register_model_architecture
from fairseq.models.roberta.model import RobertaEncoder, RobertaModel
from fairseq.models.roberta.model import base_architecture as roberta_base_architecture
from fairseq.models.transformer import TransformerConfig
from fairseq.modules.transformer_sentence_encoder import init_bert_params

from ..modules.options import AdaMRAOptionError, add_adamra_args, parse_adamra_options
from ..modules.resolution_gate import ResolutionGate
from .adamra_transformer import AdaMRAEncoder, set_sizes, validated_or_exit


def check_classifier_options(args) -> None:
    """AdaMRAOptionError for ``--adamra-*`` values a classifier cannot honour (it has encoder self-attention
    only, and sentence_prediction's criterion adds no balance loss)."""
    places = {place.strip() for place in str(args.adamra_attention).split(",") if place.strip()}
    if places != {"encoder"}:
        raise AdaMRAOptionError(f"--adamra-attention {args.adamra_attention!r}: the classifier has encoder "
                                "self-attention only; use --adamra-attention encoder")
    options = parse_adamra_options(args)
    if options.balance_loss > 0:
        raise AdaMRAOptionError("--adamra-balance-loss needs the translation criterion; sentence_prediction does "
                                "not add it: set it to 0")


class AdaMRARobertaEncoder(RobertaEncoder):
    """RoBERTa's encoder whose transformer layers have AdaMRA self-attention."""

    def build_encoder(self, args, dictionary, embed_tokens):
        encoder = AdaMRAEncoder(TransformerConfig.from_namespace(args), dictionary, embed_tokens)
        encoder.apply(init_bert_params)
        return encoder


@register_model("adamra_roberta")
class AdaMRARobertaModel(RobertaModel):
    """RoBERTa with AdaMRA encoder self-attention (every ``--adamra-*`` flag applies to it)."""

    def __init__(self, args, encoder):
        super().__init__(args, encoder)  # applies BERT's initialisation to every linear layer
        for module in self.modules():
            if isinstance(module, ResolutionGate):
                module.reset_parameters()  # the gate starts uniform over the rates, as in translation

    @staticmethod
    def add_args(parser):
        RobertaModel.add_args(parser)
        add_adamra_args(parser)

    @classmethod
    def build_model(cls, args, task):
        roberta_base_architecture(args)
        adamra_roberta_architecture(args)
        if getattr(args, "max_positions", None) is None:
            args.max_positions = task.max_positions()
        return cls(args, AdaMRARobertaEncoder(args, task.source_dictionary))


def classifier_defaults(args) -> None:
    """What both the AdaMRA classifier and its vanilla twin use unless the command line says otherwise:
    pre-norm layers (stable at the learning rates of short CPU runs) and no attention dropout (AdaMRA's
    attention has none, so the twin's softmax gets none either)."""
    args.encoder_normalize_before = getattr(args, "encoder_normalize_before", True)
    args.layernorm_embedding = getattr(args, "layernorm_embedding", False)
    args.attention_dropout = getattr(args, "attention_dropout", 0.0)


def classifier_tiny_sizes(args):
    """2 layers, 128 wide, 8 heads of 16 (so that rates 1,2,4,8 fit), FFN 256."""
    set_sizes(args, ("encoder",), embed_dim=128, ffn_dim=256, heads=8, layers=2)
    classifier_defaults(args)


def classifier_small_sizes(args):
    """4 layers, 256 wide, 4 heads of 64, FFN 1024 (near the Long Range Arena's ListOps model, narrower)."""
    set_sizes(args, ("encoder",), embed_dim=256, ffn_dim=1024, heads=4, layers=4)
    classifier_defaults(args)


@register_model_architecture("adamra_roberta", "adamra_roberta")
def adamra_roberta_architecture(args):
    classifier_defaults(args)
    roberta_base_architecture(args)
    args.adamra_attention = getattr(args, "adamra_attention", None) or "encoder"
    validated_or_exit(args, check_classifier_options)


@register_model_architecture("adamra_roberta", "adamra_roberta_tiny")
def adamra_roberta_tiny(args):
    classifier_tiny_sizes(args)
    adamra_roberta_architecture(args)


@register_model_architecture("adamra_roberta", "adamra_roberta_small")
def adamra_roberta_small(args):
    classifier_small_sizes(args)
    adamra_roberta_architecture(args)


@register_model_architecture("roberta", "roberta_adamra_tiny_baseline")
def roberta_adamra_tiny_baseline(args):
    """fairseq's RoBERTa with ``adamra_roberta_tiny``'s sizes, for like-for-like comparisons."""
    classifier_tiny_sizes(args)
    roberta_base_architecture(args)


@register_model_architecture("roberta", "roberta_adamra_small_baseline")
def roberta_adamra_small_baseline(args):
    """fairseq's RoBERTa with ``adamra_roberta_small``'s sizes."""
    classifier_small_sizes(args)
    roberta_base_architecture(args)
