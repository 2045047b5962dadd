"""Dense supervision from a sequential teacher: its item distribution, marginalised onto each code level.

A generative recommender emits the next item's index one token per level (``<s0_12><b0_7>``). The
LM loss tells it only which token is right. A trained SASRec (``genrec baseline --model sasrec``)
knows how likely *every* item is after the same history. At each code position this term is the
KL divergence from the teacher's probability mass per child token — summed over the items below
that child, among the items that share the true prefix so far — to the student's softmax over
that level's tokens (teacher forcing, as the LM loss). Items whose index has no token at a level
(shorter indices) leave that level's mass out.

A SASRec scores the user's own items high (its item table is tied to its input embeddings): on the
Amazon sets it puts 29-45% of its mass on them, where no user ever takes an item twice. From
code level ``mask_from`` on, that mass goes to the other items (the target itself is never
masked), so the student learns which *new* item comes next; below it, the history's items still
say which clusters the user shops in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class CodeDistillation(nn.Module):
    """``forward(logits_fn, hidden, rows, pos, hist, targets) -> KL`` averaged over code positions.

    Args:
        teacher: a model with ``score(histories [T, L]) -> [T, N]`` (left-padded, ``-1`` = padding)
            and ``max_len``; frozen and kept in eval mode.
        item_token_ids: per item (``N`` of them), the token ids of its index, level by level.
        temperature: the teacher's softmax temperature (> 1 flattens it).
        exclude: ``[N]`` bool, items that get no teacher mass (the cold-start protocol's held-out
            items, which training must not know of).
        mask_from: the first code level at which the history's own items (other than the target)
            get no teacher mass (``None``: none; 0: every level).
    """

    def __init__(self, teacher: nn.Module, item_token_ids: Sequence[Sequence[int]], temperature: float = 1.0,
                 exclude: torch.Tensor | None = None, mask_from: int | None = None) -> None:
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature = temperature
        self.mask_from = mask_from
        self.register_buffer("exclude", None if exclude is None else torch.as_tensor(exclude, dtype=torch.bool),
                             persistent=False)
        width = max(len(ids) for ids in item_token_ids)
        index = torch.full((len(item_token_ids), width), -1, dtype=torch.long)  # [N, W] position in level tokens
        levels = []
        for level in range(width):
            tokens = sorted({ids[level] for ids in item_token_ids if len(ids) > level})
            where = {t: j for j, t in enumerate(tokens)}
            for i, ids in enumerate(item_token_ids):
                if len(ids) > level:
                    index[i, level] = where[ids[level]]
            levels.append(torch.tensor(tokens, dtype=torch.long))
        self.register_buffer("level_index", index, persistent=False)
        self.level_tokens = levels  # [V_l] token ids per level (moved with the inputs)

    def train(self, mode: bool = True) -> CodeDistillation:  # the teacher stays in eval mode
        super().train(mode)
        self.teacher.eval()
        return self

    @staticmethod
    def history_mask(hist: torch.Tensor, targets: torch.Tensor | None, num_items: int) -> torch.Tensor:
        """``[T, N]`` bool: the items of ``hist [T, L]`` (``-1`` padded) other than ``targets [T]``."""
        ok = (hist >= 0) & (hist < num_items)
        rows = torch.arange(len(hist), device=hist.device)[:, None].expand_as(hist)
        seen = torch.zeros((len(hist), num_items), dtype=torch.bool, device=hist.device)
        seen[rows[ok], hist[ok]] = True
        if targets is not None:
            seen[torch.arange(len(targets), device=seen.device), targets.to(seen.device)] = False
        return seen

    @torch.no_grad()
    def teacher_probs(self, hist: torch.Tensor) -> torch.Tensor:
        """Teacher next-item probabilities ``[T, N]`` for left-padded histories ``[T, L]``."""
        max_len = getattr(self.teacher, "max_len", hist.shape[1])
        scores = self.teacher.score(hist[:, -max_len:]).float()
        if self.exclude is not None:
            scores = scores.masked_fill(self.exclude.to(scores.device), float("-inf"))
        return F.softmax(scores / self.temperature, dim=-1)

    def forward(self, logits_fn: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, rows: torch.Tensor,
                pos: torch.Tensor, hist: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean KL over the code positions of the target items that have a history.

        ``hidden [B, L, H]`` final states; ``rows, pos [T]``: where the state predicting each
        target's first index token is; ``hist [T, Lh]`` the items before it (``-1`` padded; rows
        without history are skipped); ``targets [T]`` item indices; ``logits_fn`` the LM head.
        """
        keep = (hist >= 0).any(dim=1)
        if not bool(keep.any()):
            return hidden.sum() * 0.0
        rows, pos, hist, targets = rows[keep], pos[keep], hist[keep], targets[keep]
        device = hidden.device
        if self.level_index.device != device:
            self.to(device)
        index = self.level_index
        p = self.teacher_probs(hist.to(device))  # [T, N]
        seen = None if self.mask_from is None else self.history_mask(hist.to(device), targets.to(device), p.shape[1])
        same_prefix = torch.ones_like(p, dtype=torch.bool)
        total, count = hidden.new_zeros(()), 0
        for level, tokens in enumerate(self.level_tokens):
            col = index[:, level]  # [N]
            true = index[targets, level]  # [T]
            keep = same_prefix & (col >= 0)
            if seen is not None and level >= self.mask_from:  # renormalised below, as every level's mass
                keep = keep & ~seen
            mass = p * keep.to(p.dtype)
            q = torch.zeros(len(p), len(tokens), device=device, dtype=p.dtype)
            q.scatter_add_(1, col.clamp_min(0).expand_as(mass), mass)  # [T, V_l]
            z = q.sum(dim=1, keepdim=True)
            ok = (true >= 0) & (z.squeeze(1) > 0)
            if bool(ok.any()):
                q = q[ok] / z[ok]
                logp = F.log_softmax(logits_fn(hidden[rows[ok], pos[ok] + level]).float()[:, tokens.to(device)], -1)
                kl = (q * (torch.log(q.clamp_min(1e-12)) - logp)).sum(dim=1)  # [T_ok]
                total = total + kl.sum()
                count += int(ok.sum())
            same_prefix &= col.unsqueeze(0) == true.unsqueeze(1)
        return total / max(count, 1)
