"""Preference data from a model's own samples, and the measurements of preference tuning.

Introduced in week 4.4 (`week04/04_preference_tuning.ipynb`):

* `sample_completions(model, tok, conversations, k)`: k sampled replies per conversation, the prompt encoded once and
  its cache shared by the k samples (on a CPU the prompt, not the short replies, is most of the work);
* `preference_pairs(questions, samples)`: (chosen, rejected) pairs where a program says which reply is right, in the
  conversational format TRL's `DPOTrainer` reads;
* `completion_logps(model, tok, pairs, key)`: the summed log-probability of each reply given its prompt, the quantity
  DPO's loss and its implicit reward are made of;
* `mean_token_kl(model, reference, tok, pairs)`: how far a tuned model moved from its reference, per reply token.

The DPO loss itself is written out in the notebook, where it is checked against TRL's.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import torch

from .errors import ConfigError
from .tasks import final_number

__all__ = ["completion_logps", "mean_token_kl", "preference_pairs", "sample_completions"]


def _encode_prompts(tok, conversations: Sequence[list[dict]]):
    texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    side = tok.padding_side
    tok.padding_side = "left"  # replies are appended on the right
    try:
        return tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tok.padding_side = side


@torch.no_grad()
def _sample_batch(model, tok, conversations, k, max_new_tokens, temperature, top_p):
    from transformers import DynamicCache

    enc = _encode_prompts(tok, conversations).to(model.device)
    cache = DynamicCache(config=model.config)
    # Encode every prompt but its last token once, then copy the cache k times: the k samples share the prompt's work.
    model(input_ids=enc.input_ids[:, :-1], attention_mask=enc.attention_mask[:, :-1], past_key_values=cache,
          use_cache=True)
    cache.batch_repeat_interleave(k)
    # use_cache=True: a model fresh from a Trainer can have config.use_cache=False, which would recompute every step
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 else \
        dict(do_sample=False)
    out = model.generate(input_ids=enc.input_ids.repeat_interleave(k, 0),
                         attention_mask=enc.attention_mask.repeat_interleave(k, 0), past_key_values=cache,
                         max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, use_cache=True, **sampling)
    new = out[:, enc.input_ids.shape[1]:]
    stops = {tok.eos_token_id, *([model.generation_config.eos_token_id] if isinstance(
        model.generation_config.eos_token_id, int) else (model.generation_config.eos_token_id or []))}
    finished = [bool(any(int(t) in stops for t in row)) for row in new]
    texts = tok.batch_decode(new, skip_special_tokens=True)
    return [[{"text": texts[i * k + j].strip(), "finished": finished[i * k + j]} for j in range(k)]
            for i in range(len(conversations))]


def sample_completions(model, tok, conversations: Sequence[list[dict]], k: int = 4, max_new_tokens: int = 10,
                       temperature: float = 0.7, top_p: float = 0.95, batch_size: int = 16, seed: int = 0,
                       cache: str | Path | None = None, progress: bool = True) -> list[list[dict]]:
    """k replies per conversation: a list (one per conversation) of k dicts {"text", "finished"}.

    `finished` is True when the reply ended by itself within `max_new_tokens` (a reply cut off mid-sentence is False).
    `temperature=0` gives k copies of the greedy reply. Seeded with `seed`; with `cache` (a JSON file path) the
    samples are read from it when it exists and written to it otherwise, so a rerun gets the same data.
    """
    if k < 1 or max_new_tokens < 1 or batch_size < 1:
        raise ConfigError(f"k, max_new_tokens and batch_size must be at least 1 (got {k}, {max_new_tokens}, "
                          f"{batch_size}).")
    if cache is not None and Path(cache).exists():
        rows = json.loads(Path(cache).read_text(encoding="utf-8"))
        if len(rows) == len(conversations) and all(len(r) == k for r in rows):
            return rows
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    rows: list[list[dict]] = []
    starts = range(0, len(conversations), batch_size)
    for i in tqdm(starts, desc=f"sampling {k} replies per prompt", disable=not progress):
        rows += _sample_batch(model, tok, conversations[i:i + batch_size], k, max_new_tokens, temperature, top_p)
    model.train(was_training)
    if cache is not None:
        from .files import cache_path

        with cache_path(cache) as tmp:
            tmp.write_text(json.dumps(rows), encoding="utf-8")
    return rows


def preference_pairs(questions: Sequence[dict], samples: Sequence[list[dict]], conversation, per_question: int = 3,
                     finished_only: bool = True, seed: int = 0) -> list[dict]:
    """Pairs (chosen right, rejected wrong) from sampled replies, judged by `final_number(reply) == answer`.

    `questions` are dicts with an "answer"; `samples` come from `sample_completions`; `conversation(question)` gives
    the prompt messages. Duplicate replies count once; with `finished_only` replies cut off by the token budget are
    left out, so both sides of a pair are complete answers and the pair differs in being right, not in being
    finished. At most `per_question` pairs per question, drawn with `seed`. Each pair is a dict with "prompt",
    "chosen", "rejected" (message lists, TRL's conversational format) and "question" (the question's index).
    """
    if len(questions) != len(samples):
        raise ConfigError(f"{len(questions)} questions but {len(samples)} lists of samples: pass the samples of "
                          "exactly these questions, in order.")
    rng = random.Random(seed)
    pairs = []
    for index, (question, replies) in enumerate(zip(questions, samples)):
        texts = list(dict.fromkeys(r["text"] for r in replies if r["finished"] or not finished_only))
        right = [t for t in texts if final_number(t) == question["answer"]]
        wrong = [t for t in texts if final_number(t) != question["answer"]]
        combos = [(c, r) for c in right for r in wrong]
        rng.shuffle(combos)
        for chosen, rejected in combos[:per_question]:
            pairs.append({"prompt": conversation(question), "chosen": [{"role": "assistant", "content": chosen}],
                          "rejected": [{"role": "assistant", "content": rejected}], "question": index})
    return pairs


def _encode_pairs(tok, pairs: Sequence[dict], key: str):
    """Right-padded ids of prompt + reply, and a mask that is 1 on the reply's tokens (its end-of-turn included)."""
    ids, masks = [], []
    for p in pairs:
        prompt = tok.apply_chat_template(p["prompt"], tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(p["prompt"] + p[key], tokenize=False)
        if not full.startswith(prompt):
            raise ConfigError("The chat template does not extend the prompt with the reply; this model's template "
                              "is not supported here.")
        n_prompt = len(tok(prompt, add_special_tokens=False).input_ids)
        row = tok(full.rstrip("\n"), add_special_tokens=False).input_ids
        ids.append(row)
        masks.append([0] * n_prompt + [1] * (len(row) - n_prompt))
    width = max(len(r) for r in ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in ids])
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids])
    reply = torch.tensor([m + [0] * (width - len(m)) for m in masks])
    return input_ids, attention, reply


