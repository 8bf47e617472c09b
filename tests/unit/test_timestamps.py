import re
import time

import pytest

from localsched.kube import timestamps


def test_now_is_an_rfc3339_time_to_the_second_in_utc() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", timestamps.now())


def test_micro_now_is_an_rfc3339_time_to_the_microsecond_in_utc() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", timestamps.micro_now())


def test_a_time_reads_back_as_seconds_since_the_epoch() -> None:
    assert timestamps.epoch_seconds("1970-01-02T00:00:01Z") == 86401.0
    assert abs(timestamps.epoch_seconds(timestamps.now()) - time.time()) < 2


def test_a_micro_time_is_not_a_time() -> None:
    with pytest.raises(ValueError, match="does not match format"):
        timestamps.epoch_seconds("1970-01-02T00:00:01.5Z")
