"""item_tokenizer."""
