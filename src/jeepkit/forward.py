"""Forward passes that compute LM-head logits only where they are scored.

The LM head is the largest matrix of a small model (49k x 576 for SmolLM2); applying it at every
position of a padded batch wastes most of an evaluation's time. These helpers run the decoder
once and project only the requested (row, position) pairs.
"""

from __future__ import annotations

import torch
from torch import nn


def final_hidden(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Last hidden state after the final norm (what the LM head reads)."""
    out = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out.last_hidden_state


def logits_at(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Logits (len(rows) x vocab) at positions (rows[i], cols[i]) only."""
    h = final_hidden(model, input_ids, attention_mask)
    return model.get_output_embeddings()(h[rows.to(h.device), cols.to(h.device)]).float()
