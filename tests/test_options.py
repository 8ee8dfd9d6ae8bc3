"""Every bad --adamra-* value fails before training with one line naming the flag."""

import argparse
import dataclasses

import pytest

from adamra_fairseq.modules.options import AdaMRAOptionError, add_adamra_args, parse_adamra_options
from conftest import USER_DIR, run


def namespace(**overrides):
    values = dict(encoder_attention_heads=8, decoder_attention_heads=8)
    values.update(overrides)
    return argparse.Namespace(**values)


# (flag values, text the one-line message must contain)
BAD_INPUTS = [
    (dict(adamra_rates=""), "--adamra-rates '' is empty"),
    (dict(adamra_rates="1,,2"), "--adamra-rates '1,,2' is empty or has an empty entry"),
    (dict(adamra_rates="1,0"), "--adamra-rates: rate 0 is below 1"),
    (dict(adamra_rates="1,-2"), "--adamra-rates: rate -2 is below 1"),
    (dict(adamra_rates="1,2.5"), "--adamra-rates: '2.5' is not an integer"),
    (dict(adamra_rates="1,x"), "--adamra-rates: 'x' is not an integer"),
    (dict(adamra_rates="1,2,4"), "--adamra-rates has 3 rates, which does not divide --encoder-attention-heads=8"),
    (dict(adamra_rates="1,2", adamra_attention="decoder", decoder_attention_heads=3),
     "does not divide --decoder-attention-heads=3"),
    (dict(adamra_routing="top2"), "--adamra-routing 'top2' is unknown: choose one of soft, top1"),
    (dict(adamra_feature_map="softmax"),
     "--adamra-feature-map 'softmax' is unknown: choose one of elu, relu, dpfp1, dpfp2, taylor2, hedgehog, t2r"),
    (dict(adamra_cross_feature_map="exp"), "--adamra-cross-feature-map 'exp' is unknown"),
    (dict(adamra_qk_norm="layer"), "--adamra-qk-norm 'layer' is unknown: choose one of none, scale, l2"),
    (dict(adamra_cross_qk_norm="L2"), "--adamra-cross-qk-norm 'L2' is unknown"),
    (dict(adamra_normaliser="rms"), "--adamra-normaliser 'rms' is unknown: choose one of denominator, norm, both"),
    (dict(adamra_feature_dim=-1, adamra_feature_map="t2r"), "--adamra-feature-dim -1 is invalid"),
    (dict(adamra_feature_dim=32), "--adamra-feature-dim 32 applies only to the learned feature maps (hedgehog, t2r) "
                                  "and to taylor2, not to elu"),
    (dict(adamra_cross_feature_dim=8, adamra_cross_feature_map="dpfp1"), "--adamra-cross-feature-dim 8 applies only"),
    (dict(adamra_cross_rates="1,2,4"), "--adamra-cross-rates has 3 rates, which does not divide --decoder-attention-heads=8"),
    (dict(adamra_cross_rates="1,0"), "--adamra-cross-rates: rate 0 is below 1"),
    (dict(adamra_cross_memory=-1), "--adamra-cross-memory -1 is invalid"),
    (dict(adamra_cross_blocks="8"), "--adamra-cross-blocks 8 is invalid"),
    (dict(adamra_cross_feature_dim=8), "--adamra-cross-feature-dim 8 has no effect with --adamra-cross-blocks 64"),
    (dict(adamra_cross_memory=8, adamra_attention="encoder,decoder"), "--adamra-cross-memory 8 needs AdaMRA cross"),
    (dict(adamra_attention="encoder,ffn"), "--adamra-attention 'encoder,ffn' is invalid"),
    (dict(adamra_attention=""), "--adamra-attention '' is invalid"),
    (dict(adamra_chunk_size=0), "--adamra-chunk-size 0 is invalid"),
    (dict(adamra_rates="2,3", adamra_chunk_size=64), "a multiple of 6 for --adamra-rates 2,3"),
    (dict(adamra_balance_loss=-1.0, adamra_routing="top1"), "--adamra-balance-loss -1.0 is invalid"),
    (dict(adamra_balance_loss=0.1), "--adamra-balance-loss only applies to --adamra-routing top1"),
    (dict(adamra_eps=0.0), "--adamra-eps 0.0 is invalid"),
    (dict(adamra_feature_init_scale=0.0), "--adamra-feature-init-scale 0.0 is invalid: use a positive number"),
    (dict(adamra_feature_init_scale=-2.0), "--adamra-feature-init-scale -2.0 is invalid"),
    (dict(adamra_feature_init_scale=float("nan")), "--adamra-feature-init-scale nan is invalid"),
    (dict(adamra_recompute="all"), "--adamra-recompute 'all' is unknown: choose one of none, causal"),
]


