"""The ``--adamra-*`` command-line options: definitions, defaults and validation."""

import math
from dataclasses import dataclass
from typing import Tuple

from ..ops.feature_maps import FEATURE_MAPS

ROUTINGS = ("soft", "top1")
BALANCE_CRITERION = "adamra_label_smoothed_cross_entropy"
ATTENTION_PLACES = ("encoder", "decoder", "cross")
DEFAULTS = {
    "adamra_rates": "1,2,4,8",
    "adamra_routing": "soft",
    "adamra_balance_loss": 0.0,
    "adamra_feature_map": "elu",
    "adamra_attention": "encoder,decoder,cross",
    "adamra_chunk_size": 64,
    "adamra_eps": 1e-6,
}


class AdaMRAOptionError(ValueError):
    """A bad ``--adamra-*`` value; the message names the flag and what it accepts."""


def add_adamra_args(parser) -> None:
    """Adds the ``--adamra-*`` flags to an argparse parser (defaults come from the architecture)."""
    group = parser.add_argument_group("AdaMRA attention")
    group.add_argument("--adamra-rates", type=str, metavar="R1,R2,...",
                       help="compression rates, one per group of heads, in head order; their number must "
                            f"divide the number of heads (default {DEFAULTS['adamra_rates']})")
    group.add_argument("--adamra-routing", type=str, metavar="|".join(ROUTINGS),
                       help="per-position resolution gate: soft scales every rate's heads by R*g, top1 keeps "
                            f"only the arg-max rate's heads (default {DEFAULTS['adamra_routing']})")
    group.add_argument("--adamra-balance-loss", type=float, metavar="W",
                       help="weight of the load-balancing loss for --adamra-routing top1 (needs "
                            "--criterion adamra_label_smoothed_cross_entropy; default 0)")
    group.add_argument("--adamra-feature-map", type=str, metavar="|".join(FEATURE_MAPS),
                       help="kernel feature map phi: elu = elu(x)+1, relu, dpfp1/dpfp2 = DPFP with nu 1/2 "
                            f"(2*nu*head_dim features) (default {DEFAULTS['adamra_feature_map']})")
    group.add_argument("--adamra-attention", type=str, metavar="PLACES",
                       help="comma subset of encoder,decoder,cross: where AdaMRA replaces softmax "
                            f"attention (default {DEFAULTS['adamra_attention']})")
    group.add_argument("--adamra-chunk-size", type=int, metavar="C",
                       help="chunk length of the causal (decoder) training op; a multiple of every rate "
                            f"(default {DEFAULTS['adamra_chunk_size']})")
    group.add_argument("--adamra-eps", type=float, metavar="EPS",
                       help=f"added to the kernel normaliser (default {DEFAULTS['adamra_eps']})")


def fill_adamra_defaults(args) -> None:
    """Sets every unset ``adamra_*`` attribute to its default (architecture functions call this)."""
    for name, value in DEFAULTS.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)


@dataclass(frozen=True)
class AdaMRAOptions:
    rates: Tuple[int, ...]
    routing: str
    balance_loss: float
    feature_map: str
    places: Tuple[str, ...]
    chunk_size: int
    eps: float

    def head_rates(self, num_heads: int) -> Tuple[int, ...]:
        """Rate of each head: rate i owns heads ``i*H/R .. (i+1)*H/R - 1``."""
        per_rate = num_heads // len(self.rates)
        return tuple(rate for rate in self.rates for _ in range(per_rate))


def _parse_rates(text) -> Tuple[int, ...]:
    accepted = "a comma list of integers >= 1, e.g. --adamra-rates 1,2,4,8"
    parts = [part.strip() for part in str(text).split(",")]
    if not text or any(not part for part in parts):
        raise AdaMRAOptionError(f"--adamra-rates {text!r} is empty or has an empty entry: expected {accepted}")
    rates = []
    for part in parts:
        try:
            rate = int(part)
        except ValueError:
            raise AdaMRAOptionError(f"--adamra-rates: {part!r} is not an integer: expected {accepted}") from None
        if rate < 1:
            raise AdaMRAOptionError(f"--adamra-rates: rate {rate} is below 1: expected {accepted}")
        rates.append(rate)
    return tuple(rates)


def _check_heads(rates, heads: int, flag: str) -> None:
    if heads % len(rates):
        raise AdaMRAOptionError(
            f"--adamra-rates has {len(rates)} rates, which does not divide {flag}={heads}: "
            f"use a number of rates that divides {heads}"
        )


def parse_adamra_options(args) -> AdaMRAOptions:
    """Validates the ``adamra_*`` attributes of ``args`` (namespace or TransformerConfig).

    Raises :class:`AdaMRAOptionError` with a one-line message naming the flag.
    """
    fill_adamra_defaults(args)
    rates = _parse_rates(args.adamra_rates)
    routing = str(args.adamra_routing)
    if routing not in ROUTINGS:
        raise AdaMRAOptionError(f"--adamra-routing {routing!r} is unknown: choose one of {', '.join(ROUTINGS)}")
    balance = float(args.adamra_balance_loss)
    if not math.isfinite(balance) or balance < 0:
        raise AdaMRAOptionError(f"--adamra-balance-loss {balance} is invalid: use a finite weight >= 0")
    if balance > 0 and routing != "top1":
        raise AdaMRAOptionError("--adamra-balance-loss only applies to --adamra-routing top1: set it to 0 or use top1")
    feature_map = str(args.adamra_feature_map)
    if feature_map not in FEATURE_MAPS:
        raise AdaMRAOptionError(
            f"--adamra-feature-map {feature_map!r} is unknown: choose one of {', '.join(FEATURE_MAPS)}"
        )
    places = tuple(part.strip() for part in str(args.adamra_attention).split(",") if part.strip())
    unknown = [place for place in places if place not in ATTENTION_PLACES]
    if unknown or not places:
        raise AdaMRAOptionError(
            f"--adamra-attention {args.adamra_attention!r} is invalid: use a comma subset of "
            f"{','.join(ATTENTION_PLACES)}"
        )
    chunk = args.adamra_chunk_size
    lcm = math.lcm(*rates)
    if not isinstance(chunk, int) or chunk < 1 or chunk % lcm:
        raise AdaMRAOptionError(
            f"--adamra-chunk-size {chunk} is invalid: use a positive multiple of every rate "
            f"(a multiple of {lcm} for --adamra-rates {','.join(map(str, rates))})"
        )
    eps = float(args.adamra_eps)
    if not math.isfinite(eps) or eps <= 0:
        raise AdaMRAOptionError(f"--adamra-eps {eps} is invalid: use a small positive number such as 1e-6")
    if "encoder" in places:
        _check_heads(rates, _heads(args, "encoder"), "--encoder-attention-heads")
    if "decoder" in places or "cross" in places:  # cross-attention uses the decoder's heads
        _check_heads(rates, _heads(args, "decoder"), "--decoder-attention-heads")
    return AdaMRAOptions(rates, routing, balance, feature_map, places, chunk, eps)


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
