"""A study config expanded into steps, run through papermill, and collected into tables."""