@pytest.mark.parametrize("values,message", BAD_INPUTS)
def test_bad_values_are_rejected_with_the_flag_named(values, message):
    with pytest.raises(AdaMRAOptionError) as error:
        parse_adamra_options(namespace(**values))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_defaults_are_valid():
    options = parse_adamra_options(namespace())
    assert options.recompute == "none"
    assert parse_adamra_options(namespace(adamra_recompute="causal")).recompute == "causal"
    assert options.rates == (1, 2, 4, 8)
    assert options.head_rates(8) == (1, 1, 2, 2, 4, 4, 8, 8)
    assert options.places == ("encoder", "decoder", "cross")
    assert options.feature_init_scale == 1.0
    assert parse_adamra_options(namespace(adamra_feature_init_scale=2.5)).feature_init_scale == 2.5


def test_cross_flags_override_only_cross_attention():
    options = parse_adamra_options(namespace(adamra_feature_map="hedgehog", adamra_feature_dim=32,
                                             adamra_cross_rates="1", adamra_cross_qk_norm="l2"))
    assert (options.rates, options.feature_map, options.feature_dim, options.qk_norm) == ((1, 2, 4, 8), "hedgehog", 32, "none")
    cross = options.for_cross_attention()
    assert (cross.rates, cross.feature_map, cross.feature_dim, cross.qk_norm) == ((1,), "hedgehog", 32, "l2")
    # a non-learned cross map does not inherit the learned map's width
    cross = parse_adamra_options(namespace(adamra_feature_map="hedgehog", adamra_feature_dim=32,
                                           adamra_cross_feature_map="elu")).for_cross_attention()
    assert (cross.feature_map, cross.feature_dim) == ("elu", 0)
    # nor does taylor2, which takes a width (a projection) only when asked for one
    cross = parse_adamra_options(namespace(adamra_feature_map="hedgehog", adamra_feature_dim=32,
                                           adamra_cross_feature_map="taylor2")).for_cross_attention()
    assert (cross.feature_map, cross.feature_dim) == ("taylor2", 0)
    cross = parse_adamra_options(namespace(adamra_feature_map="hedgehog", adamra_cross_feature_map="taylor2",
                                           adamra_cross_feature_dim=8)).for_cross_attention()
    assert (cross.feature_map, cross.feature_dim) == ("taylor2", 8)
    # the same map in both places shares its width
    cross = parse_adamra_options(namespace(adamra_feature_map="taylor2", adamra_feature_dim=8)).for_cross_attention()
    assert (cross.feature_map, cross.feature_dim) == ("taylor2", 8)
    # cross rates need only divide the decoder's heads
    parse_adamra_options(namespace(adamra_rates="1,2", adamra_cross_rates="1,2,4,8", encoder_attention_heads=2,
                                   adamra_attention="encoder,cross"))


def test_default_preset_fills_the_options_and_explicit_flags_override_it():
    from adamra_fairseq.modules.options import DEFAULT_PRESET, PRESETS
    tuned = PRESETS[DEFAULT_PRESET]
    options = parse_adamra_options(namespace())
    cross = options.for_cross_attention()
    assert (options.feature_map, options.qk_norm, options.normaliser, options.decay) == (
        tuned["adamra_feature_map"], tuned["adamra_qk_norm"], tuned["adamra_normaliser"], tuned["adamra_decay"])
    assert cross.rates == tuple(int(rate) for rate in tuned["adamra_cross_rates"].split(","))
    assert (cross.feature_map, cross.qk_norm) == (tuned["adamra_cross_feature_map"], tuned["adamra_cross_qk_norm"])
    options = parse_adamra_options(namespace(adamra_feature_map="relu", adamra_cross_rates="1,2"))
    assert (options.feature_map, options.for_cross_attention().rates) == ("relu", (1, 2))


