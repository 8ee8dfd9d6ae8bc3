"""Incremental decoding of a whole adamra_transformer against its parallel forward, and fairseq-generate
against a reference greedy search that recomputes every prefix in parallel."""

import math

import pytest
import torch
from fairseq import checkpoint_utils

from adamra_fairseq.modules import MultiResolutionAttention
from conftest import run


def load(checkpoint, data_bin, dtype=torch.float64, random_gates=True):
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides={"data": data_bin})
    model = models[0].to(dtype).eval()
    if random_gates:  # a few updates leave the gates near uniform: make routing matter
        generator = torch.Generator().manual_seed(0)
        for module in model.modules():
            if isinstance(module, MultiResolutionAttention) and module.gate.proj is not None:
                with torch.no_grad():
                    module.gate.proj.weight.copy_(torch.randn(module.gate.proj.weight.shape, generator=generator))
    return model, cfg, task


def test_every_attention_is_adamra(tiny_adamra_checkpoint, tiny_data_bin):
    model, _, _ = load(tiny_adamra_checkpoint, tiny_data_bin)
    for layer in model.encoder.layers:
        assert isinstance(layer.self_attn, MultiResolutionAttention)
    for layer in model.decoder.layers:
        assert isinstance(layer.self_attn, MultiResolutionAttention)
        assert isinstance(layer.encoder_attn, MultiResolutionAttention)


def test_incremental_decoder_equals_parallel_with_beam_reorder_and_shrink(tiny_adamra_checkpoint, tiny_data_bin):
    model, _, task = load(tiny_adamra_checkpoint, tiny_data_bin)
    task.load_dataset("test")
    dataset = task.dataset("test")
    # two sentences of different lengths (left-padded), each with a beam of two hypotheses
    first, second = 0, next(i for i in range(1, len(dataset)) if dataset.src_sizes[i] != dataset.src_sizes[0])
    batch = dataset.collater([dataset[i] for i in (first, first, second, second)])
    ids = batch["id"].tolist()
    assert ids[0] == ids[1] != ids[2] == ids[3]
    source, lengths = batch["net_input"]["src_tokens"], batch["net_input"]["src_lengths"]
    encoder_out = model.encoder(source, src_lengths=lengths)
    generator = torch.Generator().manual_seed(1)
    dictionary = task.target_dictionary
    targets = torch.randint(dictionary.nspecial, len(dictionary), (4, 12), generator=generator)
    prev_output_tokens = torch.cat([torch.full((4, 1), dictionary.eos()), targets], dim=1)
    parallel = model.get_normalized_probs(model.decoder(prev_output_tokens, encoder_out=encoder_out), log_probs=True)

    state = {}
    rows = torch.arange(4)
    current_encoder_out = encoder_out
    # a beam reorder within each sentence (what fairseq's beam search does), then a shrink across sentences
    reorders = {4: torch.tensor([1, 1, 3, 2]), 8: torch.tensor([3, 1])}
    for step in range(prev_output_tokens.size(1)):
        if step in reorders:
            order = reorders[step]
            model.decoder.reorder_incremental_state_scripting(state, order)
            current_encoder_out = model.encoder.reorder_encoder_out(current_encoder_out, order)
            rows = rows[order]
        out = model.decoder(prev_output_tokens[rows, : step + 1], encoder_out=current_encoder_out,
                            incremental_state=state)
        step_lprobs = model.get_normalized_probs(out, log_probs=True)[:, -1]
        assert torch.allclose(step_lprobs, parallel[rows, step], atol=1e-6), f"mismatch at step {step}"


