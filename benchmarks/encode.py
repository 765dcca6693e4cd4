"""Encoding throughput: our path against a naive loop and against the bare model forward.

Catalogs: MovieLens-100K (short titles and genres) and a synthetic catalog whose descriptions
have 10 to 300 words. For each, in the same process and on the same device:

- ours: `ItemTextEncoder` (tokenize once, length-sorted batches under a token budget,
  dynamic padding, inference mode, bf16 autocast on CUDA); `items_per_s` is a whole
  `encode()` call;
- naive: texts in catalog order, every batch padded to max_length, same batch size;
- bare forward: only `model(input_ids, attention_mask)` over our own padded batches, already
  on the device, so `overhead` is what tokenizing, padding, pooling and copying cost on top.

The ratios come from one run in which the three take turns batch by batch, so load from
other processes on a shared machine falls on all of them alike.

On a CPU it also compares precisions on the synthetic catalog (`int8_vs_fp32`): an fp32 and
an int8 encoder (and, with --bf16, bf16 autocast) run the same padded batches in turns;
items/s of each, the ratio, and the minimum and mean cosine between int8 and fp32 vectors.

Prints one JSON line. Goals from the issues: speedup_vs_naive >= 1.5, overhead <= 0.10;
int8: min cosine to fp32 >= 0.99.

    python benchmarks/encode.py                                  # CPU, ~8 minutes on 2 cores
    python benchmarks/encode.py --int8-only --bf16               # precisions only, ~2 minutes
    python benchmarks/encode.py --device cuda --precision bf16   # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import polars as pl
import torch

from recsys_core.context import RunContext
from recsys_core.data.sources import SourceSpec
from recsys_core.data.synth import SynthConfig, synth_items
from recsys_core.encoders import ItemTextEncoder, build_item_text
from recsys_core.encoders.item_text_encoder import quantize_int8

# the tiny size the tests run (tests/test_benchmarks.py)
TINY_ARGS = ["--ml100k-items", "32", "--synthetic-items", "32", "--naive-items", "32",
             "--repeat", "1", "--max-length", "64"]  # fmt: skip


def ml100k_texts() -> list[str]:
    """The canonical item texts the pipeline encodes, from the bundled ML-100K catalog."""
    import tempfile
    from pathlib import Path

    from recsys_core.pipeline import ingest
    from recsys_core.storage import Lake

    with tempfile.TemporaryDirectory() as tmp:
        lake = Lake(Path(tmp) / "lake")
        ingest(RunContext.of(lake.root), SourceSpec())
        return lake.read("items", ["item_id", "text"]).sort("item_id")["text"].to_list()


def synthetic_texts(items: int) -> list[str]:
    raw = synth_items(SynthConfig(items=items, min_words=10, max_words=300, seed=7))
    catalog = raw.with_columns(
        categories=pl.concat_list(pl.col("categories")),
        attributes=pl.lit([], dtype=pl.List(pl.Struct({"name": pl.String, "value": pl.String}))),
    )
    return build_item_text(catalog)["text"].to_list()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_encode(encoder: ItemTextEncoder, texts: list[str]) -> float:
    """The whole path as the pipeline calls it."""
    sync(encoder.device)
    start = time.perf_counter()
    encoder.encode(texts)
    sync(encoder.device)
    return time.perf_counter() - start


class Clock:
    """Accumulates the wall time of timed blocks (device work included)."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, 0.0

    def __enter__(self) -> Clock:
        sync(self.device)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        self.seconds += time.perf_counter() - self.start


