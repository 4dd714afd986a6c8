"""Each config field is documented once, in its class's ``Attributes:`` section, which the API reference renders."""

import dataclasses
import re

import pytest

from fvae_asr import FVAELoRAConfig, LoRAConfig


@pytest.mark.parametrize("config_class", [LoRAConfig, FVAELoRAConfig])
def test_every_field_is_in_the_attributes_section(config_class):
    section = config_class.__doc__.split("Attributes:\n", 1)[1]
    documented = re.findall(r"^ {8}(\w+): \S", section, flags=re.MULTILINE)
    assert documented == [field.name for field in dataclasses.fields(config_class)]
