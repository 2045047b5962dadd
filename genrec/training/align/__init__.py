"""``genrec align``: preference alignment (DPO, GRPO through trl) of a finished genrec run."""
