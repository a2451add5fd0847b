"""Grouping face embeddings into identities: exact k-NN and single-linkage forests computed block by block,
ToMATo (persistence-based clustering), single and average linkage (docs/method.md §7)."""
