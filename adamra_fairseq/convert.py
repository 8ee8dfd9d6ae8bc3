"""Initialise an AdaMRA model from a trained vanilla fairseq transformer checkpoint.

usage: python -m adamra_fairseq.convert VANILLA.pt OUT.pt [--data DATA_BIN] [--arch ARCH] [--adamra-* flags]

Every parameter of the vanilla model is copied: embeddings, layer norms,
feed-forward layers and the ``q_proj``/``k_proj``/``v_proj``/``out_proj`` of
each attention, whose names AdaMRA keeps. The parameters only AdaMRA has
(resolution gates, q/k temperatures, learned feature maps, head norms)
start as in a newly built model. The sizes come from the vanilla checkpoint.

OUT.pt is a complete fairseq checkpoint without optimiser state:
``fairseq-generate`` decodes with it as it is, and ``fairseq-train
--finetune-from-model OUT.pt`` with the same ``--arch`` and ``--adamra-*``
flags (printed at the end) fine-tunes it. OUT.pt is never overwritten.
"""

import argparse
import copy
import os
import sys
from typing import List, Sequence

import torch
from fairseq import checkpoint_utils, tasks
from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY
from fairseq.models.transformer import TransformerModel
from omegaconf import OmegaConf

from .models.adamra_transformer import AdaMRATransformerModel
from .modules.multires_attention import MultiResolutionAttention
from .modules.options import add_adamra_args

# Vanilla architecture -> AdaMRA architecture of the same sizes.
TWINS = {
    "transformer": "adamra_transformer",
    "transformer_iwslt_de_en": "adamra_transformer_iwslt_de_en",
    "transformer_wmt_en_de": "adamra_transformer_wmt_en_de",
    "transformer_adamra_tiny_baseline": "adamra_transformer_tiny",
    "transformer_adamra_small_baseline": "adamra_transformer_small",
}
SHARED_PROJECTIONS = ("q_proj.", "k_proj.", "v_proj.", "out_proj.")


class ConversionError(Exception):
    """The checkpoint cannot be converted; the message says why and what to do."""


def adamra_only_parameters(model: torch.nn.Module) -> List[str]:
    """Names of the parameters a vanilla transformer does not have (everything in AdaMRA attention but q/k/v/out)."""
    names = []
    for prefix, module in model.named_modules():
        if isinstance(module, MultiResolutionAttention):
            names += [f"{prefix}.{name}" for name, _ in module.named_parameters()
                      if not name.startswith(SHARED_PROJECTIONS)]
    return names


def adamra_model_args(vanilla_args: argparse.Namespace, arch: str, adamra_flags: Sequence[str]) -> argparse.Namespace:
    """The vanilla model's arguments with ``arch`` and the ``--adamra-*`` flags; validated by the architecture."""
    parser = argparse.ArgumentParser(prog="python -m adamra_fairseq.convert", add_help=False)
    add_adamra_args(parser)
    flags = parser.parse_args(list(adamra_flags))
    args = copy.deepcopy(vanilla_args)
    args.arch = args._name = arch
    for name, value in vars(flags).items():
        if value is not None:
            setattr(args, name, value)
    ARCH_CONFIG_REGISTRY[arch](args)  # fills AdaMRA defaults; exits with one line on a bad value
    return args


