"""The typed parsers every face shares (fa_checks.values) and key=value lists."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fa_checks import values

finite = st.floats(allow_nan=False, allow_infinity=False)


@given(finite.filter(lambda x: x > 0))
def test_positive_float_reads_back_what_repr_wrote(x: float) -> None:
    assert values.positive_float(repr(x)) == x


@given(finite.filter(lambda x: x <= 0))
def test_positive_float_refuses_zero_and_negatives(x: float) -> None:
    with pytest.raises(ValueError, match="greater than 0"):
        values.positive_float(repr(x))


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "abc", "", True])
def test_numbers_must_be_finite_numbers(text: object) -> None:
    with pytest.raises(ValueError):
        values.finite_float(text)  # type: ignore[arg-type]


@given(st.floats(min_value=0, max_value=1))
def test_fraction_accepts_the_unit_interval(x: float) -> None:
    assert values.fraction(repr(x)) == x == values.fraction(x)


@given(finite.filter(lambda x: not 0 <= x <= 1))
def test_fraction_refuses_percentages_and_negatives(x: float) -> None:
    with pytest.raises(ValueError, match="fraction between 0 and 1"):
        values.fraction(repr(x))


@given(st.integers(min_value=0, max_value=values.MAX_SEED))
def test_seed_round_trips_every_seed_torch_takes(n: int) -> None:
    assert values.seed(str(n)) == n == values.seed(n)


@pytest.mark.parametrize("text", ["-1", "1.5", "one", str(2**63), "", True])
def test_seed_refuses_other_text(text: object) -> None:
    with pytest.raises(ValueError):
        values.seed(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "expected"), [("auto", "auto"), ("CPU", "cpu"),
                                                ("cuda", "cuda"), ("cuda:3", "cuda:3")])
def test_device_accepts_the_documented_names(text: str, expected: str) -> None:
    assert values.device(text) == expected


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:x", "mps0"])
def test_device_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="auto, cpu, cuda, cuda:N"):
        values.device(text)


@pytest.mark.parametrize("text", ["step", "evil", ""])
def test_schedule_is_one_of_the_two(text: str) -> None:
    with pytest.raises(ValueError, match="use one of cosine, constant"):
        values.schedule(text)


@pytest.mark.parametrize("number", [0, -3, 2.5, "abc", float("nan")])
def test_positive_int_refuses_what_is_not_a_count(number: object) -> None:
    with pytest.raises(ValueError):
        values.positive_int(number)  # type: ignore[arg-type]


def test_parse_key_values_types_each_value() -> None:
    parsed = values.parse_key_values(
        ["penalty=0.01", "d_hidden=64", "residual=false", "clip=None", "name=foo", "x=TRUE",
         "eq=a=b", "empty="],
        what="--fa-method-arg",
    )
    assert parsed == {"penalty": 0.01, "d_hidden": 64, "residual": False, "clip": None,
                      "name": "foo", "x": True, "eq": "a=b", "empty": ""}
    assert type(parsed["d_hidden"]) is int and type(parsed["penalty"]) is float


@given(value=st.integers() | st.floats(allow_nan=False) | st.booleans() | st.none()
       | st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True).filter(
           lambda s: s not in ("true", "false", "none", "null", "inf", "nan", "infinity")))
def test_format_then_parse_gives_the_value_back(value: object) -> None:
    back = values.parse_value(values.format_value(value))
    assert back == value and type(back) is type(value)


@pytest.mark.parametrize("pair", ["penalty", "=3", " =3"])
def test_a_malformed_pair_is_refused_naming_the_flag(pair: str) -> None:
    from fa_checks.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        values.parse_key_values(["ok=1", pair], what="--fa-method-arg")
    message = str(info.value)
    assert "--fa-method-arg" in message and repr(pair) in message and "\n" not in message


def test_a_key_given_twice_is_refused() -> None:
    from fa_checks.errors import ConfigError

    with pytest.raises(ConfigError, match="'penalty' twice"):
        values.parse_key_values(["penalty=1", "penalty=2"], what="--method-arg")
