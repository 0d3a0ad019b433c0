"""The trained iSTFT-head vocoder: framing, save/load, the mel-layout check, and its trainer (loss falls, resumes)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from kling_foley_core.audio.mel import MelSpectrogram
from kling_foley_core.data.synthetic import synthetic_bank
from kling_foley_core.data.synthhits import SynthHitsConfig, generate_clip, write_shard
from kling_foley_core.models.vocoder_bigvgan import VocoderInputError
from kling_foley_core.models.vocoder_vocos import VocosVocoder, check_vocoder_fits
from kling_foley_core.training import train_vocoder

TINY = dict(dim=16, intermediate_dim=32, num_layers=1)


def burst(n: int = 16000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    return (0.3 * torch.randn(n, generator=g) * torch.exp(-((t - 0.3).clamp(min=0)) / 0.05) * (t > 0.3))[None]


def test_output_length_and_untrained_level_follow_the_mel():
    torch.manual_seed(0)
    voc = VocosVocoder("16k", **TINY).eval()
    mel_fn = MelSpectrogram("16k")
    x = burst()
    m = mel_fn(x)  # (1, 80, 62)
    with torch.no_grad():
        y = voc(m)
    assert y.shape == (1, m.shape[-1] * 256)
    # the head's magnitude is relative to the mel's own level: even untrained, the output has the input's loudness
    # where the burst is and stays silent before it
    err = (mel_fn(y) - m).abs()
    assert err[..., 25:45].mean() < 0.5
    assert y[0, :4000].abs().max() < 1e-3 < y[0, 4800:6400].abs().max()


def test_save_and_load_give_the_same_audio(tmp_path):
    torch.manual_seed(1)
    voc = VocosVocoder("16k", **TINY).eval()
    voc.save_pretrained(tmp_path / "vocoder")
    cfg = json.loads((tmp_path / "vocoder" / "config.json").read_text())
    assert cfg["_class_name"] == "VocosVocoder" and cfg["mel"] == "16k"
    back = VocosVocoder.from_pretrained(str(tmp_path / "vocoder")).eval()
    m = MelSpectrogram("16k")(burst(seed=2))
    with torch.no_grad():
        assert torch.equal(voc(m), back(m))
    with pytest.raises(VocoderInputError, match=r"\(B, 80, frames\)"):
        voc(torch.zeros(1, 128, 10))


def test_a_vocoder_of_another_mel_layout_is_a_one_line_error(tmp_path):
    with pytest.raises(VocoderInputError) as e:
        check_vocoder_fits(VocosVocoder("44k", **TINY), "16k", what="the vocoder", of="Mel-VAE")
    msg = str(e.value)
    assert "\n" not in msg and "44100 Hz, 128 mels" in msg and "16000 Hz, 80 mels" in msg
    check_vocoder_fits(VocosVocoder("16k", **TINY), "16k")  # the same layout passes


def test_default_model_folder_with_a_44k_vocoder_is_refused(tmp_path):
    from kling_foley_core.default_model import DefaultModelError, load_default_model, weights_dir

    if not (weights_dir() / "vae" / "config.json").is_file():
        pytest.skip("default model weights not installed")
    folder = tmp_path / "weights"
    shutil.copytree(weights_dir(), folder, ignore=shutil.ignore_patterns("curves"))
    shutil.rmtree(folder / "vocoder")
    VocosVocoder("44k", **TINY).save_pretrained(folder / "vocoder")
    with pytest.raises(DefaultModelError) as e:
        load_default_model("cpu", directory=folder)
    msg = str(e.value)
    assert "\n" not in msg and "44100 Hz" in msg and "16000 Hz" in msg and "vocoder" in msg


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthhits")
    cfg = SynthHitsConfig(size=48, min_duration=2.0, max_duration=2.5, p_no_hits=0.0)
    bank = synthetic_bank(per_class=2)
    write_shard([generate_clip(bank, seed=0, index=i, split="train", config=cfg) for i in range(4)],
                root / "shard-00000.npz")
    return root


ARGS = ["--dim", "16", "--intermediate-dim", "32", "--layers", "1", "--batch-size", "4", "--crop-frames", "32",
        "--lr", "3e-3", "--warmup", "2", "--ema", "0.5", "--log-every", "1", "--no-progress", "--threads", "1", "--seed", "0"]


def _totals(out):
    return [json.loads(ln)["total"] for ln in (out / "metrics.jsonl").read_text().splitlines()]


def test_trainer_loss_falls_and_the_vae_stage_resumes(data, tmp_path):
    out = tmp_path / "s1"
    assert train_vocoder.main(["--data", str(data), "--out", str(out), "--steps", "60", *ARGS]) == 0
    assert len(_totals(out)) == 60
    final = out / "final" / "vocoder"
    trained = VocosVocoder.from_pretrained(str(final)).eval()
    torch.manual_seed(0)  # the trainer's starting point
    start = VocosVocoder("16k", **TINY).eval()
    held = train_vocoder.Soundtracks([data], 4).crops(8, 32 * 256, torch.Generator().manual_seed(123))
    mel_fn = MelSpectrogram("16k")

    def loss(v):
        with torch.no_grad():
            pred = v(mel_fn(held))
            sc, lm = train_vocoder.multi_resolution_stft_loss(pred, held)
            return float((mel_fn(pred) - mel_fn(held)).abs().mean() + sc + lm)

    assert loss(trained) < 0.85 * loss(start)  # a trainer that does not learn stays at 1.0

    from kling_foley_core.training.export import export_checkpoint

    exported = export_checkpoint(out / "checkpoints" / "step-0000060", tmp_path / "exported")
    back = VocosVocoder.from_pretrained(str(exported)).state_dict()
    assert all(torch.equal(v, back[k]) for k, v in trained.state_dict().items())

    from kling_foley_core.models.mel_vae_kling import KlingMelVAE

    KlingMelVAE(n_mels=80, latent_dim=20, hidden_dim=16, num_blocks=1, norm_groups=4,
                time_downsample=2).save_pretrained(tmp_path / "vae")
    stage2 = ["--data", str(data), "--out", str(tmp_path / "s2"), "--steps", "4", "--init", str(final), "--vae",
              str(tmp_path / "vae"), "--vae-context", "4", "--save-every", "2", *ARGS]
    assert train_vocoder.main([*stage2, "--stop-at", "2"]) == 0
    assert not (tmp_path / "s2" / "final").exists()
    assert train_vocoder.main([*stage2, "--resume", "latest"]) == 0
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "s2" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert (tmp_path / "s2" / "final" / "vocoder" / "diffusion_pytorch_model.safetensors").is_file()


def test_trainer_refuses_a_vae_of_another_mel_layout(data, tmp_path, capsys):
    from kling_foley_core.models.mel_vae_kling import KlingMelVAE

    KlingMelVAE(n_mels=128, latent_dim=40, hidden_dim=16, num_blocks=1, norm_groups=4).save_pretrained(tmp_path / "v")
    rc = train_vocoder.main(["--data", str(data), "--out", str(tmp_path / "o"), "--steps", "2", "--vae",
                             str(tmp_path / "v"), *ARGS])
    out = capsys.readouterr().out
    assert rc == 2 and out.startswith("error: --vae") and "44100 Hz" in out and "16000 Hz" in out


def test_vocoder_loader_node_reads_a_trained_vocoder_folder(tmp_path):
    from nodes.loaders import KlingFoleyVocoderLoader

    torch.manual_seed(3)
    VocosVocoder("16k", **TINY).save_pretrained(tmp_path / "vocoder")
    (loaded,) = KlingFoleyVocoderLoader().load(str(tmp_path / "vocoder"))
    assert isinstance(loaded, VocosVocoder) and loaded.n_mels == 80 and not loaded.training


def test_long_audio_is_rendered_in_chunks_that_equal_one_pass(monkeypatch):
    from kling_foley_core.models import vocoder_vocos

    torch.manual_seed(4)
    voc = VocosVocoder("16k", dim=16, intermediate_dim=32, num_layers=2).eval()
    mel = MelSpectrogram("16k")(torch.randn(2, 16000 * 3) * 0.1)  # (2, 80, 187)
    with torch.no_grad():
        whole = voc(mel)
        calls = []
        real = voc._render
        monkeypatch.setattr(voc, "_render", lambda m: calls.append(m.shape[-1]) or real(m))
        monkeypatch.setattr(vocoder_vocos, "CHUNK_SECONDS", 0.5)  # 31 frames a chunk: 7 chunks
        reported = []
        chunked = voc(mel, callback=lambda done, total: reported.append((done, total)))
    assert len(calls) == 7 and max(calls) < mel.shape[-1]
    assert reported == [(k, 7) for k in range(1, 8)]
    assert chunked.shape == whole.shape
    assert torch.allclose(chunked, whole, atol=1e-5 * float(whole.abs().max()))
