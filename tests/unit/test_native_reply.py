"""The IngestBatchResponse written in C is the one protobuf would write."""

from __future__ import annotations

import random

import pytest

from services.common.errors import FieldProblem
from services.common.gen.handoff.ingest.v1 import ingest_pb2
from services.ingest import native
from services.ingest.model import RowResult, RowStatus
from services.ingest.server import _STATUS, add_row_results, batch_response

pytestmark = pytest.mark.skipif(not native.AVAILABLE, reason="needs the extension")


def _expected(results: list[RowResult]) -> ingest_pb2.IngestBatchResponse:
    statuses = [r.status for r in results]
    response = ingest_pb2.IngestBatchResponse(
        accepted=statuses.count(RowStatus.ACCEPTED),
        duplicates=statuses.count(RowStatus.DUPLICATE),
        rejected=statuses.count(RowStatus.REJECTED),
    )
    add_row_results(response.results, results)
    return response


def _random_results(rng: random.Random, count: int) -> list[RowResult]:
    partners = ["", "p-1", "Zoë-ü-€-😀", "x" * 200, "tab\tand\nnew line"]
    problems = [
        FieldProblem("consumer.email", "INVALID_FORMAT", "'a@b' is not an email address"),
        FieldProblem("partner_referral_id", "DUPLICATE_IN_BATCH", "'Zoë' repeats row 0"),
        FieldProblem("", "", ""),
    ]
    results = []
    for index in range(count):
        status = rng.choice(list(RowStatus))
        if status is RowStatus.REJECTED:
            found = tuple(rng.sample(problems, k=rng.randint(1, 3)))
            results.append(RowResult(index, status, rng.choice(partners), 0, found))
        else:
            seq = rng.choice([1, 127, 128, 2**31, 2**62 + 5])
            results.append(RowResult(index, status, rng.choice(partners), seq))
    return results


@pytest.mark.parametrize("seed", range(5))
def test_the_reply_matches_protobuf_byte_for_byte(seed: int) -> None:
    results = _random_results(random.Random(seed), 300)
    expected = _expected(results)

    encoded = batch_response(results)

    assert ingest_pb2.IngestBatchResponse.FromString(encoded) == expected
    assert encoded == expected.SerializeToString(deterministic=True)


def test_an_all_zero_reply_is_empty() -> None:
    assert batch_response([]) == b""
    only = [RowResult(0, RowStatus.ACCEPTED, "", 0)]
    assert ingest_pb2.IngestBatchResponse.FromString(batch_response(only)) == _expected(only)


def test_a_status_without_a_code_is_an_error_not_a_bad_reply() -> None:
    results = [RowResult(0, RowStatus.ACCEPTED, "p", 1)]
    codes: dict[RowStatus, int] = {
        k: int(v) for k, v in _STATUS.items() if k is not RowStatus.ACCEPTED
    }
    with pytest.raises(KeyError):
        native.encode_results(results, codes, dict.fromkeys(RowStatus, 0))
