"""Build the example causal LM offline: a Llama with random weights and a tokenizer of its own.

Nothing is downloaded. The tokenizer is a byte-level BPE trained on ``corpus.txt`` (bundled
here) and the weights come from ``LlamaForCausalLM``'s own initialisation under a fixed seed,
so a build reproduces the same folder. The output is what a Hugging Face model folder holds:
``config.json`` (a causal-LM architecture), ``model.safetensors``, ``generation_config.json``
and the tokenizer files with a chat template. Its text is nonsense, its contract is real:
djl serves it like any other folder of that shape.

    python examples/tinylm/build.py --out examples/tinylm/model
    python examples/tinylm/build.py --out /tmp/llm8 --layers 8 --hidden 512   # the bench's
"""

from __future__ import annotations

import argparse
from pathlib import Path

HERE = Path(__file__).resolve().parent
EOS = "<|endoftext|>"
#: Roles become plain text around each message; the assistant's turn is left open.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build(out: Path, *, layers: int, hidden: int, vocab: int, context: int, seed: int) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    out.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    bpe.train([str(HERE / "corpus.txt")], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=EOS, bos_token=EOS, pad_token=EOS,
        chat_template=CHAT_TEMPLATE, model_max_length=context,
    )
    tokenizer.save_pretrained(out)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    heads = max(1, hidden // 32)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2), max_position_embeddings=context,
        bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id)
    model.save_pretrained(out, safe_serialization=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "model")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    build(args.out, layers=args.layers, hidden=args.hidden, vocab=args.vocab,
          context=args.context, seed=args.seed)


if __name__ == "__main__":
    main()