def convert(vanilla_path: str, out_path: str, data: str = None, arch: str = None,
            adamra_flags: Sequence[str] = ()) -> str:
    """Writes the converted checkpoint to ``out_path``; returns the fine-tuning flags (``--arch ...``)."""
    if os.path.exists(out_path):
        raise ConversionError(f"{out_path} exists: choose another output path (it is never overwritten)")
    if not os.path.isfile(vanilla_path):
        raise ConversionError(f"{vanilla_path} is not a file: pass a checkpoint written by fairseq-train")
    state = checkpoint_utils.load_checkpoint_to_cpu(vanilla_path)
    cfg = state.get("cfg")
    vanilla_args = cfg.model if cfg is not None else None
    if not isinstance(vanilla_args, argparse.Namespace) or getattr(vanilla_args, "arch", None) is None:
        raise ConversionError(f"{vanilla_path} holds no fairseq model arguments: pass a checkpoint of a "
                              "(legacy --arch) fairseq transformer")
    source_class = ARCH_MODEL_REGISTRY.get(vanilla_args.arch)
    if source_class is None or not issubclass(source_class, TransformerModel):
        raise ConversionError(f"{vanilla_path} is a {vanilla_args.arch} model, not a fairseq transformer")
    if issubclass(source_class, AdaMRATransformerModel):
        raise ConversionError(f"{vanilla_path} is already an AdaMRA model ({vanilla_args.arch})")
    arch = arch or TWINS.get(vanilla_args.arch, "adamra_transformer")
    if ARCH_MODEL_REGISTRY.get(arch) is not AdaMRATransformerModel:
        raise ConversionError(f"--arch {arch} is not an AdaMRA architecture: use one of "
                              f"{', '.join(sorted(set(TWINS.values())))}")
    args = adamra_model_args(vanilla_args, arch, adamra_flags)

    if data is not None:
        cfg.task.data = data
    if not os.path.isdir(str(cfg.task.data).split(os.pathsep)[0]):
        raise ConversionError(f"the data-bin {cfg.task.data} recorded in the checkpoint does not exist: "
                              "pass --data DATA_BIN (the folder it was trained on)")
    task = tasks.setup_task(cfg.task)
    model = task.build_model(args)
    weights = state["model"]
    model.upgrade_state_dict(weights)
    try:
        missing, unexpected = torch.nn.Module.load_state_dict(model, weights, strict=False)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1].strip()
        raise ConversionError(f"the vanilla weights do not fit the AdaMRA model ({first}): are the sizes the same?")
    fresh = set(adamra_only_parameters(model))
    unexplained = sorted(set(missing) - fresh)
    if unexpected or unexplained:
        raise ConversionError(f"the models do not match: vanilla parameters not in AdaMRA {unexpected[:3]}, "
                              f"AdaMRA parameters not in the vanilla model {unexplained[:3]}")

    cfg.model = args
    state["cfg"] = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # as fairseq's trainer saves it
    state["model"] = model.state_dict()
    state["last_optimizer_state"] = None
    state["optimizer_history"] = [dict(state["optimizer_history"][-1], num_updates=0)]
    state["extra_state"] = {"train_iterator": {"version": 2, "epoch": 1, "iterations_in_epoch": 0, "shuffle": True},
                            "previous_training_time": 0, "val_loss": None}
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    partial = out_path + ".partial"
    torch.save(state, partial)
    os.replace(partial, out_path)
    return " ".join(["--arch", arch, *adamra_flags])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adamra_fairseq.convert", description=__doc__.split("\n")[0],
        epilog="Any --adamra-* flag of the model is accepted (e.g. --adamra-feature-map hedgehog).")
    parser.add_argument("vanilla", help="checkpoint of a vanilla fairseq transformer (fairseq-train output)")
    parser.add_argument("out", help="where to write the AdaMRA checkpoint (must not exist)")
    parser.add_argument("--data", help="the data-bin the model was trained on (default: the path in the checkpoint)")
    parser.add_argument("--arch", help="AdaMRA architecture (default: the vanilla architecture's twin, e.g. "
                                       "transformer_iwslt_de_en -> adamra_transformer_iwslt_de_en)")
    args, adamra_flags = parser.parse_known_args(argv)
    stray = [flag for flag in adamra_flags if flag.startswith("-") and not flag.startswith("--adamra-")]
    if stray:
        parser.error(f"unrecognised arguments: {' '.join(stray)}")
    try:
        flags = convert(args.vanilla, args.out, args.data, args.arch, adamra_flags)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}; fine-tune it with: fairseq-train DATA_BIN --user-dir adamra_fairseq "
          f"--finetune-from-model {args.out} {flags} [training flags]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
