"""Models of every kind: one loader (local or hub), tiny hub architectures, the paper's 7B configs, LoRA placement, scoring."""
