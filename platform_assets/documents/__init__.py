"""Semi-structured records kept as documents (the document store), beside their typed lake tables."""
