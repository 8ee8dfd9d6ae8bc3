"""Every preset name, present or earlier, trains through fairseq's own trainer and its checkpoints load back."""

import pytest
import torch
from fairseq import checkpoint_utils, options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.trainer import Trainer

from adamra_fairseq.modules.options import PRESET_ALIASES, PRESET_NAMES
from conftest import TINY_MODEL_FLAGS, USER_DIR


def trained_checkpoint(data_bin, save_dir, preset):
    """Two updates of ``adamra_transformer_tiny --adamra-preset PRESET`` with fairseq's Trainer, saved as
    fairseq-train saves; returns (checkpoint path, task, trained model)."""
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        data_bin, "--user-dir", USER_DIR, "--arch", "adamra_transformer_tiny", *TINY_MODEL_FLAGS,
        "--adamra-rates", "1,2", "--adamra-preset", preset, "--cpu", "--seed", "1", "--optimizer", "adam",
        "--lr", "1e-3", "--criterion", "label_smoothed_cross_entropy", "--max-tokens", "400",
        "--dropout", "0.0", "--save-dir", str(save_dir)])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    model, criterion = task.build_model(cfg.model), task.build_criterion(cfg.criterion)
    trainer = Trainer(cfg, task, model, criterion)
    batches = task.get_batch_iterator(dataset=task.dataset("train"), max_tokens=400, seed=1).next_epoch_itr(
        shuffle=False)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    for _ in range(2):
        trainer.train_step([next(batches)])
    assert any(not torch.equal(before[name], value) for name, value in model.state_dict().items())  # it trained
    path = str(save_dir / "checkpoint_last.pt")
    trainer.consolidate_optimizer()  # as fairseq's checkpoint_utils.save_checkpoint does first
    trainer.save_checkpoint(path, {})
    return path, task, model


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_every_preset_name_trains_and_its_checkpoints_load(tiny_data_bin, tmp_path, preset):
    path, task, trained = trained_checkpoint(tiny_data_bin, tmp_path, preset)
    # a checkpoint of the code before 2026-12-07 stored the name as given on the command line
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["cfg"]["model"].adamra_preset == PRESET_ALIASES.get(preset, preset)
    state["cfg"]["model"].adamra_preset = preset
    torch.save(state, path)

    (loaded,), _ = checkpoint_utils.load_model_ensemble([path], task=task)
    assert loaded.encoder.layers[0].self_attn.options == trained.encoder.layers[0].self_attn.options
    assert loaded.decoder.layers[0].encoder_attn.options == trained.decoder.layers[0].encoder_attn.options
    trained_state = trained.state_dict()
    assert loaded.state_dict().keys() == trained_state.keys()
    assert all(torch.equal(value, trained_state[name]) for name, value in loaded.state_dict().items())
