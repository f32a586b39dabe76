"""What every runbook and inventory field means: one table per mapping, read by the loaders' tests,
by ``drx schema`` (JSON Schema for editors) and by the generator of ``docs/reference.md``.

The tables name exactly the fields the loaders accept (``STEP_FIELDS``, ``CONNECTION_FIELDS``...):
a test compares them, so a field cannot be added to a loader without a line here, and the
reference cannot document a field the loader would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from orchestrator import kinds
from orchestrator.errors import ExitCode


class Type(StrEnum):
    """The shape of a field's value, as the reference names it and the schema checks it."""

    STRING = "string"
    TEXT = "string (numbers accepted)"
    TEMPLATE = "template"
    EXPRESSION = "expression"
    DURATION = "duration"
    STEP_DURATION = "duration or template"
    DURATION_OR_SIZE = "duration or size"
    SIZE = "size"
    SELECTORS = "selector or list"
    STRINGS = "string or list"
    INTEGER = "integer"
    PORT = "integer 1-65535"
    BOOLEAN = "boolean"
    SUDO = "boolean or user name"
    ENV = "mapping of strings"
    MAPPING = "mapping"
    KIND = " · ".join(kinds.names())
    ON_FAILURE = "abort · continue"
    RUNBOOK_ON_FAILURE = "stop · rollback"
    ONLY = "drill · real"
    PROBE_LIST = "list of probes"
    CAPTURE = "text · number · json · regex"
    UNDO = "command or mapping"
    TRANSPORT = "ssh · local"
    HOST_KEY_POLICY = "strict · accept-new · ignore"
    HEALTH_LIST = "list of health entries"
    READINESS_LIST = "list of readiness entries"
    RPO_PROBE = "rpo_probe mapping"
    STEP_LIST = "list of steps"
    SITES = "mapping of sites"
    HOSTS = "mapping of hosts"
    DEFAULTS = "mapping of connection settings"
    FAILBACK = "undo · mirror"


@dataclass(frozen=True)
class FieldDoc:
    """One field: its type, its default (as text), what it does, and an example value."""

    name: str
    type: Type
    default: str
    meaning: str
    example: str
    required: bool = False


