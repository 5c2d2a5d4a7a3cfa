"""The admission decision on real AdmissionReview v1 documents (tests/assets/admission)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from conveyor.policy.admission import (
    AdmissionRefused,
    Governance,
    Promoted,
    decide,
    read_review,
    refusal,
    review_response,
    review_uid,
)

ASSETS = Path(__file__).parent.parent / "assets" / "admission"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64
D4 = "sha256:" + "4" * 64
GOV = Governance(
    {"payment-api-staging": "staging", "payment-api-production": "production"},
    frozenset({"kube-system", "conveyor"}),
)


def doc(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ASSETS / name).read_text())
    return loaded


def production(*digests: str, previous: int = 1) -> Promoted:
    return Promoted.from_history(
        "production", list(digests), previous=previous, tags=["production"]
    )


def test_pod_containers_and_uid() -> None:
    review = read_review(doc("pod-create.json"))
    assert review.uid == "705ab4f5-6393-11e8-b7cc-42010a800002"
    assert review.namespace == "payment-api-production"
    assert [(c.list_name, c.name) for c in review.containers] == [("containers", "api")]


def test_cronjob_reads_init_and_ephemeral_containers_and_break_glass() -> None:
    review = read_review(doc("cronjob-create.json"))
    assert [(c.list_name, c.name) for c in review.containers] == [
        ("initContainers", "fetch"),
        ("containers", "report"),
        ("ephemeralContainers", "debugger"),
    ]
    assert review.break_glass == "INC-4711: payment outage, hotfix"


def test_current_digest_is_allowed() -> None:
    verdict = decide(read_review(doc("pod-create.json")), GOV, production(D1))
    assert verdict.allowed, verdict.message
    assert not verdict.warnings


def test_previous_within_window_allowed_beyond_denied() -> None:
    review = read_review(doc("pod-create.json"))
    assert decide(review, GOV, production(D2, D1)).allowed  # D1 is the one before: rollback
    verdict = decide(review, GOV, production(D3, D2, D1))  # D1 two promotions back
    assert not verdict.allowed
    assert "container 'api'" in verdict.message
    assert "not within the last 2 promotion(s)" in verdict.message
    wider = Governance(GOV.namespaces, GOV.exempt, previous=2)
    assert decide(review, wider, production(D3, D2, D1, previous=2)).allowed


def test_never_promoted_denied_naming_container() -> None:
    verdict = decide(read_review(doc("pod-create.json")), GOV, production(D2))
    assert not verdict.allowed
    assert verdict.message == f"container 'api': digest {D1} was never promoted to production"


def test_deployment_denies_unpinned_and_unpromoted_init_container() -> None:
    review = read_review(doc("deployment-update.json"))
    assert review.dry_run is True
    verdict = decide(review, GOV, production(D1))
    assert not verdict.allowed
    assert f"init container 'migrate': digest {D2} was never promoted" in verdict.message
    assert "container 'envoy': image envoyproxy/envoy:v1.31.0 is not pinned by digest" in (
        verdict.message
    )


def test_tag_that_moved_warns_but_allows() -> None:
    document = doc("deployment-update.json")
    spec = document["request"]["object"]["spec"]["template"]["spec"]
    spec["initContainers"] = []
    spec["containers"] = spec["containers"][:1]  # api: payment-api:production@D1
    verdict = decide(read_review(document), GOV, production(D4, D1))
    assert verdict.allowed
    assert len(verdict.warnings) == 1
    assert "tag production now names" in verdict.warnings[0]
    assert not decide(read_review(document), GOV, production(D1)).warnings


def test_ungoverned_namespace_warns_or_denies() -> None:
    document = doc("pod-create.json")
    document["request"]["namespace"] = "someone-else"
    verdict = decide(read_review(document), GOV, None)
    assert verdict.allowed
    assert "not governed" in verdict.warnings[0]
    strict = Governance(GOV.namespaces, GOV.exempt, "deny")
    assert not decide(read_review(document), strict, None).allowed


def test_exempt_namespace_allowed_without_warning() -> None:
    document = doc("pod-create.json")
    document["request"]["namespace"] = "kube-system"
    verdict = decide(read_review(document), GOV, None)
    assert verdict.allowed
    assert not verdict.warnings


def test_break_glass_needs_a_rule() -> None:
    review = read_review(doc("cronjob-create.json"))
    staging = Promoted.from_history("staging", [D1], previous=1)
    verdict = decide(review, GOV, staging)  # busybox: not pinned
    assert not verdict.allowed
    assert "no freeze break-glass rule" in verdict.message
    refused = decide(review, GOV, staging, break_glass_rule="the freeze")
    assert not refused.allowed
    assert "break-glass refused: it admits only images pinned by digest" in refused.message
    assert refused.break_glass is None


def test_break_glass_names_each_unpromoted_digest_and_never_allows_by_itself() -> None:
    document = doc("cronjob-create.json")
    pod = document["request"]["object"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod["ephemeralContainers"][0]["image"] = f"busybox@{D2}"
    pod["initContainers"][0]["image"] = f"registry.example.com/payment-api@{D2}"
    review = read_review(document)
    assert review.user.username == "ci@example.com"
    assert review.workload == {
        "kind": "batch/CronJob", "name": "nightly-report", "operation": "CREATE"
    }  # fmt: skip
    staging = Promoted.from_history("staging", [D1], previous=1)
    verdict = decide(review, GOV, staging, break_glass_rule="the freeze")
    assert not verdict.allowed  # only the server, once it has recorded the entry, allows
    assert verdict.break_glass is not None
    assert verdict.break_glass.reason == "INC-4711: payment outage, hotfix"
    ((digest, running),) = verdict.break_glass.digests
    assert digest == D2
    assert [c.name for c in running] == ["fetch", "debugger"]


def test_user_info_is_read_leniently_and_capped() -> None:
    document = doc("pod-create.json")
    document["request"]["userInfo"] = {"username": "u" * 1000, "groups": ["a", 7, None]}
    document["request"]["name"] = ""
    review = read_review(document)
    assert review.user.username == "u" * 256
    assert review.user.groups == ("a",)
    assert review.name == "payment-api-7d9f8b6c5-x2k4q"  # metadata.name ... generateName
    document["request"]["userInfo"] = "nobody"
    assert read_review(document).user.username == ""


def test_delete_allowed() -> None:
    document = doc("pod-create.json")
    document["request"]["operation"] = "DELETE"
    document["request"]["object"] = None
    assert decide(read_review(document), GOV, None).allowed


def _mutations() -> list[tuple[str, Any]]:
    return [
        ("apiVersion", "admission.k8s.io/v1beta1"),
        ("kind", "Pod"),
        ("request.uid", 7),
        ("request.uid", ""),
        ("request.kind", {"group": "apps", "version": "v1", "kind": "Unicorn"}),
        ("request.object", None),
        ("request.object.spec", []),
        ("request.object.spec.containers", {"name": "x"}),
        ("request.object.spec.containers", [{"image": "x@" + D1}]),
        ("request.object.spec.containers", [{"name": "x", "image": 5}]),
        ("request.dryRun", "yes"),
        ("request.namespace", None),
    ]


@pytest.mark.parametrize(("path", "value"), _mutations())
def test_hostile_reviews_are_refused(path: str, value: Any) -> None:
    document = copy.deepcopy(doc("pod-create.json"))
    *parents, last = path.split(".")
    holder = document
    for part in parents:
        holder = holder[part]
    holder[last] = value
    if path == "request.namespace":
        document["request"]["object"]["metadata"].pop("namespace")
    with pytest.raises(AdmissionRefused):
        read_review(document)


def test_refused_review_still_echoes_uid() -> None:
    assert review_uid({"request": {"uid": "abc"}}) == "abc"
    assert review_uid([1]) == ""
    answer = review_response("abc", refusal("broken"))
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["response"]["uid"] == "abc"
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["code"] == 403
    assert "broken" in answer["response"]["status"]["message"]


def test_invalid_image_reference_denied() -> None:
    document = doc("pod-create.json")
    document["request"]["object"]["spec"]["containers"][0]["image"] = "UPPER/Case@sha256:zz"
    verdict = decide(read_review(document), GOV, production(D1))
    assert not verdict.allowed
    assert "not a valid reference" in verdict.message


def test_update_judges_only_what_newly_runs() -> None:
    document = doc("pod-create.json")
    document["request"]["operation"] = "UPDATE"
    document["request"]["oldObject"] = copy.deepcopy(document["request"]["object"])
    # The pod runs D1, no longer promoted; a label change must still be possible.
    assert decide(read_review(document), GOV, production(D3, D2)).allowed
    document["request"]["object"]["spec"]["ephemeralContainers"] = [
        {"name": "debug", "image": "busybox@" + D1}
    ]
    verdict = decide(read_review(document), GOV, production(D3, D2))
    assert not verdict.allowed
    assert "ephemeral container 'debug'" in verdict.message
    assert "container 'api'" not in verdict.message


@pytest.mark.parametrize(
    ("group", "kind"),
    [
        ("apps", "Deployment"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
        ("apps", "ReplicaSet"),
        ("", "ReplicationController"),
        ("batch", "Job"),
    ],
)
def test_every_workload_kind_keeps_its_pod_template_under_spec_template(
    group: str, kind: str
) -> None:
    document = doc("deployment-update.json")
    document["request"]["kind"] = {"group": group, "version": "v1", "kind": kind}
    document["request"]["oldObject"] = None
    review = read_review(document)
    assert [c.name for c in review.containers] == ["migrate", "api", "envoy"]
    assert not decide(review, GOV, production(D1)).allowed  # envoy: not pinned


def test_cronjob_pod_template_is_under_the_job_template() -> None:
    document = doc("cronjob-create.json")
    document["request"]["kind"]["kind"] = "Job"  # a Job keeps no jobTemplate
    with pytest.raises(AdmissionRefused, match=r"request\.object\.spec\.template"):
        read_review(document)


def test_break_glass_admits_a_bounded_number_of_digests() -> None:
    document = doc("pod-create.json")
    document["request"]["object"]["metadata"]["annotations"] = {"conveyor.dev/break-glass": "x"}
    document["request"]["object"]["spec"]["containers"] = [
        {"name": f"c{n}", "image": f"registry.example.com/app@sha256:{n:064x}"} for n in range(17)
    ]
    verdict = decide(read_review(document), GOV, production(D1), break_glass_rule="the freeze")
    assert verdict.break_glass is None
    assert "break-glass refused: it admits at most 16 digests in one request, not 17" in (
        verdict.message
    )
    del document["request"]["object"]["spec"]["containers"][16]
    verdict = decide(read_review(document), GOV, production(D1), break_glass_rule="the freeze")
    assert verdict.break_glass is not None
    assert len(verdict.break_glass.digests) == 16
