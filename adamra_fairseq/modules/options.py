"""The ``--adamra-*`` command-line options: definitions, defaults and validation.

Options that shape one attention (rates, feature map, its width, q/k
normalisation, normaliser) exist twice: ``--adamra-X`` sets them for every
AdaMRA attention, ``--adamra-cross-X`` overrides them for encoder-decoder
attention only (unset: the same as self-attention).
"""

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, Mapping, Tuple

from ..ops.feature_maps import FEATURE_MAPS, LEARNED_FEATURE_MAPS, NARROWABLE_FEATURE_MAPS, accepts_feature_dim
from .query_key_transform import QK_NORMS

ROUTINGS = ("soft", "top1")
DECAYS = ("none", "learned")
RECOMPUTES = ("none", "causal")
NORMALISERS = ("denominator", "norm", "both")
BALANCE_CRITERION = "adamra_label_smoothed_cross_entropy"
ATTENTION_PLACES = ("encoder", "decoder", "cross")
# Options that self- and cross-attention may set differently (--adamra-X and --adamra-cross-X).
PER_PLACE = ("rates", "feature_map", "feature_dim", "qk_norm", "normaliser")
# Defaults of the settings that shape the kernel attention, by --adamra-preset. The choice a user makes:
# "recommended" (the default: what translated best in docs/results.md) or "original" (the method as first
# defined: elu + 1 everywhere, the kernel denominator, the same rates in every place). The other names are the
# steps of the quality screen between the two; they keep their meaning so that their checkpoints load and their
# runs can be repeated. Checkpoints remember their preset; ones written before presets existed are "original".
# A released preset keeps its meaning (checkpoints leave unset cross values to it): add a new one instead.
_SAME_IN_CROSS = {"adamra_cross_feature_map": None, "adamra_cross_qk_norm": None}  # None: as self-attention
_TUNED_TAYLOR = {
    "adamra_feature_map": "hedgehog", "adamra_feature_dim": 0, "adamra_qk_norm": "none",
    "adamra_normaliser": "denominator", "adamra_decay": "learned", "adamra_cross_rates": "1",
    "adamra_cross_feature_map": "taylor2", "adamra_cross_qk_norm": "scale",
}
PRESETS = {
    # Hedgehog features in self-attention, a learned decay in decoder self-attention, and cross-attention as a
    # softmax over at most 64 source blocks, q scaled by D^-1/2 (its Taylor feature map is unused there)
    "recommended": {**_TUNED_TAYLOR, "adamra_cross_blocks": 64},
    "original": {
        "adamra_feature_map": "elu", "adamra_feature_dim": 0, "adamra_qk_norm": "none",
        "adamra_normaliser": "denominator", "adamra_decay": "none", "adamra_cross_rates": None, **_SAME_IN_CROSS,
        "adamra_cross_blocks": 0,
    },
    # the screen's steps: Hedgehog features and one rate in cross-attention
    "tuned": {
        "adamra_feature_map": "hedgehog", "adamra_feature_dim": 0, "adamra_qk_norm": "none",
        "adamra_normaliser": "denominator", "adamra_decay": "none", "adamra_cross_rates": "1", **_SAME_IN_CROSS,
        "adamra_cross_blocks": 0,
    },
    "tuned-decay": {  # tuned + a learned per-head decay in decoder self-attention
        "adamra_feature_map": "hedgehog", "adamra_feature_dim": 0, "adamra_qk_norm": "none",
        "adamra_normaliser": "denominator", "adamra_decay": "learned", "adamra_cross_rates": "1", **_SAME_IN_CROSS,
        "adamra_cross_blocks": 0,
    },
    # tuned-decay with Taylor features and q scaled by D^-1/2 in cross-attention: the best kernel cross-attention
    "tuned-taylor": {**_TUNED_TAYLOR, "adamra_cross_blocks": 0},
}
# Earlier names of a preset above: checkpoints that stored them load as that preset.
PRESET_ALIASES = {"tuned-blocks": "recommended"}
PRESET_NAMES = (*PRESETS, *PRESET_ALIASES)
EARLIER_PRESET_NAMES = tuple(name for name in PRESET_NAMES if name not in ("recommended", "original"))
assert len({frozenset(values) for values in PRESETS.values()}) == 1, "every preset must set the same options"
DEFAULT_PRESET = "recommended"
DEFAULTS = {
    "adamra_rates": "1,2,4,8",
    "adamra_routing": "soft",
    "adamra_balance_loss": 0.0,
    **PRESETS[DEFAULT_PRESET],
    "adamra_attention": "encoder,decoder,cross",
    "adamra_cross_memory": 0,
    "adamra_chunk_size": 64,
    "adamra_eps": 1e-6,
    "adamra_feature_init_scale": 1.0,
    "adamra_recompute": "none",
}