def compare(encoder: ItemTextEncoder, texts: list[str], sample: np.ndarray) -> dict:
    """Ours, bare forward and naive, interleaved batch by batch.

    The three run in turns of a few seconds, whichever is furthest behind going next, so
    load from other processes on a shared machine falls on all of them alike.

    - ours: tokenize once, then per length-sorted batch: pad, forward, pool, copy to host;
    - bare: `model(input_ids, attention_mask)` alone on the same padded batches;
    - naive: the sample in catalog order, tokenized per batch with padding to max_length.
    """
    ours, bare, naive = (Clock(encoder.device) for _ in range(3))
    with ours:
        ids, _ = encoder.tokenize(texts)
    batches = encoder.batches(ids)
    naive_texts = [texts[i] for i in sample]
    naive_starts = list(range(0, len(naive_texts), encoder.batch_size))
    ours_vectors = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    naive_vectors = []
    done_ours = done_naive = 0
    while done_ours < len(batches) or done_naive < len(naive_starts):
        ours_behind = done_ours / max(len(batches), 1) <= done_naive / max(len(naive_starts), 1)
        if done_ours < len(batches) and (ours_behind or done_naive == len(naive_starts)):
            batch = batches[done_ours]
            with ours:
                vectors = encoder.forward(*encoder.pad([ids[i] for i in batch]))
                ours_vectors[batch] = vectors.cpu().numpy()
            padded = encoder.pad([ids[i] for i in batch])
            with bare, torch.inference_mode(), encoder.autocast():
                encoder.model(input_ids=padded[0], attention_mask=padded[1])
            done_ours += 1
        else:
            first = naive_starts[done_naive]
            with naive, torch.inference_mode():
                inputs = encoder.tokenizer(
                    naive_texts[first : first + encoder.batch_size], padding="max_length",
                    truncation=True, max_length=encoder.max_length, return_tensors="pt",
                ).to(encoder.device)  # fmt: skip
                vectors = encoder.forward(inputs["input_ids"], inputs["attention_mask"])
                naive_vectors.append(vectors.cpu().numpy())
            done_naive += 1
    return {
        "ours_seconds": ours.seconds,
        "bare_seconds": bare.seconds,
        "naive_seconds": naive.seconds,
        "max_abs_diff": float(np.abs(ours_vectors[sample] - np.concatenate(naive_vectors)).max()),
    }


def measure(encoder: ItemTextEncoder, texts: list[str], naive_items: int, repeat: int) -> dict:
    encoder.encode(texts[: 2 * encoder.batch_size])  # warm-up: kernels, allocator, caches
    # every naive batch is padded to max_length, so its cost per text does not depend on which
    # texts it gets: a random sample measures its rate and saves minutes
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(len(texts), size=min(naive_items or len(texts), len(texts)),
                                replace=False))  # fmt: skip
    encode_seconds = min(time_encode(encoder, texts) for _ in range(repeat))
    paired = compare(encoder, texts, sample)
    ids, truncated = encoder.tokenize(texts)
    lengths = np.array([len(row) for row in ids])
    padded = sum(len(b) * lengths[b[0]] for b in encoder.batches(ids))
    ours_rate = len(texts) / paired["ours_seconds"]
    naive_rate = len(sample) / paired["naive_seconds"]
    return {
        "items": len(texts),
        "mean_tokens": round(float(lengths.mean()), 1),
        "max_tokens": int(lengths.max()),
        "truncated": int(truncated.sum()),
        "items_per_s": round(len(texts) / encode_seconds, 1),  # encode(), best of `repeat`
        "interleaved_items_per_s": round(ours_rate, 1),
        "naive_items_per_s": round(naive_rate, 1),
        "naive_items": len(sample),
        "speedup_vs_naive": round(ours_rate / naive_rate, 2),
        "bare_forward_items_per_s": round(len(texts) / paired["bare_seconds"], 1),
        "overhead_vs_bare_forward": round(paired["ours_seconds"] / paired["bare_seconds"] - 1, 3),
        "padding_efficiency": round(float(lengths.sum() / padded), 3),
        # tokens the naive loop computes per token we compute: the bound on the speedup that
        # padding alone can give (attention grows faster than linearly, so a bit more)
        "naive_tokens_over_ours": round(len(texts) * encoder.max_length / float(padded), 2),
        "max_abs_diff_vs_naive": paired["max_abs_diff"],
    }


