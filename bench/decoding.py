"""Constrained decoding speed: ours vs HF generate, trie overhead, catalog and beam scaling.

    GENREC_CACHE=/tmp/gcache python bench/decoding.py            # SmolLM2-135M, full run
    python bench/decoding.py --tiny                                # a tiny random LLaMA, seconds

One model (item tokens <s0_*><s1_*><b0_*><b1_*>, 256 codes per level, added and given random
rows) and one set of seqrec prompts (chat template + summary token, 20 history items):

(a) ours vs HF ``generate(num_beams=B, prefix_allowed_tokens_fn=...)`` on the same batches,
    interleaved, with identical top-K asserted (swaps only between scores equal within 1e-4);
(b) ours constrained vs the same loop unconstrained (no trie) -> overhead %, plus the time of
    the trie operations alone per decoding step;
(c) latency per request (batch 1) vs catalog size (10k / 100k / 1M synthetic 4-token items) and
    vs beam size, with trie build time and memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genrec.generation import ItemFilter, ItemTrie
from genrec.generation.beam import beam_search, constrained_beam_search
from genrec.generation.hf_reference import PrefixTable, prefix_allowed_tokens_fn
from genrec.item_tokenizer.vocab import vocabulary
from genrec.tasks.collate import SUMMARY_TOKEN, prompt_ids
from genrec.tasks.prompts import TEMPLATES
from genrec.training.model import add_item_tokens, init_new_rows

K, LEVELS = 256, 4


def load(tiny: bool, name: str):
    from genrec.hub import load_causal_lm

    if tiny:
        from genrec.testing import make_tiny_llm

        name = str(make_tiny_llm(Path(tempfile.mkdtemp()) / "tiny", hidden=64, layers=2))
    model, tok = load_causal_lm(name)
    tokens = vocabulary([("s", [K, K]), ("b", [K, K])])
    ids = add_item_tokens(tok, tokens)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    init_new_rows(model, tok, ids, "random", seed=0)  # distinct rows: no artificial ties between items
    model.eval()
    return model, tok, ids[:-1]


def synthetic_codes(n: int, seed: int) -> np.ndarray:
    """``[n, 4]`` distinct random codes in ``[0, 256)``."""
    rng = np.random.default_rng(seed)
    codes = np.unique(rng.integers(0, K, size=(n, LEVELS)), axis=0)
    while len(codes) < n:
        codes = np.unique(np.vstack([codes, rng.integers(0, K, size=(n - len(codes), LEVELS))]), axis=0)
    return codes[rng.permutation(len(codes))[:n]]


def token_seqs(codes: np.ndarray, item_ids: list[int]) -> list[list[int]]:
    table = np.asarray(item_ids).reshape(LEVELS, K)
    return table[np.arange(LEVELS), codes].tolist()


def make_prompts(tok, codes: np.ndarray, n: int, history: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    summary = tok.convert_tokens_to_ids(SUMMARY_TOKEN)
    names = ("s0", "s1", "b0", "b1")
    out = []
    for _ in range(n):
        hist = rng.choice(len(codes), size=int(rng.integers(history // 2, history + 1)), replace=False)
        text = ", ".join("".join(f"<{names[j]}_{c}>" for j, c in enumerate(codes[i])) for i in hist)
        out.append(prompt_ids(tok, TEMPLATES["seqrec"][0].format(history=text), summary, 512))
    return out


def timed(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), seconds)``."""
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def hf_generate(model, tok, batch, table, num_beams, depth):
    """HF beam search with the equivalent settings; ``[(item, score)]`` per prompt."""
    width = max(map(len, batch))
    ids = torch.full((len(batch), width), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for b, p in enumerate(batch):
        ids[b, width - len(p):], mask[b, width - len(p):] = torch.tensor(p), 1
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=mask, num_beams=num_beams, num_return_sequences=num_beams,
                             do_sample=False, length_penalty=0.0, early_stopping="never", max_new_tokens=depth,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                             prefix_allowed_tokens_fn=prefix_allowed_tokens_fn(table, width),
                             output_scores=True, return_dict_in_generate=True)
    res = []
    for b in range(len(batch)):
        rows = range(b * num_beams, (b + 1) * num_beams)
        res.append([(table.item(out.sequences[r, width:].tolist()), float(out.sequences_scores[r])) for r in rows])
    return res


def compare(ours, hf, k: int, tol: float = 1e-4) -> tuple[int, float]:
    """Assert equal top-k (positions may swap only between scores within ``tol``); ``(swaps, max |diff|)``."""
    swaps, diff = 0, 0.0
    for got, want in zip(ours, hf):
        want = want[:k]
        assert len(got) == len(want) == k, (len(got), len(want))
        for (gi, gs), (wi, ws) in zip(got, want):
            diff = max(diff, abs(gs - ws))
            if gi != wi:
                swaps += 1
                assert abs(gs - ws) < tol, f"top-k differs: ours {got} vs HF {want}"
        assert {i for i, _ in got} == {i for i, _ in want} or swaps, f"top-k differs: ours {got} vs HF {want}"
    assert diff < 1e-3, f"scores differ by {diff}"
    return swaps, diff


