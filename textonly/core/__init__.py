"""The ground every stage stands on: errors, paths, files, prompts, statistics, FLOPs, energy, memory, provenance."""
