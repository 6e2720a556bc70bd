"""Models: loading (HF dir / hub id / GGUF / config), students built from teachers, feature capture, projections."""
