"""The concept-forgetting metric's `evaluate` module (`concept_forgetting.py`, loaded by path): a package, so that
setuptools installs it with the code."""
