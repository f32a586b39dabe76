"""The kinds of event a run's journal holds, in the order a run writes them.

Every event also carries ``t`` (seconds since the run started, monotonic) and ``ts`` (UTC). The
summary, failback, resume and the reports are all derived from these events alone, so a run whose
controller died is read back the same way as one that finished.
"""

from __future__ import annotations

from enum import StrEnum


class Event(StrEnum):
    """A journal event kind (the ``event`` field). Fields beyond ``t``/``ts`` in brackets."""

    #: the run began: [run_id runbook direction source target moves_to parent_run emergency yes
    #: mode drill_id rollback wall0 parent_start_wall rto_target_s rpo_target rpo_is_bytes rpo_step rpo_guard
    #: accept_data_loss rto_start
    #: predicted_rto_s runbook_file inventory_file runbook_sha256 inventory_sha256
    #: host_order health_names unreachable steps runbook_description]
    RUN_STARTED = "run_started"
    #: a succeeded step of the resumed run, not re-run: [step from_run value attempts hosts
    #: approval (a gate's original by/via/comment)]
    STEP_CARRIED = "step_carried"
    #: [step kind hosts wave]
    STEP_STARTED = "step_started"
    #: one attempt on one host began: [step host attempt]
    HOST_STARTED = "host_started"
    #: one poll of a check on one host: [step host attempt ok rc value duration_s]
    POLL = "poll"
    #: one attempt on one host ended: [step host attempt status rc error duration_s value
    #: stdout output_tail command (as rendered for the host, secrets masked)]
    HOST_FINISHED = "host_finished"
    #: [step status error attempts value outcome_unknown message]
    STEP_FINISHED = "step_finished"
    #: a manual gate asks: [step prompt]
    GATE_WAITING = "gate_waiting"
    #: [step approved by (user@host) via (--yes|terminal) comment waited_s message]
    GATE_ANSWERED = "gate_answered"
    #: the projected RTO crossed the target: [projected_s target_s]
    RTO_BUDGET_AT_RISK = "rto_budget_at_risk"
    #: the projection is back under the target: [projected_s target_s]
    RTO_BUDGET_RECOVERED = "rto_budget_recovered"
    #: the RPO guard tripped: the rpo_step's value exceeds rpo_target (or none was measured).
    #: Not accepted: the blocked steps never start and the run fails; accepted (with
    #: --accept-data-loss): the run goes on. [step measured target unit accepted blocked message]
    RPO_GUARD = "rpo_guard"
    #: a step failed with on_failure: abort; nothing new starts: [step]
    RUN_ABORTING = "run_aborting"
    #: the run lock of a shared store could not be confirmed in time: nothing new starts
    LOCK_IN_DOUBT = "lock_in_doubt"
    #: a renewal confirmed the lock again: scheduling resumes
    LOCK_CONFIRMED = "lock_confirmed"
    #: the run lock is lost (lease gone, a write fenced, the store unreachable): [reason]
    LOCK_LOST = "lock_lost"
    #: the first Ctrl-C: nothing new starts
    INTERRUPT = "interrupt"
    #: a Ctrl-C refused once, with a warning: a rollback (or a drill's way home) goes on
    INTERRUPT_REFUSED = "interrupt_refused"
    #: the second Ctrl-C: running commands are closed
    CANCEL_RUNNING = "cancel_running"
    #: one poll of a probe on one host (``t``: when it started): [probe host ok rc error value
    #: duration_s]
    PROBE_POLL = "probe_poll"
    #: a probe's down window outlasted its max_down: [probe down_s since max_down_s stops_run
    #: message]
    PROBE_BREACHED = "probe_breached"
    #: no step is running or left to start
    STEPS_DONE = "steps_done"
    #: health is polled at the site the run moves to: [site]
    HEALTH_POLLING = "health_polling"
    #: every health entry held; the RTO ends here: [site]
    HEALTH_HELD = "health_held"
    #: health did not hold within its timeout: [site]
    HEALTH_TIMEOUT = "health_timeout"
    #: the run ended: [status exit_code message]
    RUN_FINISHED = "run_finished"
