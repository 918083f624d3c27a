from __future__ import annotations

import pytest

from medveil.errors import ConfigError, UnknownNameError
from medveil.schemes import available_schemes, create
from medveil.schemes.base import Scheme, register


def test_plain_is_registered_and_listed_first():
    names = available_schemes()
    assert names[0] == "plain" and "intensity_lut" in names


def test_unknown_name_suggests_the_nearest():
    with pytest.raises(UnknownNameError, match="Did you mean 'plain'"):
        create("plian")


def test_bad_parameters_are_a_config_error():
    with pytest.raises(ConfigError, match="intensity_lut"):
        create("intensity_lut", colour=3)
    with pytest.raises(ConfigError, match="levels"):
        create("intensity_lut", levels=1)


def test_duplicate_registration_is_refused():
    class Twin(Scheme):
        name = "plain"

        def _protect(self, images, *, key):
            return images

    with pytest.raises(ValueError, match="already registered"):
        register(Twin)