class AdaMRAOptionError(ValueError):
    """A bad ``--adamra-*`` value; the message names the flag and what it accepts."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_adamra_args(parser) -> None:
    """Adds the ``--adamra-*`` flags to an argparse parser (defaults come from the architecture)."""
    group = parser.add_argument_group("AdaMRA attention")
    group.add_argument("--adamra-preset", choices=PRESET_NAMES, default=DEFAULT_PRESET, metavar="PRESET",
                       help="defaults of the kernel settings below; flags given explicitly override them. "
                            "recommended (the default) = what translated best: Hedgehog features in self-attention, "
                            "a learned decay in decoder self-attention, cross-attention as a softmax over at most 64 "
                            "source blocks (softmax attention for sources of at most 64 tokens); original = the method "
                            "as first defined: elu + 1 features and the kernel denominator everywhere, the same rates "
                            "in every place (translates clearly worse; for comparisons). Earlier names, kept so that "
                            "their checkpoints load: tuned, tuned-decay, tuned-taylor (steps between the two, "
                            "docs/method.md) and tuned-blocks (= recommended)")
    per_place_help = {
        "rates": ("R1,R2,...", str, "compression rates, one per group of heads, in head order; their number must "
                                    "divide the number of heads"),
        "feature_map": ("|".join(FEATURE_MAPS), str,
                        "kernel feature map phi: elu = elu(x)+1, relu, dpfp1/dpfp2 = DPFP with nu 1/2 (2*nu*N "
                        "features), taylor2 = 2nd-order Taylor of exp (1+N+N(N+1)/2 features), hedgehog = "
                        "[softmax(xW), softmax(-xW)] with a learned per-head W (identity at start; 2N features), "
                        "t2r = relu(xW+b) with learned W, b (N features); N is the head width or --adamra-feature-dim"),
        "feature_dim": ("N", int, "input width N of a learned feature map (hedgehog, t2r; 0 = the head width), "
                        "or of taylor2 after a learned per-head projection to N (0 = no projection)"),
        "qk_norm": ("|".join(QK_NORMS), str,
                    "before phi: none; scale = q times head_dim^-1/2; l2 = q and k l2-normalised, times the "
                    "square root of a learned per-head temperature"),
        "normaliser": ("|".join(NORMALISERS), str,
                       "denominator = divide by phi(q).z; norm = an RMS norm on each head's output instead; "
                       "both = divide, then norm"),
    }
    for name in PER_PLACE:
        metavar, kind, text = per_place_help[name]
        group.add_argument(_flag("adamra_" + name), type=kind, metavar=metavar,
                           help=f"{text} (default {_describe_default('adamra_' + name)})")
        group.add_argument(_flag("adamra_cross_" + name), type=kind, metavar=metavar,
                           help=f"the same for encoder-decoder attention only (default "
                                f"{_describe_default('adamra_cross_' + name, _flag('adamra_' + name))})")
    group.add_argument("--adamra-cross-memory", type=int, metavar="L",
                       help="encoder-decoder attention only: 0 = kernel attention over the source; L > 0 = "
                            "compress the source into L learned memory rows per head (a softmax over source "
                            "positions) and read them with softmax attention, linear in both lengths; the "
                            "cross feature map and its width are then unused (default 0)")
    group.add_argument("--adamra-cross-blocks", type=int, metavar="L",
                       help="encoder-decoder attention only: 0 = kernel attention over the source; L > 0 = "
                            "pool the source into at most L blocks of max(rate, ceil(length/L)) tokens and read "
                            "their mean keys/values with softmax attention (exact softmax attention for sources "
                            "of at most L tokens), linear in both lengths; the cross feature map and its width "
                            f"are then unused (default {_describe_default('adamra_cross_blocks')})")
    group.add_argument("--adamra-routing", type=str, metavar="|".join(ROUTINGS),
                       help="per-position resolution gate: soft scales every rate's heads by R*g, top1 keeps "
                            f"only the arg-max rate's heads (default {DEFAULTS['adamra_routing']})")
    group.add_argument("--adamra-balance-loss", type=float, metavar="W",
                       help="weight of the load-balancing loss for --adamra-routing top1 (needs "
                            "--criterion adamra_label_smoothed_cross_entropy; default 0)")
    group.add_argument("--adamra-decay", type=str, metavar="|".join(DECAYS),
                       help="decoder self-attention: none, or learned = a learned decay per head, so that a "
                            "complete block weighs gamma^(tokens between) (default "
                            f"{_describe_default('adamra_decay')})")
    group.add_argument("--adamra-attention", type=str, metavar="PLACES",
                       help="comma subset of encoder,decoder,cross: where AdaMRA replaces softmax "
                            f"attention (default {DEFAULTS['adamra_attention']})")
    group.add_argument("--adamra-chunk-size", type=int, metavar="C",
                       help="shortest chunk of the causal (decoder) training op for inputs over 256 tokens "
                            "(longer inputs take about 2 sqrt(length)); a multiple of every rate "
                            f"(default {DEFAULTS['adamra_chunk_size']})")
    group.add_argument("--adamra-recompute", type=str, metavar="|".join(RECOMPUTES),
                       help="none = the causal (decoder) training op keeps its intermediates for the backward "
                            "pass; causal = it keeps only its inputs and runs once more in the backward pass: "
                            "less training memory for long targets, for about one more forward pass of the op "
                            f"(default {DEFAULTS['adamra_recompute']})")
    group.add_argument("--adamra-eps", type=float, metavar="EPS",
                       help=f"added to the kernel normaliser (default {DEFAULTS['adamra_eps']})")
    group.add_argument("--adamra-feature-init-scale", type=float, metavar="S",
                       help="initial scale of the learned feature maps' projection W (hedgehog: W = S I; t2r and "
                            "a narrowed taylor2: random W times S): S > 1 makes the kernel less flat at the start "
                            f"of training (default {DEFAULTS['adamra_feature_init_scale']})")


def _describe_default(name: str, unset_means: str = "") -> str:
    """The default of option ``name`` for the help text: the default preset's, and the original preset's where it
    differs (the earlier presets are documented in docs/method.md, not in every flag's help)."""
    if name not in PRESETS[DEFAULT_PRESET]:
        return str(DEFAULTS.get(name, f"as {unset_means}"))
    texts = [str(value) if value is not None else f"as {unset_means}"
             for value in (PRESETS[DEFAULT_PRESET][name], PRESETS["original"][name])]
    return texts[0] if texts[0] == texts[1] else f"{texts[0]}; {texts[1]} with preset original"


def defaults_of(preset: str) -> Dict[str, object]:
    """Every option's default under ``preset``."""
    return {**DEFAULTS, **PRESETS[preset]}


def preset_of(args) -> str:
    """The ``--adamra-preset`` of ``args``, an earlier name resolved to the preset it names; AdaMRA options
    without a preset come from a checkpoint written before presets existed, whose defaults were ``original``."""
    preset = getattr(args, "adamra_preset", None)
    if preset is not None:
        return PRESET_ALIASES.get(str(preset), str(preset))
    has_options = any(getattr(args, name, None) is not None for name in DEFAULTS)
    return "original" if has_options else DEFAULT_PRESET


def fill_adamra_defaults(args) -> None:
    """Sets every unset ``adamra_*`` attribute to its default (architecture functions call this).

    Defaults come from the preset (:func:`preset_of`). The ``adamra_cross_*``
    overrides stay None when neither the command line nor the preset sets
    them: cross-attention then follows the self-attention values.
    """
    preset = preset_of(args)
    if preset not in PRESETS:
        raise AdaMRAOptionError(f"--adamra-preset {preset!r} is unknown: choose recommended (the default) or "
                                f"original (earlier names: {', '.join(EARLIER_PRESET_NAMES)})")
    args.adamra_preset = preset
    for name, value in defaults_of(preset).items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    for name in PER_PLACE:
        if not hasattr(args, "adamra_cross_" + name):
            setattr(args, "adamra_cross_" + name, None)


@dataclass(frozen=True)
class AdaMRAOptions:
    """Validated options of AdaMRA attention.

    The fields after ``eps`` default to the plain method (no extra q/k
    transform, the kernel denominator, elementwise maps); ``cross`` holds the
    per-place values that differ for encoder-decoder attention.
    """

    rates: Tuple[int, ...]
    routing: str = "soft"
    balance_loss: float = 0.0
    feature_map: str = "elu"
    places: Tuple[str, ...] = ATTENTION_PLACES
    chunk_size: int = 64
    eps: float = 1e-6
    feature_dim: int = 0
    qk_norm: str = "none"
    normaliser: str = "denominator"
    decay: str = "none"
    memory: int = 0
    blocks: int = 0
    feature_init_scale: float = 1.0
    recompute: str = "none"
    cross: Mapping[str, object] = field(default_factory=dict)

    def head_rates(self, num_heads: int) -> Tuple[int, ...]:
        """Rate of each head: rate i owns heads ``i*H/R .. (i+1)*H/R - 1``."""
        per_rate = num_heads // len(self.rates)
        return tuple(rate for rate in self.rates for _ in range(per_rate))

    def for_cross_attention(self) -> "AdaMRAOptions":
        """These options with the cross-attention overrides applied."""
        return replace(self, **self.cross, cross={})

    @property
    def divides_by_normaliser(self) -> bool:
        return self.normaliser in ("denominator", "both")

    @property
    def normalises_output(self) -> bool:
        return self.normaliser in ("norm", "both")


def _parse_rates(text, flag: str = "--adamra-rates") -> Tuple[int, ...]:
    accepted = f"a comma list of integers >= 1, e.g. {flag} 1,2,4,8"
    parts = [part.strip() for part in str(text).split(",")]
    if not text or any(not part for part in parts):
        raise AdaMRAOptionError(f"{flag} {text!r} is empty or has an empty entry: expected {accepted}")
    rates = []
    for part in parts:
        try:
            rate = int(part)
        except ValueError:
            raise AdaMRAOptionError(f"{flag}: {part!r} is not an integer: expected {accepted}") from None
        if rate < 1:
            raise AdaMRAOptionError(f"{flag}: rate {rate} is below 1: expected {accepted}")
        rates.append(rate)
    return tuple(rates)


def _choice(choices: Tuple[str, ...]) -> Callable[[object, str], str]:
    def parse(value, flag: str) -> str:
        if str(value) not in choices:
            raise AdaMRAOptionError(f"{flag} {str(value)!r} is unknown: choose one of {', '.join(choices)}")
        return str(value)
    return parse


def _parse_feature_dim(value, flag: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AdaMRAOptionError(f"{flag} {value} is invalid: use 0 (the head width) or a positive width")
    return value


PER_PLACE_PARSERS: Dict[str, Callable[[object, str], object]] = {
    "rates": _parse_rates,
    "feature_map": _choice(tuple(FEATURE_MAPS)),
    "feature_dim": _parse_feature_dim,
    "qk_norm": _choice(QK_NORMS),
    "normaliser": _choice(NORMALISERS),
}


def _per_place_values(args, prefix: str, fallback: Mapping[str, object]) -> Dict[str, object]:
    """Parsed ``{prefix}X`` values for X in PER_PLACE; unset ones come from ``fallback``."""
    values = {}
    for name in PER_PLACE:
        raw = getattr(args, prefix + name, None)
        values[name] = fallback[name] if raw is None else PER_PLACE_PARSERS[name](raw, _flag(prefix + name))
    # An inherited width applies to a learned map, or to the same map as where it comes from.
    inherits_width = values["feature_map"] in LEARNED_FEATURE_MAPS or values["feature_map"] == fallback.get("feature_map")
    if getattr(args, prefix + "feature_dim", None) is None and not inherits_width:
        values["feature_dim"] = 0
    feature_dim_flag = _flag(prefix + "feature_dim")
    if values["feature_dim"] and not accepts_feature_dim(values["feature_map"]):
        raise AdaMRAOptionError(
            f"{feature_dim_flag} {values['feature_dim']} applies only to the learned feature maps "
            f"({', '.join(LEARNED_FEATURE_MAPS)}) and to {', '.join(NARROWABLE_FEATURE_MAPS)}, "
            f"not to {values['feature_map']}: set it to 0 or pick one of them"
        )
    return values


def _check_heads(rates, heads: int, flag: str, rates_flag: str = "--adamra-rates") -> None:
    if heads % len(rates):
        raise AdaMRAOptionError(
            f"{rates_flag} has {len(rates)} rates, which does not divide {flag}={heads}: "
            f"use a number of rates that divides {heads}"
        )


def parse_adamra_options(args) -> AdaMRAOptions:
    """Validates the ``adamra_*`` attributes of ``args`` (namespace or TransformerConfig).

    Raises :class:`AdaMRAOptionError` with a one-line message naming the flag.
    """
    fill_adamra_defaults(args)
    own = _per_place_values(args, "adamra_", {})
    cross = _per_place_values(args, "adamra_cross_", own)
    routing = _choice(ROUTINGS)(args.adamra_routing, "--adamra-routing")
    decay = _choice(DECAYS)(args.adamra_decay, "--adamra-decay")
    recompute = _choice(RECOMPUTES)(args.adamra_recompute, "--adamra-recompute")
    balance = float(args.adamra_balance_loss)
    if not math.isfinite(balance) or balance < 0:
        raise AdaMRAOptionError(f"--adamra-balance-loss {balance} is invalid: use a finite weight >= 0")
    if balance > 0 and routing != "top1":
        raise AdaMRAOptionError("--adamra-balance-loss only applies to --adamra-routing top1: set it to 0 or use top1")
    places = tuple(part.strip() for part in str(args.adamra_attention).split(",") if part.strip())
    unknown = [place for place in places if place not in ATTENTION_PLACES]
    if unknown or not places:
        raise AdaMRAOptionError(
            f"--adamra-attention {args.adamra_attention!r} is invalid: use a comma subset of "
            f"{','.join(ATTENTION_PLACES)}"
        )
    rates = own["rates"]
    chunk = args.adamra_chunk_size
    lcm = math.lcm(*rates)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1 or chunk % lcm:
        raise AdaMRAOptionError(
            f"--adamra-chunk-size {chunk} is invalid: use a positive multiple of every rate "
            f"(a multiple of {lcm} for --adamra-rates {','.join(map(str, rates))})"
        )
    eps = float(args.adamra_eps)
    if not math.isfinite(eps) or eps <= 0:
        raise AdaMRAOptionError(f"--adamra-eps {eps} is invalid: use a small positive number such as 1e-6")
    init_scale = float(args.adamra_feature_init_scale)
    if not math.isfinite(init_scale) or init_scale <= 0:
        raise AdaMRAOptionError(
            f"--adamra-feature-init-scale {init_scale} is invalid: use a positive number (1 keeps the usual start)"
        )
    if "encoder" in places:
        _check_heads(rates, _heads(args, "encoder"), "--encoder-attention-heads")
    if "decoder" in places:
        _check_heads(rates, _heads(args, "decoder"), "--decoder-attention-heads")
    if "cross" in places:  # cross-attention uses the decoder's heads
        rates_flag = "--adamra-cross-rates" if getattr(args, "adamra_cross_rates", None) else "--adamra-rates"
        _check_heads(cross["rates"], _heads(args, "decoder"), "--decoder-attention-heads", rates_flag)
    cross_overrides = {name: value for name, value in cross.items() if value != own[name]}
    preset_defaults = defaults_of(args.adamra_preset)
    for name, what in (("memory", "memory rows"), ("blocks", "blocks")):
        flag, size = _flag("adamra_cross_" + name), getattr(args, "adamra_cross_" + name)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise AdaMRAOptionError(f"{flag} {size} is invalid: use 0 (kernel cross-attention) or a number of {what}")
        if "cross" not in places:  # fairseq's softmax cross-attention: the preset's value is simply unused
            if size and size != preset_defaults["adamra_cross_" + name]:
                raise AdaMRAOptionError(
                    f"{flag} {size} needs AdaMRA cross-attention: add cross to --adamra-attention or set it to 0"
                )
            continue
        if size:
            cross_overrides[name] = size
    if "memory" in cross_overrides and "blocks" in cross_overrides:
        raise AdaMRAOptionError("--adamra-cross-memory and --adamra-cross-blocks exclude each other: set one to 0")
    softmax_read = next((name for name in ("memory", "blocks") if name in cross_overrides), None)
    if softmax_read and getattr(args, "adamra_cross_feature_dim", None):
        raise AdaMRAOptionError(
            f"--adamra-cross-feature-dim {args.adamra_cross_feature_dim} has no effect with "
            f"{_flag('adamra_cross_' + softmax_read)} {cross_overrides[softmax_read]} (a softmax read has no feature "
            f"map): drop it, or set {_flag('adamra_cross_' + softmax_read)} 0 for kernel cross-attention"
        )
    return AdaMRAOptions(rates=rates, routing=routing, balance_loss=balance, feature_map=own["feature_map"],
                         places=places, chunk_size=chunk, eps=eps, feature_dim=own["feature_dim"],
                         qk_norm=own["qk_norm"], normaliser=own["normaliser"], decay=decay,
                         feature_init_scale=init_scale, recompute=recompute, cross=cross_overrides)


def check_balance_criterion(args) -> None:
    """The balance loss only reaches training through our criterion; say so instead of ignoring it."""
    weight = float(getattr(args, "adamra_balance_loss", 0.0) or 0.0)
    criterion = getattr(args, "criterion", None)
    if weight > 0 and criterion is not None and criterion != BALANCE_CRITERION:
        raise AdaMRAOptionError(
            f"--adamra-balance-loss {weight} needs --criterion {BALANCE_CRITERION} (got --criterion {criterion})"
        )


def _heads(args, side: str) -> int:
    """Attention heads of the encoder or decoder, from a flat namespace or a TransformerConfig."""
    sub = getattr(args, side, None)
    if sub is not None and not isinstance(sub, (str, int)) and hasattr(sub, "attention_heads"):
        return int(sub.attention_heads)
    return int(getattr(args, f"{side}_attention_heads"))

