"""The study core: convert a dataset to its text-only twin, fine-tune, evaluate."""