RUNBOOK_DOC: tuple[FieldDoc, ...] = (
    FieldDoc(
        "name",
        Type.TEXT,
        "required",
        "The runbook's name. The active site and the run "
        "history are kept per name, so two runbooks can share a state directory.",
        "webapp",
        required=True,
    ),
    FieldDoc(
        "description",
        Type.TEXT,
        '""',
        "One line shown in reports.",
        "Move the web application between sites.",
    ),
    FieldDoc(
        "rto_target",
        Type.DURATION,
        "none",
        "The recovery time objective. A run that "
        "succeeds but measures a longer RTO exits 3; the live view projects against it.",
        "15m",
    ),
    FieldDoc(
        "rpo_target",
        Type.DURATION_OR_SIZE,
        "none",
        "The recovery point objective: a "
        "duration (seconds of lost writes) or a size (`0B`, `512KB`, `16MB`; 1 KB = 1024 B) "
        "for stores that measure loss in bytes. Compared with the value of `rpo_step`.",
        "30s",
    ),
    FieldDoc(
        "rpo_step",
        Type.TEXT,
        "none",
        "A step whose captured number (its last value) is "
        "the measured RPO, in seconds (or bytes when `rpo_target` is a size).",
        "check-lag",
    ),
    FieldDoc(
        "rpo_guard",
        Type.BOOLEAN,
        "false",
        "Refuse data loss past the target (Patroni's `maximum_lag_on_failover`): when the "
        "value of `rpo_step` exceeds `rpo_target` (or nothing was measured), no step that needs "
        "`rpo_step` starts and the failover fails (exit 1), naming measured and target. "
        "`drx failover/resume --accept-data-loss` lets it through; the run records the "
        "acceptance and the amount. Needs `rpo_step` and `rpo_target`.",
        "true",
    ),
    FieldDoc(
        "notify",
        Type.STRINGS,
        "[]",
        "Apprise notification URLs (templates: a token may come from a secret variable) "
        "told when a run starts, a gate waits, the RTO is at risk and the run ends; "
        "added to `--notify` and DRX_NOTIFY.",
        "ntfys://ntfy.example.org/{{ vars.ntfy_token }}",
    ),
    FieldDoc(
        "failback_rpo_step",
        Type.TEXT,
        "none",
        "The failback's own RPO: `undo-<step id>`, the undo of a step, whose captured number is "
        "a failback's measured RPO (same unit and target as `rpo_step`); with `rpo_guard`, the "
        "guard applies to failbacks too (`drx failback --accept-data-loss`). Unset, a failback "
        "measures no RPO.",
        "undo-wait-replica",
    ),
    FieldDoc(
        "rto_start",
        Type.TEXT,
        "the first step",
        "A step whose start starts the RTO "
        "clock (for runbooks that begin with preparation that is not downtime).",
        "freeze-writes",
    ),
    FieldDoc(
        "vars",
        Type.MAPPING,
        "{}",
        "Variables for templates (`vars.NAME`); the inventory, "
        "its sites and hosts, and `--var` override them in that order.",
        "{app_port: 8080}",
    ),
    FieldDoc(
        "health",
        Type.HEALTH_LIST,
        "[]",
        "The service's steady state: polled once at the "
        "active site before a failover, and at the new site after the steps until it "
        "holds (that moment ends the RTO).",
        "[{name: http, hosts: control, run: ...}]",
    ),
    FieldDoc(
        "readiness",
        Type.READINESS_LIST,
        "[]",
        "Checks `drx check` runs once, at the sites their selectors name (`db@target`: the "
        "site checked), all hosts in parallel, each reported with its rc and value; one "
        "failing makes the site not ready (exit 2). Not run by failovers.",
        "[{name: replica-streaming, hosts: db@target, run: ..., sudo: postgres}]",
    ),
    FieldDoc(
        "rpo_probe",
        Type.RPO_PROBE,
        "none",
        "A read-only command `drx check` runs now: its number is the data a failover would "
        "lose if the source were lost this moment (seconds, or bytes when `rpo_target` is a "
        "size); the card's RPO exposure. Needs `rpo_target`.",
        "{hosts: db@source, run: ..., sudo: postgres}",
    ),
    FieldDoc(
        "drill_every",
        Type.DURATION,
        "none",
        "How often the runbook must be proven: `drx check` reports the drill overdue when "
        "its last succeeded failover is older, or there is none (exit 1 with `--strict`).",
        "90d",
    ),
    FieldDoc(
        "steps",
        Type.STEP_LIST,
        "required",
        "The steps, in any order: `needs` decides what runs when.",
        "[{id: promote-db, hosts: db@target, run: dbctl promote}]",
        required=True,
    ),
    FieldDoc(
        "on_failure",
        Type.RUNBOOK_ON_FAILURE,
        "stop",
        "What a `drx failover` that fails or is cancelled (Ctrl-C) does next. `stop`: it "
        "stays where it stopped (`drx failback` or `drx resume` later). `rollback`: the "
        "failback of what it did runs at once (a run with `rollback: true`; the failover's "
        "summary names it in `rolled_back_by`). A refusing RPO guard counts as a failure. "
        "Never under `--emergency` unless `--rollback`; `--no-rollback` turns it off for one "
        "run. A drill always rolls back.",
        "rollback",
    ),
    FieldDoc(
        "probes",
        Type.PROBE_LIST,
        "[]",
        "Client-side checks polled for the whole run on their own schedule: the downtime "
        "clients saw, beside the measured RTO; a down window longer than `max_down` stops the "
        "run (and rolls it back in a drill or with `on_failure: rollback`).",
        "[{name: write, run: psql -c 'insert ...', max_down: 30s}]",
    ),
    FieldDoc(
        "output_limit",
        Type.SIZE,
        "64MB",
        "The most one attempt of a step (or health check) on one host writes to its output log "
        "(a check's polls share it). Past it the log says where it was cut and the report how "
        "many bytes were not kept; the journal's tails are unaffected.",
        "256MB",
    ),
    FieldDoc(
        "failback",
        Type.FAILBACK,
        "undo",
        "How `drx failback` returns a succeeded failover: `undo` runs the reverse plan of the "
        "steps' undos; `mirror` runs the runbook's steps again from the failover's target "
        "back to its source (`source`/`target` swapped, `direction: failback`). A failover "
        "that failed, was cancelled or crashed is always failed back by its undos. See "
        "Undo or mirror.",
        "mirror",
    ),
    FieldDoc(
        "reprotect",
        Type.STEP_LIST,
        "[]",
        "Steps (the same fields as `steps`, ids of their own, needing only each other) that "
        "make the old site a replica of the new one again. A mirrored failback runs them "
        "first, while the service is still up, outside its RTO (reported apart); "
        "`drx reprotect` runs them alone, and a later failback carries them. Their templates "
        "see the failback's `source`/`target`. See Undo or mirror.",
        "[{id: rejoin, hosts: db@target, run: ...}]",
    ),
)

