"""The history-item adapter: starts as a no-op, trains, and enters beam search as prompt embeddings."""

import torch

from genrec.encoders.item_adapter import (
    ItemEmbeddingAdapter,
    attach_item_adapter,
    embed_with_items,
    find_item_adapter,
    item_table,
    prompt_extras,
)
from genrec.generation import ItemTrie, search
from genrec.testing import make_tiny_llm


def _model(tmp_path):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(make_tiny_llm(tmp_path / "m", hidden=32, layers=2)).eval()


def test_zero_initialised_adapter_changes_nothing_until_trained(tmp_path):
    model = _model(tmp_path)
    adapter = attach_item_adapter(model, torch.randn(10, 6))
    assert find_item_adapter(model) is adapter
    ids = torch.randint(5, 100, (2, 7))
    rows, pos, items = torch.tensor([0, 1]), torch.tensor([3, 6]), torch.tensor([4, 9])
    embeds = embed_with_items(model, ids, rows, pos, items, adapter)
    torch.testing.assert_close(model(inputs_embeds=embeds).logits, model(input_ids=ids).logits)
    opt = torch.optim.SGD(adapter.parameters(), lr=1.0)
    model(inputs_embeds=embed_with_items(model, ids, rows, pos, items, adapter)).logits[:, -1].sum().backward()
    opt.step()
    assert adapter.proj.weight.abs().sum() > 0  # the projection trains
    assert not adapter.table.requires_grad


def test_tables_are_standardised_and_streams_concatenated():
    tables = {"semantic": torch.randn(5, 3) * 10 + 4, "behavior": torch.randn(5, 2)}
    table = item_table(tables, ["semantic", "behavior"])
    assert table.shape == (5, 5)
    adapter = ItemEmbeddingAdapter(table, 8)
    torch.testing.assert_close(adapter.table.mean(0), torch.zeros(5), atol=1e-5, rtol=0)


def test_prompt_embeddings_in_beam_search_equal_a_manual_forward(tmp_path):
    model = _model(tmp_path)
    adapter = attach_item_adapter(model, torch.randn(10, 6))
    torch.nn.init.normal_(adapter.proj.weight, std=0.5)
    trie = ItemTrie.from_sequences([[20, 21], [20, 22], [23, 24]], eos_id=2, vocab_size=400)
    prompts = [[5, 6, 7, 8], [9, 10, 11]]
    items = [([1, 3], [4, 7]), ([2], [9])]
    extras = prompt_extras(adapter, [len(p) for p in prompts], items)
    plain = search(model, prompts, 3, 3, trie=trie)
    mixed = search(model, prompts, 3, 3, trie=trie, prompt_embeds=extras)
    assert not torch.equal(plain.scores, mixed.scores)
    # the best item's score of prompt 1 equals log P(tokens, EOS) from a manual forward
    best = mixed.seqs[1, 0][mixed.seqs[1, 0] >= 0].tolist()
    ids = torch.tensor([prompts[1] + best])
    embeds = model.get_input_embeddings()(ids)
    embeds[0, :3] += extras[1]
    with torch.no_grad():
        logp = torch.log_softmax(model(inputs_embeds=embeds).logits[0].float(), -1)
    manual = sum(float(logp[len(prompts[1]) - 1 + j, t]) for j, t in enumerate(best))
    assert abs(manual - float(mixed.scores[1, 0])) < 1e-4
    zero = prompt_extras(adapter, [len(p) for p in prompts], [([], []), ([], [])])
    torch.testing.assert_close(search(model, prompts, 3, 3, trie=trie, prompt_embeds=zero).scores, plain.scores)
