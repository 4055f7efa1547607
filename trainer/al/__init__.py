"""Active-learning cycles and the paper's experiments (SPEC.md §2a): docs/experiments.md."""
