"""The worked example's own test, as a user would write it in their project: the contract kit
runs on it the battery every built-in method passes."""

from pathlib import Path

import pytest

from cfrh_testing import check_method

HERE = Path(__file__).parent


@pytest.mark.slow
def test_my_method_keeps_the_contract(tmp_path):
    assert check_method(f"{HERE / 'my_method.py'}:PairedPCA", tmp_path, overrides={"epochs": 4}) == "pairedpca"
