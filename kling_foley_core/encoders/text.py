"""Text encoders behind one interface: ``encode(prompts) -> TextFeatures(hidden [B, L, D], mask [B, L])``.

* ``t5-base`` - Kling-Foley (google-t5/t5-base encoder, 768-d) via transformers.
* ``clip-vit-h-14`` - MMAudio: the DFN5B CLIP text tower (native, open_clip keys), every one of the 77 tokens'
  states after ``ln_final``, L2-normalised per token exactly as MMAudio's ``encode_text(normalize=True)``
  (77 x 1024). Padding is token id 0 after the end-of-text token, as open_clip's tokenizer does.
* ``clap`` - HunyuanVideo-Foley: ``laion/larger_clap_general`` text model's last hidden states (768-d).

Prompts longer than ``max_length`` tokens are truncated with a logged warning. An empty prompt is encoded like
any other (the model's features of the empty string), which is what the reference systems store as their
unconditional text. ``padding="max_length"`` (default) gives a fixed ``L = max_length`` so conditional and
unconditional features concatenate; ``"longest"`` pads to the longest prompt of the call (HunyuanVideo-Foley's
tokenizer call, whose text tokens all enter cross-attention unmasked).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers.models.modeling_utils import ModelMixin

from ..offload import onloads

from .base import EncoderError, TextEncoder, TextFeatures, build_model
from .clip_vit import CLIP_PRESETS, ClipTextTower, read_clip_checkpoint, text_config_from_open_clip, text_state_dict

log = logging.getLogger(__name__)

MIN_T5_VOCAB = 32000
PADDINGS = ("max_length", "longest")


def _check_padding(padding: str, name: str) -> str:
    if padding not in PADDINGS:
        raise EncoderError(f"{name}: padding={padding!r} is not supported; use one of {PADDINGS}")
    return padding


class HFTextEncoder(TextEncoder, ModelMixin):
    """A transformers encoder (``last_hidden_state``) with its tokenizer: T5 and CLAP share this.

    ``save_pretrained`` writes the model, the tokenizer and ``encoder_config.json`` (class, name, length,
    padding) into one folder; ``from_pretrained`` reads it back."""

    ENCODER_CONFIG = "encoder_config.json"

    def __init__(self, model, tokenizer, *, name: str, max_length: int = 77, padding: str = "max_length"):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.max_length = int(max_length)
        self.padding = _check_padding(padding, name)
        self.dim = getattr(model.config, "d_model", None) or model.config.hidden_size

    def save_pretrained(self, save_directory, **kwargs) -> None:
        self.model.save_pretrained(save_directory)
        self.tokenizer.save_pretrained(save_directory)
        settings = dict(model_class=type(self.model).__name__, name=self.name, max_length=self.max_length,
                        padding=self.padding)
        (Path(save_directory) / self.ENCODER_CONFIG).write_text(json.dumps(settings, indent=1) + "\n")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, torch_dtype: torch.dtype | None = None,
                        **kwargs) -> "HFTextEncoder":
        import transformers

        folder = Path(pretrained_model_name_or_path)
        settings = json.loads((folder / cls.ENCODER_CONFIG).read_text())
        model_cls = getattr(transformers, settings.pop("model_class"))
        model = model_cls.from_pretrained(str(folder), dtype=torch_dtype or torch.float32)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
        return cls(model.eval().requires_grad_(False), tokenizer, **settings)

    @onloads
    @torch.inference_mode()
    def encode(self, prompts: list[str]) -> TextFeatures:
        prompts = self._check_prompts(prompts)
        full = self.tokenizer(prompts, add_special_tokens=True)["input_ids"]
        self._warn_truncated(prompts, [len(ids) for ids in full])
        batch = self.tokenizer(prompts, padding=self.padding, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        ids = batch["input_ids"].to(self.device)  # (B, L)
        mask = batch["attention_mask"].to(self.device)  # (B, L)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, D)
        return TextFeatures(hidden.float(), mask.bool())


def _resolve(path: str | Path | None, default_id: str, name: str) -> str:
    if path is None:
        return default_id
    p = Path(str(path)).expanduser()
    if p.exists():
        return str(p)
    if str(path).startswith((".", "/", "~")) or str(path).count("/") != 1:
        raise EncoderError(f"text encoder {name!r}: '{path}' does not exist; pass a local transformers folder or a "
                           "hub id such as " + default_id)
    return str(path)


def load_t5(path: str | Path | None = None, *, max_length: int = 77, padding: str = "max_length",
            dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> HFTextEncoder:
    """T5 encoder from a local folder (config.json, model.safetensors, tokenizer.json/spiece.model) or hub id."""
    from transformers import AutoTokenizer, T5EncoderModel

    src = _resolve(path, "google-t5/t5-base", "t5-base")
    try:
        tok = AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError) as exc:
        raise EncoderError(f"text encoder 't5-base': no tokenizer at '{src}' ({str(exc).splitlines()[0]}); the folder "
                           "needs tokenizer.json or spiece.model") from None
    if len(tok) < MIN_T5_VOCAB:
        # transformers 5 can hand back a 104-entry tokenizer (special tokens only) when the vocab file is
        # missing; every word would become <unk>, silently.
        raise EncoderError(f"text encoder 't5-base': tokenizer at '{src}' has {len(tok)} entries (< {MIN_T5_VOCAB}): "
                           "its vocabulary file is missing; put tokenizer.json or spiece.model in the folder")
    try:
        model = T5EncoderModel.from_pretrained(src, dtype=dtype)
    except OSError as exc:
        raise EncoderError(f"text encoder 't5-base': cannot load weights from '{src}' ({str(exc).splitlines()[0]})") from None
    return HFTextEncoder(model.to(device).eval().requires_grad_(False), tok, name="t5-base",
                         max_length=max_length, padding=padding)


def load_clap(path: str | Path | None = None, *, max_length: int = 77, padding: str = "max_length",
              dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> HFTextEncoder:
    """CLAP text model (``ClapTextModelWithProjection`` checkpoint or a full ``ClapModel`` folder)."""
    from transformers import AutoConfig, AutoTokenizer, ClapTextModelWithProjection

    src = _resolve(path, "laion/larger_clap_general", "clap")
    try:
        tok = AutoTokenizer.from_pretrained(src)
        cfg = AutoConfig.from_pretrained(src)
    except (OSError, ValueError) as exc:
        raise EncoderError(f"text encoder 'clap': cannot load '{src}' ({str(exc).splitlines()[0]})") from None
    if cfg.model_type not in ("clap", "clap_text_model"):
        raise EncoderError(f"text encoder 'clap': '{src}' is a {cfg.model_type!r} model, not CLAP")
    model = ClapTextModelWithProjection.from_pretrained(src, dtype=dtype)
    return HFTextEncoder(model.to(device).eval().requires_grad_(False), tok, name="clap",
                         max_length=max_length, padding=padding)


# --------------------------------------------------------------------------------------------------------------
# CLIP text (native tower)
# --------------------------------------------------------------------------------------------------------------


class ClipBpeTokenizer:
    """open_clip's token layout on top of a BPE tokenizer: ``[sot] + tokens[:L-2] + [eot]``, padded with 0.

    Wraps either open_clip's own tokenizer or a transformers ``CLIPTokenizer`` (vocab.json + merges.txt or
    tokenizer.json), which share the 49408-entry BPE vocabulary.
    """

    def __init__(self, hf_tokenizer=None, *, open_clip_tokenizer: Callable | None = None, context_length: int = 77):
        if hf_tokenizer is None and open_clip_tokenizer is None:
            raise EncoderError("CLIP tokenizer: give a transformers CLIPTokenizer or an open_clip tokenizer")
        self.hf = hf_tokenizer
        self.oc = open_clip_tokenizer
        self.context_length = context_length

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, list[int]]:
        """-> ids ``[B, context_length]`` and each prompt's untruncated length (with sot/eot)."""
        if self.oc is not None:
            ids = self.oc(prompts, context_length=self.context_length)
            lengths = [int((row != 0).sum()) for row in ids]
            return ids.long(), lengths
        sot, eot = self.hf.bos_token_id, self.hf.eos_token_id
        rows, lengths = [], []
        for p in prompts:
            body = self.hf(p, add_special_tokens=False)["input_ids"]
            lengths.append(len(body) + 2)
            row = [sot] + body[: self.context_length - 2] + [eot]
            rows.append(row + [0] * (self.context_length - len(row)))
        return torch.tensor(rows, dtype=torch.long), lengths


