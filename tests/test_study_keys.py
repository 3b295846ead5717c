"""Stored studies stay resumable: the record keys of every preset's tasks are pinned.

A record's key is a canonical hash of its task's configuration (`plan._key`). A change that moves the keys of
existing settings (a field added to every task, a default that changes, a renamed value) does not corrupt a stored
study, but makes every stored record unreachable: the same command recomputes it all and `collect` no longer sees
the old records. New fields are therefore named in a task only when set away from their default. If keys must move
(results of a setting change meaning: bump `RECORD_VERSION`), update the digests below and say so in BUILD_NOTES.md.
"""
import hashlib

import pytest

from jaxleak.runs import study as S
from jaxleak.runs.study import spec

#: preset -> (tasks, sha256 of its sorted task keys, first 16 hex digits); unchanged since 2026-12-06 (29th session).
PINNED = {
    "eavesdrop_client_loss": (4, "409105606a7131f7"),
    "eavesdrop_compression": (6, "6391845026534449"),
    "eavesdrop_defences": (6, "9f2f82ada6b8f446"),
    "eavesdrop_dirichlet": (4, "da5f35020e801098"),
    "eavesdrop_dropout": (2, "f8cbc7227b0edff6"),
    "eavesdrop_paper": (25, "acaf4e8147da9a15"),
    "eavesdrop_sweeps": (18, "78adf6de986fea52"),
    "eavesdrop_tables": (2, "4f503115ca80ca75"),
    "eavesdrop_whole_determination": (1, "19192f9b10d91e50"),
    "har_aggregation": (48, "b49b8a21cce4a4df"),
    "har_client_loss": (48, "22881f33740d0951"),
    "har_defences": (120, "83e3ba220c9a6eec"),
    "har_dirichlet": (48, "2598796339440c78"),
    "har_ldp": (216, "6247c148fac9f62c"),
    "har_multistep": (72, "3069a49f13ea1567"),
    "har_paper": (312, "ea13fe95275e1170"),
    "har_sampling": (24, "1e830568bdd24328"),
}


def test_every_preset_is_pinned():
  assert sorted(PINNED) == sorted(spec.PRESETS)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_keys_of_every_preset_are_unchanged(name):
  plan = S.make_plan(S.preset(name), check_inputs=False, numerics={})      # at float32 (on any backend)
  digest = hashlib.sha256(",".join(sorted(t.key for t in plan.tasks)).encode()).hexdigest()[:16]
  assert (len(plan.tasks), digest) == PINNED[name], (
      f"{name}: the record keys moved, so stored studies of it would recompute every task; name a new field in "
      "a task only when it is set away from its default (see plan._har_tasks), or, if the move is meant, update "
      "PINNED and say why in BUILD_NOTES.md")
