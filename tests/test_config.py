import pytest

from evaluation.config import ConfigError, load_config, parse_config
from tests.conftest import PILOT_CONFIG


def test_demo_config_loads(pilot_cfg):
    assert len(pilot_cfg.pilot_codes) == 5
    assert len(pilot_cfg.forces) - len(pilot_cfg.pilot_codes) == 8
    assert len({f.go_live for f in pilot_cfg.forces if f.arm == "pilot"}) == 5  # staggered
    assert len(pilot_cfg.sha256) == 64


def _with(replace_from: str, replace_to: str) -> str:
    text = PILOT_CONFIG.read_text()
    assert replace_from in text
    return text.replace(replace_from, replace_to, 1)


@pytest.mark.parametrize(
    "old,new,expected",
    [
        ("  weighting: iptw_att", "  weighting: iptw_attt", "analysis.weighting"),
        ("  min_cell: 10", "  min_cel: 10", "disclosure.min_cel: unknown key"),
        ("    - age\n", "    - shoe_size\n", "unknown covariates"),
        ("arm: pilot, go_live: 2024-04-01", "arm: pilot, go_live: 2030-04-01", "go_live"),
        ("{code: BRK", "{code: ASH", "unique"),
        ("  follow_up_days: 730", "  follow_up_days: -1", "analysis.follow_up_days"),
        ("  data_cutoff: 2026-09-30", "  data_cutoff: 2027-09-30", "data_cutoff <= extract_date"),
    ],
)
def test_wrong_key_or_value_is_a_clear_error(old, new, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(_with(old, new), "pilot.yaml")
    assert "pilot.yaml" in str(err.value)
    assert expected in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_not_yaml_is_a_clear_error():
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config("study: [unclosed", "x.yaml")
