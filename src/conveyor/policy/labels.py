"""Do an image's own labels agree with its build record? One rule, asked at record time
(``conveyor record build``) and at promotion time (the provenance gate)."""

from __future__ import annotations

from collections.abc import Mapping

from conveyor.errors import VerificationError

COMMIT_LABELS = ("git.commit", "org.opencontainers.image.revision")
RUN_LABEL = "ci.run"
MIN_SHORT_COMMIT = 7
_HEX = frozenset("0123456789abcdef")


def commit_matches(label: str, recorded: str) -> bool:
    """Equal (ignoring case), or one an abbreviation (>= 7 hex digits) of the other."""
    a, b = label.strip().lower(), recorded.strip().lower()
    if not a or not b:
        return False
    if a == b:
        return True
    shorter, longer = sorted((a, b), key=len)
    return (
        len(shorter) >= MIN_SHORT_COMMIT
        and set(a) <= _HEX
        and set(b) <= _HEX
        and longer.startswith(shorter)
    )


def short_commit(commit: str) -> str:
    """The first 12 hex digits of a full commit, for messages; anything else as written."""
    text = commit.strip()
    return text[:12] if len(text) > 12 and set(text.lower()) <= _HEX else text


def check_labels_agree(labels: Mapping[str, str], *, commit: str, run_id: str | None) -> None:
    """Raise ``VerificationError`` when a commit or run label tells another story."""
    for label in COMMIT_LABELS:
        value = labels.get(label, "").strip()
        if value and not commit_matches(value, commit):
            raise VerificationError(
                f"the image label {label}={value.lower()} disagrees with --commit "
                f"{commit.strip().lower()}: the label and the build record must tell the same "
                "story"
            )
    label_run = labels.get(RUN_LABEL, "").strip()
    if label_run and run_id and label_run != run_id.strip():
        raise VerificationError(
            f"the image label {RUN_LABEL}={label_run} disagrees with --run-id {run_id}: "
            "the label and the build record must tell the same story"
        )
