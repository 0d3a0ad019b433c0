"""BigVGAN vocoder: parity with NVIDIA's package (fixtures and, when installed, the package itself), loading paths,
shapes and errors. Tiny configurations only; the 122 M-parameter preset is built on the meta device."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kling_foley_core.compat.checkpoints import CheckpointError, init_empty
from kling_foley_core.compat.parity import compare, load_fixture
from kling_foley_core.models import vocoder_bigvgan as vb
from kling_foley_core.models.vocoder_bigvgan import BigVGANVocoder, VocoderInputError

FIXTURES = Path(__file__).parent / "fixtures" / "bigvgan"
NAMES = ["bigvgan_v2_tiny", "bigvgan_v1_tiny"]
TOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    # Tiny models run fastest on one thread, and much slower with several when the cores are shared.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / (b.double().abs().max() + 1e-8))


def write_nvidia_folder(name: str, folder: Path) -> Path:
    """Lay out a fixture as NVIDIA releases it: config.json + bigvgan_generator.pt ({"generator": state dict})."""
    spec = json.loads((FIXTURES / f"{name}.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(spec["config"]))
    torch.save({"generator": load_file(str(FIXTURES / f"{name}.safetensors"))}, folder / "bigvgan_generator.pt")
    return folder


@pytest.mark.parametrize("name", NAMES)
def test_nvidia_folder_matches_package_output(name, tmp_path):
    io = load_file(str(FIXTURES / f"{name}.io.safetensors"))
    # A saturated reference (all ±1 after the clamp/tanh) would make any model pass: the fixture must not be.
    assert io["waveform"].abs().max() < 0.99 and io["waveform"].std() > 0.01
    model = BigVGANVocoder.from_nvidia_checkpoint(write_nvidia_folder(name, tmp_path / name))
    with torch.no_grad():
        wav = model(io["mel"])
    assert wav.shape == io["waveform"].shape == (io["mel"].shape[0], io["mel"].shape[-1] * model.hop_length)
    assert rel_err(wav, io["waveform"]) <= TOL


@pytest.mark.parametrize("name", NAMES)
def test_parity_handler(name):
    fixture = load_fixture(FIXTURES / name)
    errors = compare(fixture, vb.run(fixture))
    assert set(errors) == {"waveform"} and errors["waveform"] <= TOL


def test_parametrization_style_and_prefolded_checkpoints_load_the_same():
    fixture = load_fixture(FIXTURES / "bigvgan_v2_tiny")
    cfg = vb.config_from_nvidia(fixture.spec["config"])
    mel, ref = fixture.io["mel"], fixture.io["waveform"]
    renamed = {k.replace("weight_g", "parametrizations.weight.original0")
               .replace("weight_v", "parametrizations.weight.original1"): v for k, v in fixture.weights.items()}
    m1 = BigVGANVocoder(**cfg).load_reference_state_dict(renamed).eval()
    # A checkpoint whose weight norm was removed before saving, and which dropped the (fixed) sinc filters.
    folded = {k: v for k, v in vb.fold_weight_norm(fixture.weights).items() if not k.endswith(".filter")}
    m2 = BigVGANVocoder(**cfg).load_reference_state_dict(folded).eval()
    with torch.no_grad():
        assert rel_err(m1(mel), ref) <= TOL
        assert rel_err(m2(mel), ref) <= TOL


def test_fold_weight_norm_matches_torch():
    conv = torch.nn.utils.parametrizations.weight_norm(torch.nn.ConvTranspose1d(6, 3, 4, stride=2))
    with torch.no_grad():
        conv.parametrizations.weight.original0.uniform_(0.5, 2.0)
    sd = {f"up.{k}": v for k, v in conv.state_dict().items()}
    folded = vb.fold_weight_norm(sd)
    assert set(folded) == {"up.weight", "up.bias"}
    torch.testing.assert_close(folded["up.weight"], conv.weight.detach(), rtol=1e-6, atol=1e-7)


def test_save_pretrained_roundtrip(tmp_path):
    fixture = load_fixture(FIXTURES / "bigvgan_v1_tiny")
    model = BigVGANVocoder(**vb.config_from_nvidia(fixture.spec["config"]))
    model.load_reference_state_dict(fixture.weights).eval()
    model.save_pretrained(str(tmp_path / "voc"))
    again = vb.load_bigvgan(tmp_path / "voc")
    assert isinstance(again, BigVGANVocoder) and again.config.resblock == "2"
    with torch.no_grad():
        assert rel_err(again(fixture.io["mel"]), fixture.io["waveform"]) <= TOL


def test_tiny_preset_shapes_and_interface():
    torch.manual_seed(0)
    model = BigVGANVocoder.from_preset("tiny").eval()
    assert isinstance(model, vb.MelVocoder)
    assert (model.sample_rate, model.hop_length, model.n_mels) == (44100, 512, 128)
    with torch.no_grad():
        wav = model(torch.randn(2, 128, 5) - 4)
    assert wav.shape == (2, 5 * 512) and torch.isfinite(wav).all() and wav.abs().max() <= 1.0


def test_presets_match_their_mel_front_ends_and_sizes():
    from kling_foley_core.audio.mel import mel_preset

    for preset, mel in (("bigvgan_v2_44khz_128band_512x", "44k"), ("mmaudio_bigvgan_16k", "16k")):
        model = init_empty(BigVGANVocoder, **vb._preset(preset))
        assert model.mel_config() == mel_preset(mel)
        n = sum(p.numel() for p in model.parameters())
        # NVIDIA quotes 122 M for the 44 kHz v2 model; MMAudio's 16 kHz BigVGAN has the same width (112 M: 80 mels,
        # a shorter first upsampling kernel).
        assert 105e6 < n < 125e6, (preset, n)


def test_activation1d_passes_low_frequencies_and_suppresses_aliases():
    # Up ×2, identity, down ×2 gives a slow sinusoid back intact (away from the replicate-padded edges).
    act = vb.Activation1d(torch.nn.Identity())
    t = torch.arange(1024, dtype=torch.float32)
    slow = torch.sin(2 * math.pi * 0.02 * t).view(1, 1, -1)
    assert act(slow).shape == slow.shape
    assert (act(slow) - slow)[..., 20:-20].abs().max() < 1e-2

    # x² of a tone at 0.35 cycles/sample makes a harmonic at 0.7, which at the base rate aliases to 0.3. Computed
    # at twice the rate and low-passed before decimation, that alias is several times weaker.
    class Square(torch.nn.Module):
        def forward(self, x):
            return x * x

    tone = torch.sin(2 * math.pi * 0.35 * t).view(1, 1, -1)

    def amplitude_at(signal, freq):
        s = signal[0, 0, 64:-64]
        tt = torch.arange(s.numel(), dtype=torch.float32)
        return float(2 * (s * torch.exp(-2j * math.pi * freq * tt)).mean().abs())

    naive = amplitude_at(tone * tone, 0.3)
    filtered = amplitude_at(vb.Activation1d(Square())(tone), 0.3)
    assert naive > 0.45 and filtered < 0.3 * naive


def test_bad_inputs_give_clear_errors(tmp_path):
    model = BigVGANVocoder.from_preset("tiny")
    with pytest.raises(VocoderInputError, match="128 mel bands"):
        model(torch.zeros(1, 80, 4))
    with pytest.raises(VocoderInputError, match="unknown"):
        BigVGANVocoder.from_preset("bigvgan_9000")
    with pytest.raises(VocoderInputError, match="bigvgan_generator.pt"):
        BigVGANVocoder.from_nvidia_checkpoint(tmp_path)
    # a checkpoint that does not fit its config names what it looks like
    folder = write_nvidia_folder("bigvgan_v2_tiny", tmp_path / "v2")
    with pytest.raises(CheckpointError, match="num_mels=16"):
        BigVGANVocoder.from_nvidia_checkpoint(folder, config="tiny")
    weights = load_file(str(FIXTURES / "bigvgan_v2_tiny.safetensors"))
    del weights["conv_pre.weight_v"]
    with pytest.raises(CheckpointError, match="conv_pre"):
        vb.fold_weight_norm(weights)


def test_against_the_nvidia_package_itself():
    bigvgan = pytest.importorskip("bigvgan")
    from bigvgan.env import AttrDict

    cfg = dict(num_mels=10, upsample_rates=[2, 3], upsample_kernel_sizes=[4, 6], upsample_initial_channel=16,
               resblock="1", resblock_kernel_sizes=[3, 7], resblock_dilation_sizes=[[1, 3, 5], [1, 2, 4]],
               activation="snakebeta", snake_logscale=True, use_tanh_at_final=True, use_bias_at_final=True)
    ref = bigvgan.BigVGAN(AttrDict(dict(cfg)), use_cuda_kernel=False).eval()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.copy_((0.3 if name.endswith(("alpha", "beta", "bias")) else 1.0) * torch.randn(p.shape, generator=gen))
    ours = BigVGANVocoder(**vb.config_from_nvidia(cfg)).load_reference_state_dict(ref.state_dict()).eval()
    mel = torch.randn(2, 10, 9, generator=gen) - 3
    with torch.no_grad():
        expected = ref(mel).squeeze(1)
        assert rel_err(ours(mel), expected) <= TOL


@pytest.mark.realweights
@pytest.mark.skipif(os.environ.get("KLING_FOLEY_REAL_WEIGHTS") != "1" or not os.environ.get("KLING_FOLEY_BIGVGAN_44K"),
                    reason="opt-in: KLING_FOLEY_REAL_WEIGHTS=1 and KLING_FOLEY_BIGVGAN_44K=<NVIDIA release folder>")
def test_real_44k_checkpoint_resynthesises_a_signal():
    from kling_foley_core.audio.mel import MelSpectrogram

    model = vb.load_bigvgan(os.environ["KLING_FOLEY_BIGVGAN_44K"])
    front = MelSpectrogram(model.mel_config())
    t = torch.arange(44100) / 44100
    gen = torch.Generator().manual_seed(0)
    decay = torch.where(t > 0.5, torch.exp(-(t - 0.5) / 0.05), torch.zeros_like(t))
    burst = decay * torch.randn(t.shape, generator=gen)
    wave = (0.2 * torch.sin(2 * math.pi * 440 * t) + 0.3 * burst).unsqueeze(0)
    mel = front(wave)
    with torch.no_grad():
        out = model(mel)
    err = float((front(out) - mel).abs().mean())
    # A trained vocoder reproduces the mel closely (a random-weight one gives errors of several ln units).
    assert err < 0.5, err
