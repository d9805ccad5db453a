"""Each optional logger and integration has an extra that installs it (`pip install ldifs-hf[tensorboard]`)."""

import configparser
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_report_to_logger_we_name_has_an_extra():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    extras = {name: value.split() for name, value in config["options.extras_require"].items()}
    # `--report_to tensorboard` needs the tensorboard package, which transformers does not bring.
    assert any(r.startswith("tensorboard") for r in extras["tensorboard"])
    assert {"trl", "peft", "study", "deepspeed"} <= set(extras)