def _unique(pairs: Sequence[dict], key: str) -> tuple[list[dict], list[int]]:
    """The pairs with distinct (prompt, reply), and for each pair the index of its reply among them.

    Up to `per_question` pairs share one chosen reply; scoring it once saves a forward pass per repeat."""
    index: dict[str, int] = {}
    unique, where = [], []
    for p in pairs:
        ident = json.dumps([p["prompt"], p[key]], sort_keys=True)
        if ident not in index:
            index[ident] = len(unique)
            unique.append(p)
        where.append(index[ident])
    return unique, where


@torch.no_grad()
def completion_logps(model, tok, pairs: Sequence[dict], key: str = "chosen", batch_size: int = 16) -> torch.Tensor:
    """log p(reply | prompt) summed over the reply's tokens, one value per pair; `key` is "chosen" or "rejected"."""
    model.eval()
    unique, where = _unique(pairs, key)
    out = []
    for i in range(0, len(unique), batch_size):
        input_ids, attention, reply = _encode_pairs(tok, unique[i:i + batch_size], key)
        logits = model(input_ids=input_ids.to(model.device), attention_mask=attention.to(model.device)).logits
        logp = logits[:, :-1].float().log_softmax(-1).gather(-1, input_ids[:, 1:, None].to(model.device))[..., 0]
        out.append((logp * reply[:, 1:].to(logp.device)).sum(-1).cpu())
    return torch.cat(out)[where]


@torch.no_grad()
def mean_token_kl(model, reference, tok, pairs: Sequence[dict], key: str = "chosen", batch_size: int = 16) -> float:
    """KL(model || reference) of the next-token distributions, averaged over the reply tokens of `pairs`.

    0 for a model identical to its reference; it grows as tuning moves the model's predictions away from it. A reply
    shared by several pairs counts once.
    """
    model.eval()
    reference.eval()
    unique, _ = _unique(pairs, key)
    total, count = 0.0, 0
    for i in range(0, len(unique), batch_size):
        input_ids, attention, reply = _encode_pairs(tok, unique[i:i + batch_size], key)
        kwargs = dict(input_ids=input_ids.to(model.device), attention_mask=attention.to(model.device))
        keep = reply[:, 1:].bool().to(model.device)  # only the positions that predict a reply token: the vocabulary is
        p = model(**kwargs).logits[:, :-1][keep].float().log_softmax(-1)  # 49k wide, the rest would cost seconds
        q = reference(**kwargs).logits[:, :-1][keep].float().log_softmax(-1)
        total += float((p.exp() * (p - q)).sum())
        count += int(keep.sum())
    return total / max(count, 1)