class ClipTextEncoder(TextEncoder):
    """All-token CLIP text features after ``ln_final`` (per-token L2-normalised when ``normalize``)."""

    def __init__(self, tower: ClipTextTower, tokenizer: ClipBpeTokenizer, *, name: str = "clip-vit-h-14",
                 normalize: bool = True):
        super().__init__()
        self.tower = tower
        self.tokenizer = tokenizer
        self.name = name
        self.normalize = normalize
        self.dim = tower.config.width
        self.max_length = tower.config.context_length

    @onloads
    @torch.inference_mode()
    def encode(self, prompts: list[str]) -> TextFeatures:
        prompts = self._check_prompts(prompts)
        ids, lengths = self.tokenizer(prompts)  # (B, 77)
        self._warn_truncated(prompts, lengths)
        hidden = self.tower(ids.to(self.device))  # (B, 77, D)
        if self.normalize:
            hidden = F.normalize(hidden, dim=-1)
        pos = torch.arange(ids.shape[1], device=hidden.device)
        n_real = torch.tensor([min(n, self.max_length) for n in lengths], device=hidden.device)
        mask = pos[None, :] < n_real[:, None]  # (B, 77): sot .. eot
        return TextFeatures(hidden.float(), mask)


def byte_level_clip_tokenizer(context_length: int = 77) -> ClipBpeTokenizer:
    """A CLIP-style BPE tokenizer with no merges (one token per byte, 514 entries), built in memory.

    For tiny test models only: real CLIP checkpoints need the real 49408-entry vocabulary."""
    from transformers import CLIPTokenizer

    # GPT-2/CLIP byte -> printable-unicode table
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, extra = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    chars = [chr(c) for c in cs]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    return ClipBpeTokenizer(CLIPTokenizer(vocab=vocab, merges=[]), context_length=context_length)


