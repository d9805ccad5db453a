"""Packaging: each optional logger and integration has an extra that installs it (`pip install ldifs-hf[tensorboard]`),
the dependency range refuses what breaks the toolkit, and building the package prints no setuptools warning box."""

import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import requires, version

from packaging.requirements import Requirement

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_report_to_logger_we_name_has_an_extra():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    extras = {name: value.split() for name, value in config["options.extras_require"].items()}
    # `--report_to tensorboard` needs the tensorboard package, which transformers does not bring.
    assert any(r.startswith("tensorboard") for r in extras["tensorboard"])
    assert {"trl", "peft", "study", "deepspeed"} <= set(extras)


def _transformers_requirement(lines) -> Requirement:
    found = [Requirement(line) for line in lines if line.strip() and not line.strip().startswith("#")]
    return next(r for r in found if r.name == "transformers" and not r.marker)


def test_the_installed_requirements_refuse_the_transformers_releases_that_break_ldifs():
    # transformers 5.0 and 5.1 return no hidden states from CLIP's vision tower with output_hidden_states=True
    # (transformers PR #43657): every LDIFS run would stop at step 1. Measured: 5.0.0 and 5.1.0 give None, 5.2.0 the
    # 1 + L states.
    installed = _transformers_requirement(requires("ldifs_hf")).specifier
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    declared = _transformers_requirement(config["options"]["install_requires"].splitlines()).specifier
    assert installed == declared, "the installed metadata is older than setup.cfg: reinstall (pip install -e .)"
    for broken in ("5.0.0", "5.0.3", "5.1.0", "5.1.9"):
        assert not installed.contains(broken, prereleases=True), broken
    for fine in ("4.46.0", "4.57.6", "5.2.0", version("transformers")):
        assert installed.contains(fine, prereleases=True), fine


def test_building_the_package_prints_no_setuptools_box(tmp_path):
    # What pip runs for `pip install -e .` and `pip install .`, on a copy of the sources (the build writes build/).
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.py", "setup.cfg", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    shutil.copytree(os.path.join(ROOT, "ldifs_hf"), source / "ldifs_hf", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = {}
    for hook in ("build_editable", "build_wheel"):
        out = tmp_path / hook
        done = subprocess.run([sys.executable, "-c", f"import setuptools.build_meta as b, sys; print(b.{hook}(sys.argv[1]))", str(out)],
                              cwd=source, capture_output=True, text=True, timeout=300)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert "!!" not in output and "****" not in output and "Warning:" not in output, output
        wheels[hook] = out / done.stdout.strip().splitlines()[-1]
    wheel = wheels["build_wheel"]
    assert "ldifs_hf/metrics/concept_forgetting/concept_forgetting.py" in zipfile.ZipFile(wheel).namelist()