STEP_DOC: tuple[FieldDoc, ...] = (
    FieldDoc(
        "id",
        Type.TEXT,
        "required",
        "Unique; lower-case letters, digits, `-` and `_`, "
        "starting with a letter or digit. Other steps name it in `needs` and templates "
        "read its result as `steps['ID']`.",
        "promote-db",
        required=True,
    ),
    FieldDoc(
        "name",
        Type.TEXT,
        "the id",
        "A human title for the live view and reports.",
        "Promote the replica at the target",
    ),
    FieldDoc(
        "kind",
        Type.KIND,
        "command",
        "; ".join(k.doc for k in kinds.KINDS.values()) + ".",
        "check",
    ),
    FieldDoc(
        "hosts",
        Type.SELECTORS,
        "required for command and check",
        "Where the step runs: a selector or a list of them (see Host selectors).",
        "db@target",
    ),
    FieldDoc(
        "run",
        Type.TEMPLATE,
        "required for command and check",
        "The shell command, run by `sh` on each host. Pass interpolated values through `| quote`.",
        "dbctl promote --name {{ host.name | quote }}",
    ),
    FieldDoc(
        "undo",
        Type.UNDO,
        "none",
        "What a failback runs to reverse this step: a command "
        "(run like the step: on its hosts, with its `sudo`), or a mapping with any step field but `id`, `undo` and "
        "`needs` (see What an undo may be).",
        "dbctl demote",
    ),
    FieldDoc(
        "needs",
        Type.STRINGS,
        "[]",
        "Ids of steps that must succeed (or be skipped, or "
        "fail with `on_failure: continue`) before this one starts.",
        "[check-lag]",
    ),
    FieldDoc(
        "timeout",
        Type.STEP_DURATION,
        "10m",
        "Per attempt and per host; the remote command "
        "and its children are killed when it passes. For a `check`, it bounds the whole "
        "polling window on each host. For a `manual` gate with no terminal (default 1h), how "
        "long it waits for `drx approve`/`deny` before it is denied.",
        "2m",
    ),
    FieldDoc(
        "retries",
        Type.INTEGER,
        "0",
        "Extra attempts after a failure; only the hosts that failed run again.",
        "2",
    ),
    FieldDoc("retry_delay", Type.STEP_DURATION, "5s", "The pause before each retry.", "1s"),
    FieldDoc(
        "until",
        Type.EXPRESSION,
        "rc == 0",
        "For `check`: the condition that ends the "
        "polling, over `rc`, `stdout`, `stderr` and `value` (see `capture`).",
        "value <= 5",
    ),
    FieldDoc(
        "interval",
        Type.STEP_DURATION,
        "5s",
        "For `check`: the pause between polls; at least 50ms.",
        "500ms",
    ),
    FieldDoc(
        "capture",
        Type.CAPTURE,
        "none",
        "Sets `value` from stdout: `text` (stripped), "
        "`number` (the first number), `json`, or a regex whose first group is kept. "
        "Nothing found gives null: a check polls again, a command step fails "
        "(`error: capture`).",
        "number",
    ),
    FieldDoc(
        "when",
        Type.EXPRESSION,
        "always",
        "A condition evaluated when the step is "
        "ready; false skips the step (its dependents still run).",
        "direction == 'failover'",
    ),
    FieldDoc(
        "on_failure",
        Type.ON_FAILURE,
        "abort",
        "`abort`: no new step starts and the run "
        "fails. `continue`: the step is recorded as failed and its dependents run.",
        "continue",
    ),
    FieldDoc(
        "serial",
        Type.INTEGER,
        "all hosts at once",
        "At most this many of the step's hosts at a time (a rolling change).",
        "1",
    ),
    FieldDoc(
        "expect",
        Type.STEP_DURATION,
        "none",
        "The expected duration, used by `drx plan` to predict the RTO until the step has history.",
        "30s",
    ),
    FieldDoc(
        "prompt",
        Type.TEMPLATE,
        "the name",
        "For `manual`: the question asked.",
        "Cut DNS over to {{ target }}?",
    ),
    FieldDoc(
        "duration", Type.STEP_DURATION, "required for wait", "For `wait`: how long to sleep.", "30s"
    ),
    FieldDoc(
        "env",
        Type.ENV,
        "{}",
        "Extra environment variables for the command (over the host's `env`).",
        "{LC_ALL: C}",
    ),
    FieldDoc(
        "idempotent",
        Type.BOOLEAN,
        "false",
        "Safe to run again after the controller died "
        "while it was running: `drx resume` re-runs such a step without "
        "`--rerun-inflight`.",
        "true",
    ),
    FieldDoc(
        "sudo",
        Type.SUDO,
        "false",
        "Run the command through `sudo -n` (never prompts; `drx check` tests that it works): "
        "`true` runs it as root, a user name (`postgres`) as that user (`sudo -n -u postgres`), "
        "so that a sudoers rule can grant just that account.",
        "postgres",
    ),
    FieldDoc(
        "only",
        Type.ONLY,
        "every run",
        "`drill`: the step (or undo) runs only in the runs of a `drx drill`; `real`: only "
        "outside drills. Otherwise it is `skipped` with the reason, its dependents proceed, "
        "and plans show it as skipped.",
        "drill",
    ),
    FieldDoc(
        "runbook",
        Type.STRING,
        "required for runbook",
        "For `kind: runbook`: the child runbook's file, relative to the file that includes it; "
        "its steps join this DAG as `ID/STEP` (see Site plans).",
        "postgres.yaml",
    ),
    FieldDoc(
        "vars",
        Type.MAPPING,
        "{}",
        "For `kind: runbook`: overrides of the child's `vars` (the child's < these < inventory "
        "< `--var`).",
        "{app_port: 5433}",
    ),
    FieldDoc(
        "always",
        Type.BOOLEAN,
        "false",
        "Cleanup that must happen (re-enable configuration management, remove a maintenance "
        "window): the step runs once the steps it needs have finished in whatever state "
        "(succeeded, failed, skipped, cancelled, not run), also when the run is failing, "
        "aborting or was stopped by a first Ctrl-C; a second Ctrl-C cancels it too. Its "
        "failure fails the run. Not on `manual` steps.",
        "true",
    ),
    FieldDoc(
        "candidates",
        Type.SELECTORS,
        "every host of the run's two sites",
        "For `hosts` decided at run time (a template over earlier steps' results, e.g. "
        "`\"{{ steps['find-primary'].value }}\"`, rendered when the step starts: host names or "
        "selectors, a list or separated by commas/spaces; it may read only the steps in "
        "`needs`): the hosts it may resolve to. They are all pre-flighted; a name outside them "
        "fails the step. Per-host status, retries, `serial`, emergency rules and undo then "
        "apply to the hosts it resolved to.",
        "db@active",
    ),
)