def _clip_tokenizer(folder: Path | None, context_length: int) -> ClipBpeTokenizer:
    if folder is not None and ((folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file()):
        from transformers import CLIPTokenizer, CLIPTokenizerFast

        cls = CLIPTokenizerFast if (folder / "tokenizer.json").is_file() else CLIPTokenizer
        return ClipBpeTokenizer(cls.from_pretrained(str(folder)), context_length=context_length)
    try:
        import open_clip

        return ClipBpeTokenizer(open_clip_tokenizer=open_clip.get_tokenizer("ViT-H-14"), context_length=context_length)
    except Exception:
        where = f" in '{folder}'" if folder is not None else ""
        raise EncoderError(f"CLIP text encoder: no BPE tokenizer{where}; put vocab.json + merges.txt (or tokenizer.json) "
                           "from any OpenAI-CLIP tokenizer beside the checkpoint, or install the 'openclip' extra") from None


def load_clip_text(name: str = "dfn5b-clip-vit-h-14-384", path: str | Path | None = None, *,
                   tokenizer: ClipBpeTokenizer | None = None, normalize: bool = True,
                   dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                   generator: torch.Generator | None = None) -> ClipTextEncoder:
    """CLIP text tower by preset from an open_clip checkpoint (the non-``visual.`` half); tiny presets without a
    path get random weights."""
    if name not in CLIP_PRESETS:
        raise EncoderError(f"CLIP text encoder: unknown preset {name!r}; choose one of {', '.join(CLIP_PRESETS)}")
    preset = CLIP_PRESETS[name]
    config = dict(preset.text)
    if path is None:
        if not name.startswith("tiny"):
            raise EncoderError(f"CLIP text encoder {name!r}: pass path= the open_clip checkpoint file or folder")
        tok = tokenizer or byte_level_clip_tokenizer(config["context_length"])
        tower = build_model(ClipTextTower, config, None, what=name, dtype=dtype, device=device, generator=generator)
        return ClipTextEncoder(tower, tok, name=name, normalize=normalize)
    p = Path(str(path).removeprefix("local-dir:")).expanduser()
    if not p.exists():
        raise EncoderError(f"CLIP text encoder {name!r}: '{p}' does not exist; pass an open_clip checkpoint file or folder")
    # the tokenizer first: a missing vocabulary should fail before a multi-GB checkpoint is read
    tok = tokenizer or _clip_tokenizer(p if p.is_dir() else p.parent, config["context_length"])
    ckpt = read_clip_checkpoint(p)
    if ckpt.model_cfg:
        config = text_config_from_open_clip(ckpt.model_cfg, config)
    sd = text_state_dict(ckpt.state_dict)
    if "text_projection" not in sd:  # e.g. a transformers CLIPTextModel: no projection, none needed
        config["output_dim"] = None
    tower = build_model(ClipTextTower, config, sd,
                        what=f"CLIP text tower {name!r} from '{path}'", dtype=dtype, device=device)
    return ClipTextEncoder(tower, tok, name=name, normalize=normalize)
