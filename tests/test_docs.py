"""The READMEs document every setting, in both languages."""

from __future__ import annotations

import pytest

from relay.settings import env_name, settings_fields
from tests.support import REPO


@pytest.mark.parametrize("readme", ["README.md", "README.id.md"])
def test_readme_lists_every_setting(readme):
    text = (REPO / readme).read_text()

    missing = [env_name(name) for name, *_ in settings_fields() if f"`{env_name(name)}`" not in text]

    assert missing == []