HEALTH_DOC: tuple[FieldDoc, ...] = (
    FieldDoc(
        "name",
        Type.TEXT,
        "health-N",
        "Names the entry in the journal, reports and output files; unique; a plain name "
        "(see Names).",
        "http",
    ),
    FieldDoc(
        "hosts",
        Type.SELECTORS,
        "required",
        "Where the probe runs. `active` in a selector is the site being checked.",
        "control",
        required=True,
    ),
    FieldDoc(
        "run",
        Type.TEMPLATE,
        "required",
        "The probe command; `{{ active }}` is the site being checked.",
        "curl -fsS http://{{ site(active).vars.vip }}/health",
        required=True,
    ),
    FieldDoc("until", Type.EXPRESSION, "rc == 0", "The condition for healthy.", "value == 'ok'"),
    FieldDoc("interval", Type.DURATION, "2s", "The pause between polls; at least 50ms.", "500ms"),
    FieldDoc(
        "timeout",
        Type.DURATION,
        "2m",
        "How long to poll at the new site before the run fails with `health never held`.",
        "5m",
    ),
    FieldDoc("capture", Type.CAPTURE, "none", "As for a step.", "text"),
    FieldDoc("env", Type.ENV, "{}", "As for a step.", "{LC_ALL: C}"),
)