def test_original_preset_is_the_first_definition():
    options = parse_adamra_options(namespace(adamra_preset="original"))
    cross = options.for_cross_attention()
    assert (options.feature_map, options.feature_dim, options.qk_norm, options.normaliser, options.decay) == (
        "elu", 0, "none", "denominator", "none")
    assert cross.rates == options.rates == (1, 2, 4, 8)
    assert cross.feature_map == "elu"


def test_tuned_decay_preset_is_tuned_with_the_learned_decay():
    tuned = parse_adamra_options(namespace(adamra_preset="tuned"))
    decay = parse_adamra_options(namespace(adamra_preset="tuned-decay"))
    assert (tuned.decay, decay.decay) == ("none", "learned")
    assert dataclasses.replace(tuned, decay="learned") == decay


def test_tuned_taylor_preset_changes_only_cross_attention():
    decay = parse_adamra_options(namespace(adamra_preset="tuned-decay"))
    taylor = parse_adamra_options(namespace(adamra_preset="tuned-taylor"))
    assert dataclasses.replace(taylor, cross=decay.cross) == decay
    cross = taylor.for_cross_attention()
    assert (cross.rates, cross.feature_map, cross.qk_norm, cross.decay) == ((1,), "taylor2", "scale", "learned")
    # an explicit flag still overrides the preset
    plain = parse_adamra_options(namespace(adamra_preset="tuned-taylor", adamra_cross_feature_map="hedgehog"))
    assert plain.for_cross_attention().feature_map == "hedgehog"


def test_recommended_preset_is_tuned_taylor_with_source_blocks_in_cross_attention():
    taylor = parse_adamra_options(namespace(adamra_preset="tuned-taylor"))
    recommended = parse_adamra_options(namespace(adamra_preset="recommended"))
    assert dataclasses.replace(recommended, cross=taylor.cross) == taylor
    assert recommended.for_cross_attention() == dataclasses.replace(taylor.for_cross_attention(), blocks=64)
    # checkpoints of the older presets, which have no adamra_cross_blocks, keep kernel cross-attention
    assert taylor.for_cross_attention().blocks == 0
    assert parse_adamra_options(namespace(adamra_preset="recommended", adamra_cross_blocks=0)) == taylor


def test_earlier_preset_name_is_the_recommended_preset_and_is_stored_by_its_new_name():
    """tuned-blocks was the default's name until 2026-12-07: its checkpoints store it and must build the same
    model; what is saved from now on is the preset's present name."""
    args = namespace(adamra_preset="tuned-blocks")
    assert parse_adamra_options(args) == parse_adamra_options(namespace(adamra_preset="recommended"))
    assert args.adamra_preset == "recommended"
    assert parse_adamra_options(namespace()) == parse_adamra_options(namespace(adamra_preset="recommended"))


def test_options_saved_before_presets_existed_keep_the_original_defaults():
    """A checkpoint written before --adamra-preset has adamra_* values but no preset: it must rebuild the
    model it was trained as (elu, the same rates for cross-attention), not the tuned one."""
    saved = namespace(adamra_rates="1,2,4,8", adamra_routing="soft", adamra_balance_loss=0.0,
                      adamra_feature_map="elu", adamra_attention="encoder,decoder,cross", adamra_chunk_size=64,
                      adamra_eps=1e-6)
    options = parse_adamra_options(saved)
    assert saved.adamra_preset == "original"
    assert options.for_cross_attention().rates == (1, 2, 4, 8)
    assert (options.qk_norm, options.normaliser, options.decay) == ("none", "denominator", "none")


def test_unknown_preset_is_rejected():
    with pytest.raises(AdaMRAOptionError, match=r"--adamra-preset 'best' is unknown: choose recommended \(the default\) "
                                                r"or original \(earlier names: tuned, tuned-decay, tuned-taylor, "
                                                r"tuned-blocks\)"):
        parse_adamra_options(namespace(adamra_preset="best"))


