"""The model organism: synthetic worlds, a CLIP encoder pretrained on its own, and the staged pretraining of the embedded VLM."""