READINESS_DOC: tuple[FieldDoc, ...] = (
    FieldDoc(
        "name",
        Type.TEXT,
        "readiness-N",
        "Names the check in drx check's output and metrics (the `check` label); unique.",
        "replica-streaming",
    ),
    *(d for d in HEALTH_DOC if d.name not in ("name", "timeout")),
    FieldDoc("timeout", Type.DURATION, "2m", "How long the one poll may take.", "10s"),
    FieldDoc("sudo", Type.SUDO, "false", "As for a step (a database's own checks).", "postgres"),
)

RPO_PROBE_DOC: tuple[FieldDoc, ...] = (
    FieldDoc(
        "hosts",
        Type.SELECTORS,
        "required",
        "Where the probe runs (`db@source`: the site serving now); with several hosts, the "
        "largest value counts.",
        "db@source",
        required=True,
    ),
    FieldDoc(
        "run",
        Type.TEMPLATE,
        "required",
        "A read-only command printing the exposure.",
        "psql -Atc 'SELECT ...'",
        required=True,
    ),
    FieldDoc("capture", Type.CAPTURE, "number", "How the value is read from stdout.", "number"),
    FieldDoc("timeout", Type.DURATION, "10s", "How long the probe may take.", "5s"),
    FieldDoc("env", Type.ENV, "{}", "As for a step.", "{LC_ALL: C}"),
    FieldDoc("sudo", Type.SUDO, "false", "As for a step.", "postgres"),
)

INVENTORY_DOC: tuple[FieldDoc, ...] = (
    FieldDoc(
        "active",
        Type.STRING,
        "required",
        "The site serving now, before any drx run. "
        "Once a run has succeeded, the state directory's record overrides it.",
        "site-a",
        required=True,
    ),
    FieldDoc(
        "defaults",
        Type.DEFAULTS,
        "{}",
        "Connection settings every host inherits (see Connection settings).",
        "{user: drx, host_key_policy: strict}",
    ),
    FieldDoc(
        "vars",
        Type.MAPPING,
        "{}",
        "Variables for every template (over the runbook's).",
        "{dns_zone: example.internal}",
    ),
    FieldDoc(
        "notify",
        Type.STRINGS,
        "[]",
        "Apprise notification URLs (templates: a token may come from a secret variable) "
        "told when a run starts, a gate waits, the RTO is at risk and the run ends; "
        "added to the runbook's, `--notify` and DRX_NOTIFY.",
        "ntfys://ntfy.example.org/{{ vars.ntfy_token }}",
    ),
    FieldDoc(
        "sites",
        Type.SITES,
        "required",
        "At least two sites, by name. `source`, `target`, `active` and `control` are reserved.",
        "{site-a: {hosts: {...}}, site-b: {hosts: {...}}}",
        required=True,
    ),
)

SITE_DOC: tuple[FieldDoc, ...] = (
    FieldDoc(
        "vars",
        Type.MAPPING,
        "{}",
        "Variables for templates rendered for this site's hosts, and `site(NAME).vars`.",
        "{vip: 10.0.1.10}",
    ),
    FieldDoc(
        "hosts",
        Type.HOSTS,
        "required",
        "The site's hosts, by name; names are unique across sites, plain names (see Names), "
        "and `control` is reserved.",
        "{db-a: {address: 10.0.1.21, roles: [db]}}",
        required=True,
    ),
)

HOST_DOC: tuple[FieldDoc, ...] = (
    FieldDoc(
        "address", Type.TEXT, "required with transport ssh", "IP address or DNS name.", "10.0.1.21"
    ),
    FieldDoc("roles", Type.STRINGS, "[]", "Roles for `ROLE@SITE` selectors.", "[db, primary]"),
    FieldDoc(
        "vars",
        Type.MAPPING,
        "{}",
        "Variables for templates rendered on this host (`vars.NAME`, `host.vars.NAME`).",
        "{weight: 2}",
    ),
)

