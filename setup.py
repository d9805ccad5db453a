import warnings

from setuptools import setup

# Metadata and dependencies live in setup.cfg.
# setuptools' notice on every flat-layout editable install ("Editable installation ... folders in your working
# directory with the same name as your package may take precedence"): the working directory holding ldifs_hf
# is what an editable install points at, so the notice says nothing about this project.
try:
    from setuptools.warnings import InformationOnly
except ImportError:  # setuptools < 67 has neither the class nor the notice
    pass
else:
    warnings.filterwarnings("ignore", message=r"\s*Editable installation\.", category=InformationOnly)

setup()
