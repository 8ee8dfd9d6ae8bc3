"""python -m adamra_fairseq.convert: a vanilla transformer checkpoint becomes an AdaMRA one."""

import sys

import pytest
import torch
from fairseq import checkpoint_utils

from adamra_fairseq.convert import adamra_only_parameters
from adamra_fairseq.modules import MultiResolutionAttention
from conftest import run

CONVERT = [sys.executable, "-m", "adamra_fairseq.convert"]


def load_model(checkpoint, data_bin):
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides={"data": data_bin})
    return models[0]


def test_conversion_copies_every_vanilla_weight_and_starts_the_rest_fresh(tiny_vanilla_checkpoint, tiny_data_bin,
                                                                          tmp_path):
    out = tmp_path / "adamra.pt"
    result = run([*CONVERT, tiny_vanilla_checkpoint, str(out), "--data", tiny_data_bin,
                  "--adamra-rates", "1,2", "--adamra-feature-map", "hedgehog", "--adamra-qk-norm", "l2",
                  "--adamra-normaliser", "both", "--adamra-cross-rates", "1",
                  "--adamra-preset", "tuned-decay"])  # the same maps in cross-attention: every learned part
    assert ("--finetune-from-model " + str(out) + " --arch adamra_transformer_tiny --adamra-rates 1,2") in result.stdout
    vanilla = checkpoint_utils.load_checkpoint_to_cpu(tiny_vanilla_checkpoint)["model"]
    model = load_model(str(out), tiny_data_bin)
    converted = model.state_dict()
    for name, tensor in vanilla.items():
        assert torch.equal(converted[name], tensor), name
    fresh = set(converted) - set(vanilla)
    assert fresh == set(adamra_only_parameters(model)) and fresh
    attentions = [m for m in model.modules() if isinstance(m, MultiResolutionAttention)]
    assert len(attentions) == 3  # encoder self, decoder self and cross, one layer each
    for attention in attentions:
        head_dim = attention.head_dim
        assert torch.equal(attention.query_key.weight, torch.eye(head_dim).expand(attention.num_heads, -1, -1))
        assert torch.allclose(attention.query_key.temperature(), torch.full((attention.num_heads,), head_dim ** 0.5))
        assert torch.equal(attention.head_norm.gain, torch.ones_like(attention.head_norm.gain))
    assert model.decoder.layers[0].encoder_attn.rates == (1,)
    assert model.decoder.layers[0].self_attn.rates == (1, 2)


def test_conversion_refuses_bad_inputs_without_touching_files(tiny_vanilla_checkpoint, tiny_adamra_checkpoint,
                                                              tiny_data_bin, tmp_path):
    existing = tmp_path / "exists.pt"
    existing.write_bytes(b"user data")
    cases = [
        ([tiny_vanilla_checkpoint, str(existing)], "exists: choose another output path"),
        ([tiny_adamra_checkpoint, str(tmp_path / "a.pt")], "is already an AdaMRA model (adamra_transformer_tiny)"),
        ([str(tmp_path / "missing.pt"), str(tmp_path / "b.pt")], "is not a file"),
        ([tiny_vanilla_checkpoint, str(tmp_path / "c.pt"), "--adamra-rates", "1,2,4"],
         "--adamra-rates has 3 rates, which does not divide --encoder-attention-heads=4"),
        ([tiny_vanilla_checkpoint, str(tmp_path / "d.pt"), "--data", str(tmp_path / "nowhere")],
         "does not exist: pass --data DATA_BIN"),
        ([tiny_vanilla_checkpoint, str(tmp_path / "e.pt"), "--arch", "transformer"], "is not an AdaMRA architecture"),
        ([tiny_vanilla_checkpoint, str(tmp_path / "f.pt"), "--lr", "1"], "unrecognised arguments: --lr"),
    ]
    for args, message in cases:
        result = run([*CONVERT, *args, *(["--data", tiny_data_bin] if "--data" not in args else [])], check=False)
        assert result.returncode != 0, args
        assert message in result.stderr.strip().splitlines()[-1], (args, result.stderr[-500:])
    assert existing.read_bytes() == b"user data"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["exists.pt"]
