"""Tiny CLIP models and tokenizers built offline, for tests and the embedded demo.

Nothing here downloads: the tokenizer is trained with the `tokenizers` library on the texts given,
and the model is built from a `CLIPConfig` and saved with `save_pretrained`, so it reloads with the
same `from_pretrained` code path a user's hub checkpoint takes.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizerFast

BOS, EOS, PAD = "<|startoftext|>", "<|endoftext|>", "<|endoftext|>"
_CLIP_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def train_clip_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> CLIPTokenizerFast:
    """Learn BPE merges on `texts` and return a tokenizer in CLIP's exact vocab/merges format.

    The vocabulary starts, as CLIP's does, with the 256 byte characters and their end-of-word forms,
    so any text can be encoded; the learned merges follow, then the two special tokens.
    """
    texts = list(texts)
    byte_chars = list(_bytes_to_unicode().values())
    tok = Tokenizer(models.BPE(unk_token=None, end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(_CLIP_SPLIT), "removed", invert=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size, 2 * len(byte_chars) + 2),
        initial_alphabet=byte_chars,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    learned = json.loads(tok.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in learned["merges"]]
    vocab = byte_chars + [c + "</w>" for c in byte_chars]
    seen = set(vocab)
    for merge in merges:
        token = merge.replace(" ", "")
        if token not in seen:
            seen.add(token)
            vocab.append(token)
    vocab += [BOS, EOS]
    vocab_ids = {t: i for i, t in enumerate(vocab)}
    clip_tok = Tokenizer(models.BPE(vocab=vocab_ids, merges=[tuple(m.split(" ")) for m in merges], end_of_word_suffix="</w>"))
    clip_tok.normalizer = tok.normalizer
    clip_tok.pre_tokenizer = tok.pre_tokenizer
    clip_tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab_ids[BOS]), (EOS, vocab_ids[EOS])]
    )
    clip_tok.decoder = decoders.ByteLevel()
    with tempfile.TemporaryDirectory() as tmp:
        clip_tok.save(os.path.join(tmp, "tokenizer.json"))
        with open(os.path.join(tmp, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(vocab_ids, f, ensure_ascii=False)
        with open(os.path.join(tmp, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
        # from_pretrained reads CLIP's own files on every transformers major version.
        return CLIPTokenizerFast.from_pretrained(tmp, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=EOS)


def tiny_clip_config(
    tokenizer: CLIPTokenizerFast,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 32,
    num_layers: int = 4,
    num_heads: int = 2,
    projection_dim: int = 32,
    max_text_length: int = 32,
) -> CLIPConfig:
    """A CLIPConfig small enough to train on a laptop CPU in seconds."""
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=2,
        num_attention_heads=num_heads,
        max_position_embeddings=max_text_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        image_size=image_size,
        patch_size=patch_size,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


def tiny_image_processor(image_size: int = 32):
    # Imported here: without torchvision, importing this name makes transformers print a warning,
    # which would otherwise greet every `ldifs-hf` command.
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=True,
        do_resize=True,
    )


def make_tiny_clip(
    output_dir: str | os.PathLike,
    texts: Iterable[str] = ("a photo of a cat.", "a photo of a dog.", "a satellite photo of a river."),
    seed: int = 0,
    vocab_size: int = 1024,
    **config_kwargs,
) -> str:
    """Build a randomly initialised tiny CLIP with its processor and save it to `output_dir`."""
    import torch

    tokenizer = train_clip_tokenizer(texts, vocab_size=vocab_size)
    tokenizer.model_max_length = config_kwargs.get("max_text_length", 32)
    config = tiny_clip_config(tokenizer, **config_kwargs)
    torch.manual_seed(seed)
    model = CLIPModel(config)
    processor = CLIPProcessor(image_processor=tiny_image_processor(config.vision_config.image_size), tokenizer=tokenizer)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return str(output_dir)
