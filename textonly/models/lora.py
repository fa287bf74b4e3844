"""Where LoRA goes in every model of the study (embedded, LLaVA-NeXT, Qwen2-VL, hub ids): the
language model's q and v projections, with the projector trained in full."""

from __future__ import annotations

#: LoRA goes on the language model only (a bare name list would also hit the vision tower).
LORA_TARGET = r".*language_model.*\.(q_proj|v_proj)"
#: Trained in full next to the LoRA adapters, as the paper trains the projector
#: (LLaVA: ``multi_modal_projector``; Qwen2-VL: ``visual.merger``).
LORA_MODULES_TO_SAVE = ["multi_modal_projector", "merger"]


def lora_config(r: int = 8, alpha: int = 16, dropout: float = 0.0):
    """LoRA on the language model's attention (q, v) and the projector trained in full."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGET,
                      modules_to_save=LORA_MODULES_TO_SAVE, task_type="CAUSAL_LM")