def test_generate_time_encoder_equals_training_mode_forward(tiny_adamra_checkpoint, tiny_data_bin):
    """After a checkpoint load in eval mode, beam search must use our attention, not a softmax fast path."""
    model, cfg, task = load(tiny_adamra_checkpoint, tiny_data_bin, dtype=torch.float32, random_gates=False)
    task.load_dataset("test")
    dataset = task.dataset("test")
    batch = dataset.collater([dataset[i] for i in range(5)])
    captured = []
    original_forward = model.encoder.forward

    def recording_forward(*args, **kwargs):  # SequenceGenerator calls encoder.forward directly, not via hooks
        output = original_forward(*args, **kwargs)
        captured.append(output)
        return output

    model.encoder.forward = recording_forward
    generator = task.build_generator([model], cfg.generation)
    task.inference_step(generator, [model], batch)
    del model.encoder.forward
    assert len(captured) == 1
    generate_time = captured[0]["encoder_out"][0]
    model.train()  # dropout is 0 in this checkpoint, so training mode is deterministic
    training_time = model.encoder(batch["net_input"]["src_tokens"], src_lengths=batch["net_input"]["src_lengths"])
    assert torch.allclose(generate_time, training_time["encoder_out"][0], atol=1e-6)


def reference_greedy(model, source, dictionary, max_len):
    """Greedy search that reruns the full parallel decoder on the whole prefix at every step."""
    encoder_out = model.encoder(source[None], src_lengths=torch.tensor([source.numel()]))
    prefix = [dictionary.eos()]
    scores = []
    for step in range(max_len + 1):
        logits = model.decoder(torch.tensor([prefix]), encoder_out=encoder_out)
        lprobs = model.get_normalized_probs(logits, log_probs=True)[0, -1].clone()
        lprobs[dictionary.pad()] = -math.inf
        if step == 0:
            lprobs[dictionary.eos()] = -math.inf  # min_len = 1
        if step == max_len:
            token = dictionary.eos()
        else:
            token = int(lprobs.argmax())
        scores.append(float(lprobs[token]))
        if token == dictionary.eos():
            break
        prefix.append(token)
    return prefix[1:], sum(scores) / len(scores)


def test_fairseq_generate_equals_reference_greedy_search(tiny_adamra_checkpoint, tiny_data_bin):
    max_len_b = 12
    # the relative --user-dir form of the README, run from the repository root
    result = run(["fairseq-generate", tiny_data_bin, "--user-dir", "adamra_fairseq", "--path", tiny_adamra_checkpoint,
                  "--cpu", "--gen-subset", "test", "--beam", "1", "--max-len-a", "0", "--max-len-b", str(max_len_b),
                  "--batch-size", "8", "--required-batch-size-multiple", "1"])
    hypotheses = {}
    for line in result.stdout.splitlines():
        if line.startswith("H-"):
            key, score, text = line.split("\t")
            hypotheses[int(key[2:])] = (float(score), text)
    model, _, task = load(tiny_adamra_checkpoint, tiny_data_bin, dtype=torch.float32, random_gates=False)
    task.load_dataset("test")
    dataset = task.dataset("test")
    assert len(hypotheses) == len(dataset) == 19
    dictionary = task.target_dictionary
    with torch.no_grad():
        for index in range(len(dataset)):
            tokens, score = reference_greedy(model, dataset[index]["source"], dictionary, max_len_b)
            assert hypotheses[index][1] == dictionary.string(torch.tensor(tokens)), f"sentence {index}"
            assert hypotheses[index][0] == pytest.approx(score / math.log(2), abs=2e-4)


def test_decoder_builds_no_square_mask_when_all_self_attention_is_adamra(tiny_adamra_checkpoint, tiny_data_bin):
    model, _, _ = load(tiny_adamra_checkpoint, tiny_data_bin, dtype=torch.float32, random_gates=False)
    x = torch.zeros(50, 2, 8)
    assert model.decoder.buffered_future_mask(x).numel() == 0


def test_softmax_decoder_self_attention_keeps_fairseq_mask(tiny_data_bin, tmp_path):
    from conftest import train_tiny

    checkpoint = train_tiny(tiny_data_bin, tmp_path / "enc-only", "adamra_transformer_tiny",
                            ["--adamra-attention", "encoder,cross", "--adamra-rates", "1,2", "--max-update", "2"])
    model, _, _ = load(checkpoint, tiny_data_bin, dtype=torch.float32, random_gates=False)
    assert not isinstance(model.decoder.layers[0].self_attn, MultiResolutionAttention)
    assert isinstance(model.decoder.layers[0].encoder_attn, MultiResolutionAttention)
    assert model.decoder.buffered_future_mask(torch.zeros(7, 2, 8)).shape == (7, 7)
