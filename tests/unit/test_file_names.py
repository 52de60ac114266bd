"""File names: filled from the delivery, the same on every retry, never a path."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.common.file_names import (
    DEFAULT_TEMPLATE,
    NameValues,
    TemplateError,
    check_template,
    file_name,
)

VALUES = NameValues(
    task="Daily CRM/drop", task_id="t1", delivery_id="d9", after_seq=10, through_seq=42,
    reserved_at=datetime(2026, 3, 29, 0, 30, 5, tzinfo=UTC), time_zone="Europe/Berlin",
    ext="csv.gz",
)  # fmt: skip


def test_the_default_template_names_the_task_time_and_delivery_in_the_tasks_zone() -> None:
    assert check_template("") == DEFAULT_TEMPLATE
    assert file_name(DEFAULT_TEMPLATE, VALUES, None) == "Daily-CRM-drop_20260329_013005_d9.csv.gz"
    assert (
        file_name(DEFAULT_TEMPLATE, VALUES, 2)
        == "Daily-CRM-drop_20260329_013005_d9_part0002.csv.gz"
    )
    ranged = "x_{after_seq}-{through_seq}_{part}.{ext}"
    assert file_name(ranged, VALUES, 1) == "x_10-42_0001.csv.gz"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("../etc/{task}.{ext}", "not a path"),
        ("{task}/x.{ext}", "not a path"),
        ("{nope}.{ext}", "unknown token"),
        ("{task", "unbalanced"),
        ("{task}", "extension"),
        (".hidden_{task}.{ext}", "not a plain file name"),
    ],
)
def test_templates_that_cannot_make_a_plain_name_are_refused(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        check_template(template)