def part_a(model, tok, prompts, seqs, args) -> dict:
    trie = ItemTrie.from_sequences(seqs, tok.eos_token_id, len(tok))
    table = PrefixTable(seqs, tok.eos_token_id)
    batches = [prompts[i:i + args.batch] for i in range(0, len(prompts), args.batch)]
    constrained_beam_search(model, batches[0][:1], trie, args.beams, args.k)  # warm-up
    hf_generate(model, tok, batches[0][:1], table, args.beams, trie.depth)
    t_ours = t_hf = 0.0
    swaps, diff = 0, 0.0
    for batch in batches:
        ours, dt = timed(constrained_beam_search, model, batch, trie, args.beams, args.k)
        t_ours += dt
        hf, dt = timed(hf_generate, model, tok, batch, table, args.beams, trie.depth)
        t_hf += dt
        s, d = compare(ours, hf, args.k)
        swaps, diff = swaps + s, max(diff, d)
    n = len(prompts)
    return {"items": len(seqs), "prompts": n, "batch": args.batch, "beams": args.beams, "k": args.k,
            "ours_s": t_ours, "hf_s": t_hf, "ours_req_per_s": n / t_ours, "hf_req_per_s": n / t_hf,
            "speedup": t_hf / t_ours, "tie_swaps": swaps, "max_score_diff": diff}


def trie_step_ms(trie: ItemTrie, batch: int, beams: int, vocab: int, reps: int = 200) -> float:
    """Mean time of one step's candidate work at depth 1 (trie children, gather of log-probs, top-2B
    per prompt) for ``batch x beams`` rows."""
    rows = batch * beams
    gen = torch.Generator().manual_seed(0)
    nodes = torch.randint(1, 1 + trie.max_degree[0], (rows,), generator=gen)
    logp = torch.randn(rows, vocab, generator=gen)
    t = time.perf_counter()
    for _ in range(reps):
        tok, _, valid = trie.children(nodes, depth=1)
        logp.gather(1, tok).masked_fill(~valid, float("-inf")).view(batch, -1).topk(2 * beams)
    return (time.perf_counter() - t) / reps * 1e3


def part_b(model, tok, prompts, seqs, args) -> dict:
    trie = ItemTrie.from_sequences(seqs, tok.eos_token_id, len(tok))
    batches = [prompts[i:i + args.batch] for i in range(0, len(prompts), args.batch)]
    beam_search(model, batches[0][:1], tok.eos_token_id, trie.depth, args.beams, args.k)  # warm-up
    con, unc = [], []
    for _ in range(args.repeats):
        for batch in batches:
            con.append(timed(constrained_beam_search, model, batch, trie, args.beams, args.k)[1])
            unc.append(timed(beam_search, model, batch, tok.eos_token_id, trie.depth, args.beams,
                             args.k)[1])
    c, u = sum(con), sum(unc)
    return {"constrained_s": c, "unconstrained_s": u, "overhead_pct": (c - u) / u * 100,
            "trie_step_ms": trie_step_ms(trie, args.batch, args.beams, model.config.vocab_size)}


