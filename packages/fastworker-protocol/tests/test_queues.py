"""Queue lists from flags and environment variables: separated by commas or spaces, as every multi-value flag."""

from __future__ import annotations

import pytest

from fastworker.protocol.queues import QueueNameError, parse_queues


@pytest.mark.parametrize(
    "text", ["reports,default", "reports default", "reports, default", " reports  default ", "reports,default,reports"]
)
def test_a_queue_list_takes_commas_or_spaces_in_order_without_repeats(text: str) -> None:
    assert parse_queues(text) == ("reports", "default")


@pytest.mark.parametrize("text", ["", "a,", ",a", "a,,b", "a b/c"])
def test_an_empty_name_or_a_bad_one_is_refused_naming_it(text: str) -> None:
    with pytest.raises(QueueNameError, match="bad queue name"):
        parse_queues(text)