def compare_precisions(
    texts: list[str], *, encoder: str | None, max_length: int, batch_size: int | None,
    bf16: bool,
) -> dict:  # fmt: skip
    """fp32 against int8 (and bf16 autocast) on the CPU, on the same padded batches in turns.

    Each batch runs under every precision before the next batch starts, in an order that
    rotates, so load from other processes falls on all of them alike.
    """
    made = {
        precision: ItemTextEncoder(
            encoder, max_length=max_length, batch_size=batch_size, device="cpu", precision=precision
        )
        for precision in ("fp32", "int8", *(("bf16",) if bf16 else ()))
    }
    fp32 = made["fp32"]
    start = time.perf_counter()
    quantize_int8(fp32.model)  # what loading an int8 encoder adds, once per shard
    quantize_seconds = time.perf_counter() - start
    ids, _ = fp32.tokenize(texts)
    batches = fp32.batches(ids)
    vectors = {name: np.zeros((len(texts), fp32.dim), dtype=np.float32) for name in made}
    seconds = dict.fromkeys(made, 0.0)
    names = list(made)
    for name in names:  # warm-up: kernels, allocator, packed weights
        made[name].forward(*made[name].pad([ids[i] for i in batches[0]]))
    for turn, batch in enumerate(batches):
        rows = [ids[i] for i in batch]
        for name in names[turn % len(names) :] + names[: turn % len(names)]:
            start = time.perf_counter()
            out = made[name].forward(*made[name].pad(rows))  # (B, D)
            seconds[name] += time.perf_counter() - start
            vectors[name][batch] = out.numpy()
    figures: dict = {
        "items": len(texts),
        "torch_threads": torch.get_num_threads(),
        "encoder_ids": {name: made[name].encoder_id for name in made},
        "int8_quantize_seconds": round(quantize_seconds, 2),
    }
    for name in made:
        figures[f"{name}_items_per_s"] = round(len(texts) / seconds[name], 1)
    for name in names[1:]:
        cosine = (vectors["fp32"] * vectors[name]).sum(axis=1)
        figures[f"{name}_speedup_vs_fp32"] = round(seconds["fp32"] / seconds[name], 2)
        figures[f"{name}_min_cosine"] = round(float(cosine.min()), 5)
        figures[f"{name}_mean_cosine"] = round(float(cosine.mean()), 5)
        figures[f"{name}_p01_cosine"] = round(float(np.quantile(cosine, 0.01)), 5)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16")
    parser.add_argument("--encoder", default=None, help="model id or folder (default MiniLM)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: per device")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--synthetic-items", type=int, default=1000)
    parser.add_argument(
        "--ml100k-items", type=int, default=0, help="the first N ML-100K items (0 = all 1,682)"
    )
    parser.add_argument("--naive-items", type=int, default=640,
                        help="random texts the naive loop runs per catalog (0 = all)")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=2, help="best of N for items_per_s")
    parser.add_argument(
        "--int8-only",
        action="store_true",
        help="only compare fp32 and int8 on the synthetic catalog (CPU)",
    )
    parser.add_argument(
        "--bf16", action="store_true", help="also time bf16 autocast in the precision comparison"
    )
    args = parser.parse_args()
    if args.int8_only:
        figures = {"benchmark": "encode-precision"}
        figures["int8_vs_fp32"] = compare_precisions(
            synthetic_texts(args.synthetic_items), encoder=args.encoder,
            max_length=args.max_length, batch_size=args.batch_size, bf16=args.bf16,
        )  # fmt: skip
        figures["goals_met"] = {
            "int8_min_cosine>=0.99": figures["int8_vs_fp32"]["int8_min_cosine"] >= 0.99
        }
        print(json.dumps(figures))
        return

    encoder = ItemTextEncoder(
        args.encoder, max_length=args.max_length, batch_size=args.batch_size,
        device=args.device, precision=args.precision,
    )  # fmt: skip
    figures = {
        "benchmark": "encode",
        "device": str(encoder.device),
        "device_name": torch.cuda.get_device_name(encoder.device)
        if encoder.device.type == "cuda" else "cpu",
        "precision": str(encoder.autocast_dtype or torch.float32).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(),
        "encoder": encoder.encoder_id,
        "max_length": encoder.max_length,
        "batch_size": encoder.batch_size,
        "max_batch_tokens": encoder.max_batch_tokens,
    }  # fmt: skip
    texts = ml100k_texts()
    texts = texts[: args.ml100k_items] if args.ml100k_items else texts
    figures["ml100k"] = measure(encoder, texts, args.naive_items, args.repeat)
    figures["synthetic_10_300_words"] = measure(
        encoder, synthetic_texts(args.synthetic_items), args.naive_items, args.repeat
    )
    catalogs = (figures["ml100k"], figures["synthetic_10_300_words"])
    figures["goals_met"] = {
        "speedup_vs_naive>=1.5": all(c["speedup_vs_naive"] >= 1.5 for c in catalogs),
        "overhead_vs_bare_forward<=0.10": all(
            c["overhead_vs_bare_forward"] <= 0.10 for c in catalogs
        ),
    }
    if encoder.device.type == "cpu":
        figures["int8_vs_fp32"] = compare_precisions(
            synthetic_texts(args.synthetic_items), encoder=args.encoder,
            max_length=args.max_length, batch_size=args.batch_size, bf16=args.bf16,
        )  # fmt: skip
        figures["goals_met"]["int8_min_cosine>=0.99"] = (
            figures["int8_vs_fp32"]["int8_min_cosine"] >= 0.99
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
