"""Instruction tasks that teach an LLM the item index language."""