def part_c(model, tok, prompts, item_ids, args) -> dict:
    out = {"catalog": [], "beams": []}
    prompts = prompts[:args.latency_prompts]
    tries = {}
    for n in args.catalogs:
        seqs = token_seqs(synthetic_codes(n, args.seed + n), item_ids)
        trie, build = timed(ItemTrie.from_sequences, seqs, tok.eos_token_id, len(tok))
        del seqs
        constrained_beam_search(model, prompts[:1], trie, args.beams, args.k)
        lat = [timed(constrained_beam_search, model, [p], trie, args.beams, args.k)[1]
               for _ in range(args.repeats) for p in prompts]
        seen = torch.randint(0, n, (args.history,), generator=torch.Generator().manual_seed(n))
        keep = torch.ones(n, dtype=torch.bool)
        keep[seen] = False
        excl = min(timed(trie.node_mask_excluding, seen)[1] for _ in range(5))
        full = min(timed(trie.node_mask, keep)[1] for _ in range(5))
        flt = [timed(constrained_beam_search, model, [p], trie, args.beams, args.k,
                     filters=ItemFilter(exclude=seen.tolist()))[1]
               for _ in range(args.repeats) for p in prompts]
        out["catalog"].append({"items": n, "nodes": trie.num_nodes, "trie_mb": trie.nbytes() / 2**20,
                               "build_s": build, "latency_ms": statistics.median(lat) * 1e3,
                               "filtered_latency_ms": statistics.median(flt) * 1e3,
                               "exclude_mask_ms": excl * 1e3, "item_mask_ms": full * 1e3})
        print(f"  catalog {n:>8}: {out['catalog'][-1]}", flush=True)
        tries[n] = trie
    trie = tries[max(tries)]
    for nb in args.beam_sizes:
        k = min(args.k, nb)
        constrained_beam_search(model, prompts[:1], trie, nb, k)
        lat = [timed(constrained_beam_search, model, [p], trie, nb, k)[1]
               for _ in range(args.repeats) for p in prompts]
        out["beams"].append({"items": trie.num_items, "beams": nb, "k": k,
                             "latency_ms": statistics.median(lat) * 1e3})
        print(f"  beams {nb:>3}: {out['beams'][-1]}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny random LLaMA instead of SmolLM2-135M")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--beams", type=int, default=20)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--history", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2, help="passes over the prompts in (b) and (c)")
    ap.add_argument("--catalogs", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--beam-sizes", type=int, nargs="+", default=[5, 10, 20, 50])
    ap.add_argument("--latency-prompts", type=int, default=2, help="prompts timed one by one in (c)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; on a CPU shared with other jobs, 2+ threads make every parallel op wait "
                         "for a descheduled thread (~30 ms each), which swamps what is being measured")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c"],
                    help="which parts to run (default all)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    load_avg = os.getloadavg()
    model, tok, item_ids = load(args.tiny, args.model)
    codes = synthetic_codes(args.catalogs[0], args.seed)
    seqs = token_seqs(codes, item_ids)
    prompts = make_prompts(tok, codes, args.prompts, args.history, args.seed)
    lens = [len(p) for p in prompts]
    print(f"model {'tiny' if args.tiny else args.model} | {torch.get_num_threads()} threads, {os.cpu_count()} cpus, "
          f"load avg {load_avg[0]:.1f} | prompts {len(prompts)} of {min(lens)}-{max(lens)} tokens", flush=True)
    res: dict = {"load_avg_before": load_avg[0], "threads": torch.get_num_threads()}
    if "a" in args.parts:
        res["a"] = part_a(model, tok, prompts, seqs, args)
        print("(a)", res["a"], flush=True)
    if "b" in args.parts:
        res["b"] = part_b(model, tok, prompts, seqs, args)
        print("(b)", res["b"], flush=True)
    if "c" in args.parts:
        res["c"] = part_c(model, tok, prompts, item_ids, args)
    if "a" in res:
        a = res["a"]
        print(f"\n(a) {a['items']} items, beam {a['beams']}, top-{a['k']}, batch {a['batch']}, {a['prompts']} prompts")
        print(f"    {'':28}{'req/s':>10}{'seconds':>10}")
        print(f"    {'genrec constrained_beam':28}{a['ours_req_per_s']:>10.3f}{a['ours_s']:>10.2f}")
        print(f"    {'HF generate + prefix fn':28}{a['hf_req_per_s']:>10.3f}{a['hf_s']:>10.2f}")
        print(f"    speed-up {a['speedup']:.2f}x; identical top-{a['k']} (tie swaps {a['tie_swaps']}, "
              f"max score diff {a['max_score_diff']:.1e})")
    if "b" in res:
        b = res["b"]
        print(f"(b) constrained {b['constrained_s']:.2f} s vs unconstrained {b['unconstrained_s']:.2f} s: "
              f"overhead {b['overhead_pct']:+.1f}%; trie ops {b['trie_step_ms']:.3f} ms per step")
    if "c" not in res:
        print(f"load avg after: {os.getloadavg()[0]:.1f}")
        if args.json:
            args.json.write_text(json.dumps(res, indent=2))
        return
    print(f"(c) {'items':>9}{'nodes':>10}{'trie MB':>9}{'build s':>9}{'latency ms':>12}{'+exclude ms':>13}"
          f"{'excl mask ms':>14}{'item mask ms':>14}")
    for r in res["c"]["catalog"]:
        print(f"    {r['items']:>9}{r['nodes']:>10}{r['trie_mb']:>9.1f}{r['build_s']:>9.2f}{r['latency_ms']:>12.1f}"
              f"{r['filtered_latency_ms']:>13.1f}{r['exclude_mask_ms']:>14.2f}{r['item_mask_ms']:>14.2f}")
    print(f"    {'beams':>9}{'k':>10}{'latency ms':>12}   ({res['c']['beams'][0]['items']} items)")
    for r in res["c"]["beams"]:
        print(f"    {r['beams']:>9}{r['k']:>10}{r['latency_ms']:>12.1f}")
    print(f"load avg after: {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
