"""Evaluator mechanics: the next-token evaluator and its reusable pieces (``lm``)."""
