"""`edgeship compile`: one PyTorch model in, verified artifacts for every engine out."""