@pytest.mark.parametrize("flags,message", [
    (["--adamra-rates", "1,0"], "error: --adamra-rates: rate 0 is below 1"),
    (["--adamra-routing", "best"], "error: --adamra-routing 'best' is unknown"),
    (["--adamra-chunk-size", "6"], "error: --adamra-chunk-size 6 is invalid"),
])
def test_fairseq_train_stops_before_training(tmp_path, flags, message):
    """The stock CLI fails at argument parsing, in one line, without touching any data."""
    result = run(["fairseq-train", str(tmp_path / "no-data"), "--user-dir", USER_DIR, "--cpu",
                  "--arch", "adamra_transformer_tiny", "--task", "translation", "--save-dir", str(tmp_path / "ck"),
                  *flags], check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(message)
    assert not (tmp_path / "ck").exists()


def test_balance_loss_needs_our_criterion(tmp_path):
    result = run(["fairseq-train", str(tmp_path), "--user-dir", "adamra_fairseq", "--cpu",
                  "--arch", "adamra_transformer_tiny", "--task", "translation",
                  "--adamra-routing", "top1", "--adamra-balance-loss", "0.1",
                  "--criterion", "label_smoothed_cross_entropy"], check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --adamra-balance-loss 0.1 needs --criterion adamra_label_smoothed_cross_entropy "
        "(got --criterion label_smoothed_cross_entropy)")


def test_installed_package_registers_the_model_from_any_directory(tmp_path):
    """`pip install -e .` (done by `make venv`) makes the plugin importable outside the repository."""
    import os
    import sys

    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", "import adamra_fairseq; from fairseq.models import ARCH_MODEL_REGISTRY as r; "
                               "print(r['adamra_transformer_tiny'].__name__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("AdaMRATransformerModel")


def test_cross_memory_applies_to_cross_attention_only():
    options = parse_adamra_options(namespace(adamra_cross_memory=16))
    assert options.memory == 0 and options.for_cross_attention().memory == 16
    assert parse_adamra_options(namespace()).for_cross_attention().memory == 0


def test_cross_memory_and_blocks_exclude_each_other():
    assert parse_adamra_options(namespace(adamra_cross_blocks=64)).for_cross_attention().blocks == 64
    with pytest.raises(AdaMRAOptionError, match="exclude each other"):
        parse_adamra_options(namespace(adamra_cross_blocks=64, adamra_cross_memory=8))


def test_softmax_cross_attention_works_with_the_default_preset():
    """The default preset's --adamra-cross-blocks 64 is unused, not an error, without AdaMRA cross-attention;
    a size asked for explicitly that cannot apply still is one."""
    options = parse_adamra_options(namespace(adamra_attention="encoder,decoder"))
    assert options.places == ("encoder", "decoder") and "blocks" not in options.cross
    with pytest.raises(AdaMRAOptionError, match="--adamra-cross-blocks 32 needs AdaMRA cross-attention"):
        parse_adamra_options(namespace(adamra_attention="encoder,decoder", adamra_cross_blocks=32))


def test_the_flags_help_presents_the_preset_choice_and_every_flag(capsys):
    """python -m adamra_fairseq prints what fairseq-train --help cannot (it stops before a model adds its flags):
    every --adamra-* flag, and the two presets a user chooses between, by what they are for."""
    import re

    from adamra_fairseq.__main__ import main

    assert main([]) == 0
    text = " ".join(capsys.readouterr().out.split())
    parser = argparse.ArgumentParser()
    add_adamra_args(parser)
    flags = {option for action in parser._actions for option in action.option_strings if option.startswith("--")}
    assert flags and all(flag in text for flag in flags)
    assert re.search(r"recommended \(the default\) = what translated best", text)
    assert re.search(r"original = the method as first defined", text)
    assert "(default taylor2; as --adamra-feature-map with preset original)" in text
    with pytest.raises(SystemExit) as bad:
        main(["--adamra-preset", "best"])
    assert bad.value.code == 2 and "invalid choice: 'best'" in capsys.readouterr().err