CONNECTION_DOC: tuple[FieldDoc, ...] = (
    FieldDoc(
        "transport",
        Type.TRANSPORT,
        "ssh",
        "`local` runs commands on the machine running drx (no SSH), e.g. for a lab or the demo.",
        "ssh",
    ),
    FieldDoc("user", Type.STRING, "root", "The SSH login.", "drx"),
    FieldDoc("port", Type.PORT, "22", "The SSH port.", "2222"),
    FieldDoc(
        "identity_file",
        Type.STRING,
        "none (agent, default keys)",
        "A private key file.",
        "~/.ssh/id_ed25519",
    ),
    FieldDoc(
        "known_hosts",
        Type.STRING,
        "~/.ssh/known_hosts",
        "Where host keys are checked (and, under `accept-new`, added).",
        "~/.ssh/known_hosts",
    ),
    FieldDoc(
        "host_key_policy",
        Type.HOST_KEY_POLICY,
        "strict",
        "`strict`: an unknown or "
        "changed key refuses the host. `accept-new`: an unknown key is added, a changed "
        "one refused. `ignore`: any key (labs only).",
        "accept-new",
    ),
    FieldDoc("connect_timeout", Type.DURATION, "10s", "How long to wait for a connection.", "5s"),
    FieldDoc(
        "proxy_jump",
        Type.STRING,
        "none",
        "A bastion, `user@host:port`.",
        "drx@bastion-b.example.internal:22",
    ),
    FieldDoc(
        "ssh_config",
        Type.STRING,
        "~/.ssh/config (if it exists)",
        "An OpenSSH client config file. A host's `address` (or, without one, its name) may be "
        "a `Host` alias there: HostName, User, Port, IdentityFile, ProxyJump, ConnectTimeout "
        "and UserKnownHostsFile fill every setting the inventory leaves unset; a setting "
        "written in the inventory always wins. A relative path is relative to the inventory.",
        "ssh/drills.conf",
    ),
    FieldDoc(
        "env",
        Type.ENV,
        "{}",
        "Environment variables exported to every command on the "
        "host; merged level by level (defaults < site < host).",
        "{PATH: /opt/app/bin:/usr/bin:/bin}",
    ),
)

#: The names templates see (SPEC §4), with what they hold.
TEMPLATE_CONTEXT: tuple[tuple[str, str], ...] = (
    (
        "source, target",
        "the site names of this run: a failover moves the service from `source` "
        "to `target`; a failback keeps the failover's meaning (it moves back to `source`)",
    ),
    (
        "active",
        "the site serving the service: in steps and in the health check before a run, "
        "the site serving before this run; in the health check after a run, the site the run moves "
        "the service to",
    ),
    ("direction", "`failover` or `failback`"),
    ("run_id, emergency", "the run's id; whether `--emergency` was given"),
    ("mode", "`drill` in every run of a `drx drill` (both legs and rollbacks), else `real`"),
    ("vars", "merged variables: runbook < inventory < site < host < `--var NAME=VALUE`"),
    (
        "host",
        "the host being rendered: `.name .address .port .user .roles .site .vars` (not in "
        "`prompt` and `when`, which are rendered once per step)",
    ),
    ("site(NAME)", "a site (`NAME` may be `source`, `target` or `active`): `.name .vars .hosts`"),
    ("hosts(SELECTOR)", "a list of host objects, e.g. `hosts('db@source')[0].address`"),
    (
        "steps",
        "results of finished steps among this step's needs (direct or indirect): "
        "`steps['check-lag'].value`, `.rc`, `.stdout` (those of the step's first host), per host "
        "`steps['check-lag'].hosts['db-b'].stdout`",
    ),
    (
        "rc, stdout, stderr, value",
        "in `until` only: the poll's exit code, output, and captured value",
    ),
)

FILTERS: tuple[tuple[str, str, str], ...] = (
    (
        "quote",
        "POSIX shell quoting; use it for every value interpolated into a command",
        "{{ site(target).vars.vip | quote }}",
    ),
    ("seconds", "a duration as a number of seconds", "{{ '1m30s' | seconds }} → 90.0"),
)


PROBE_DOC: tuple[FieldDoc, ...] = (
    FieldDoc(
        "name",
        Type.TEXT,
        "probe-N",
        "Names the probe in the journal, summary.json and reports; unique.",
        "write",
    ),
    FieldDoc(
        "hosts",
        Type.SELECTORS,
        "control",
        "Where each poll runs (as a client would: the control machine by default).",
        "control",
    ),
    FieldDoc(
        "run",
        Type.TEMPLATE,
        "required",
        "The poll command.",
        "curl -fsS http://{{ vars.vip }}/health",
        required=True,
    ),
    FieldDoc("until", Type.EXPRESSION, "rc == 0", "The condition for up.", "value == 'ok'"),
    FieldDoc("capture", Type.CAPTURE, "none", "As for a step.", "number"),
    FieldDoc("interval", Type.DURATION, "1s", "The time between the starts of polls.", "500ms"),
    FieldDoc(
        "timeout",
        Type.DURATION,
        "5s",
        "Per poll: a poll that takes longer is down.",
        "2s",
    ),
    FieldDoc(
        "max_down",
        Type.DURATION,
        "none",
        "The longest down window tolerated (no shorter than `interval`): past it the probe "
        "breaches and the run stops, failed, naming the probe.",
        "30s",
    ),
)


def step_docs() -> tuple[FieldDoc, ...]:
    """The step fields: the built-in ones, then those of kinds registered beside them."""
    return STEP_DOC + tuple(d for k in kinds.KINDS.values() for d in k.field_docs)


def all_docs() -> dict[str, tuple[FieldDoc, ...]]:
    """Every table, by the mapping it describes."""
    return {
        "runbook": RUNBOOK_DOC,
        "step": step_docs(),
        "health": HEALTH_DOC,
        "readiness": READINESS_DOC,
        "rpo-probe": RPO_PROBE_DOC,
        "probe": PROBE_DOC,
        "inventory": INVENTORY_DOC,
        "connection": CONNECTION_DOC,
        "site": SITE_DOC,
        "host": HOST_DOC,
    }


#: what each exit code means in detail (the codes themselves: ``orchestrator.errors.ExitCode``)
EXIT_DETAILS: dict[ExitCode, str] = {
    ExitCode.OK: "success (for `drx check`: ready — every host, the health check and every "
    "readiness check passed; drift and an overdue drill are warnings)",
    ExitCode.FAILED: "the run failed: a step failed, health never held at the new site, or the "
    "run lost its lock (`drx check --strict`: ready, but drifted or the drill is overdue)",
    ExitCode.REFUSED: "refused before anything ran: invalid input, lock held, site already "
    "active, a host unreachable or refused at the pre-flight, health failing at the source, "
    "nothing to fail back or resume",
    ExitCode.RTO_MISSED: "the run succeeded but the measured RTO missed `rto_target`",
    ExitCode.INTERNAL: "an unexpected internal error; the traceback is in the state "
    "directory's debug.log",
    ExitCode.CANCELLED: "cancelled (Ctrl-C)",
}


# -- the generated parts of docs/reference.md ---------------------------------------------------


def cell(text: str) -> str:
    """``text`` made safe for one cell of a markdown table."""
    return text.replace("|", "\\|").replace("\n", " ")


def field_table(docs: tuple[FieldDoc, ...]) -> str:
    """A markdown table of ``docs``: field, type, default, meaning, example."""
    rows = ["| field | type | default | meaning | example |", "|---|---|---|---|---|"]
    for d in docs:
        rows.append(
            f"| `{d.name}` | {cell(d.type.value)} | {cell(d.default)} | {cell(d.meaning)} "
            f"| `{cell(d.example)}` |"
        )
    return "\n".join(rows)


def field_blocks() -> dict[str, str]:
    """The generated blocks of docs/reference.md that come from the models, by block name."""
    from orchestrator.model.runbook import UNDO_FIELDS

    blocks = {f"{name}-fields": field_table(docs) for name, docs in all_docs().items()}
    blocks["undo-fields"] = (
        "An undo mapping may set: " + ", ".join(f"`{name}`" for name in UNDO_FIELDS) + "."
    )
    blocks["template-context"] = "\n".join(
        ["| name | value |", "|---|---|"]
        + [f"| `{name}` | {cell(text)} |" for name, text in TEMPLATE_CONTEXT]
    )
    blocks["filters"] = "\n".join(
        ["| filter | does | example |", "|---|---|---|"]
        + [f"| `{name}` | {cell(text)} | `{cell(ex)}` |" for name, text, ex in FILTERS]
    )
    blocks["exit-codes"] = "\n".join(
        ["| code | meaning |", "|---|---|"]
        + [f"| `{int(c)}` | {cell(EXIT_DETAILS.get(c, c.meaning))} |" for c in ExitCode]
    )
    return blocks
