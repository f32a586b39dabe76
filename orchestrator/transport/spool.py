"""The host-side spool: every command of a step runs detached from drx, its output and exit code
kept on the host, so a command whose controller died still has a known outcome.

A step's command attempt runs under ``<spool>/<run-id>/<step-id>/<host>/<attempt>/`` (``~/.drx/spool``
over SSH, ``<state dir>/spool`` for local hosts): ``pid`` (the runner's pid and its process
group), ``out`` and ``err`` (stdout and stderr: kept apart, as ``capture`` and ``until`` read
them apart), ``rc`` (written, newline-terminated, when the command ends); ``fenced`` instead of a start
when the run was taken over (``fence_program``). The controller streams ``out`` and ``err`` as they grow. When the run ends, the controller
removes the directories of the attempts whose outcome it has journaled as a success (and every
poll of a check): the others — failed, or never heard of — stay as evidence, and a crashed
run's successes stay for ``drx resume`` to read (no window in which a success is removed before
the journal has it).

Nothing secret is ever in an argv: the shell program below (the command and its ``env``
exports inside a single-quoted assignment) is written to the shell's standard input, which the
shell reads itself (``. /dev/stdin`` over SSH, ``sh -s`` locally); the command runs with
``eval`` from memory, its stdin ``/dev/null``. Under ``sudo`` the text reaches the other user's
shell through a pipe. Everything is POSIX sh (dash, busybox).

The wrapper costs one fork (the runner) and no clock of its own: it sleeps in a ``read`` of
its stdin, woken by the runner's end (SIGCHLD) or by a line drx writes now and then while it
waits (``Nudger``), and copies the new output with the shell's own ``read``/``printf`` (``cat``
only past ``COPY_LINES`` lines). It ignores SIGPIPE, so that a channel drx has left cannot end
it before it has written ``rc``. See docs/reference.md (spool).
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.transport.base import HostSpec, Sudo, sudo_argv

#: where SSH hosts keep their spools, relative to the login user's home
SSH_SPOOL = ".drx/spool"
#: exit code of a wrapper that could not create its spool directory
SPOOL_FAILED_RC = 125
#: a run's fence (``<spool>/<run-id>/FENCE``): once a controller that takes the run over has
#: made it, no command of that run starts on the host (not a step id: those never start with
#: a dot)
FENCE = ".fence"
#: exit code of the pre-flight's spool check when it refuses the host's spool directory
SPOOL_REFUSED_RC = 3
#: how often the streaming side looks for new output while a command runs
STREAM_EVERY_S = 0.1
#: when drx nudges a spooled command's wrapper (a line on its stdin) to copy new output: once
#: soon after the start, then every STREAM_EVERY_S
NUDGE_FIRST_S = 0.01


@dataclass(frozen=True)
class SpoolKey:
    """Where one command attempt is spooled: ``<root>/<run_id>/<step>/<host>/<attempt>``
    (the host's name in the path: hosts may share a home directory, over NFS or as local hosts).

    ``root`` is the spool directory for local hosts (SSH hosts use their own ``~/.drx/spool``).
    ``keep_failed``: keep the directory of a failed attempt (a check's polls do not: a failed
    poll is an answer, not a lost outcome).
    """

    run_id: str
    step: str
    host: str
    attempt: str
    root: Path | None = None
    keep_failed: bool = True

    def relative(self) -> str:
        return f"{self.run_id}/{self.step}/{self.host}/{self.attempt}"

    def local_dir(self) -> Path:
        """The directory on this machine (local hosts)."""
        if self.root is None:
            raise ValueError("no local spool root")
        return self.root / self.relative()

    def fence(self) -> str:
        """The run's fence, relative to the spool (see ``fence_program``)."""
        return f"{self.run_id}/{FENCE}"


def ssh_dir(key: SpoolKey | None, base: str = SSH_SPOOL) -> str:
    """Shell words naming ``key``'s directory on an SSH host, or the spool itself without a
    key (``base`` relative to $HOME unless absolute)."""
    path = base.rstrip("/") if key is None else f"{base.rstrip('/')}/{key.relative()}"
    if path.startswith("/"):
        return shlex.quote(path)
    return '"$HOME"/' + shlex.quote(path.removeprefix("~/"))


def spool_path(key: SpoolKey, base: str = SSH_SPOOL) -> str:
    """``key``'s directory on an SSH host as a path (relative to the login user's home unless
    ``base`` is absolute)."""
    return f"{base.rstrip('/').removeprefix('~/')}/{key.relative()}"


def fence_path(key: SpoolKey, base: str = SSH_SPOOL) -> str:
    """``key``'s run fence on an SSH host as a path, as ``spool_path``."""
    return f"{base.rstrip('/').removeprefix('~/')}/{key.fence()}"


def fence_words(key: SpoolKey, spec: HostSpec) -> str:
    """Shell words naming ``key``'s run fence on the host ``spec`` describes."""
    if spec.transport == "ssh":
        return ssh_dir(None, f"{spec.spool_dir.rstrip('/')}/{key.fence()}")
    if key.root is None:
        raise ValueError("no local spool root")
    return shlex.quote(str(key.root / key.fence()))


#: names a shell runs itself (builtins of dash, bash and busybox, and keywords): a command
#: starting with one of them is never handed to ``exec``
_SHELL_OWN = frozenset(
    [
        ".",
        ":",
        "[",
        "[[",
        "!",
        "{",
        "}",
        "alias",
        "bg",
        "bind",
        "break",
        "builtin",
        "caller",
        "case",
        "cd",
        "chdir",
        "command",
        "compgen",
        "complete",
        "continue",
        "declare",
        "dirs",
        "disown",
        "do",
        "done",
        "echo",
        "elif",
        "else",
        "enable",
        "esac",
        "eval",
        "exec",
        "exit",
        "export",
        "false",
        "fc",
        "fg",
        "fi",
        "for",
        "function",
        "getopts",
        "hash",
        "help",
        "history",
        "if",
        "in",
        "jobs",
        "kill",
        "let",
        "local",
        "logout",
        "mapfile",
        "popd",
        "printf",
        "pushd",
        "pwd",
        "read",
        "readarray",
        "readonly",
        "return",
        "select",
        "set",
        "shift",
        "shopt",
        "source",
        "suspend",
        "test",
        "then",
        "time",
        "times",
        "trap",
        "true",
        "type",
        "typeset",
        "ulimit",
        "umask",
        "unalias",
        "unset",
        "until",
        "wait",
        "while",
    ]
)
#: a command of plain words only: no quoting, expansion, redirection, list or pipeline
_PLAIN = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./-]*( +[A-Za-z0-9_./:=,@%+-]+)* *")


def execed(command: str) -> str:
    """``command`` for the runner subshell: a plain program call is prefixed with ``exec``, so
    that the subshell becomes the program instead of forking it (one process fewer per
    attempt); anything else the shell must run itself is left as it is."""
    first = command.split(" ", 1)[0]
    if _PLAIN.fullmatch(command) and first not in _SHELL_OWN and "=" not in first:
        return f"exec {command}"
    return command


def _marker(marker: str, pgid: str) -> str:
    """The first line: the marker and the process group id on stderr (none without a marker:
    the local transport knows its group)."""
    return f"printf '%s%s\\n' {shlex.quote(marker)} {pgid} >&2\n" if marker else ""


#: lines copied with the shell's read/printf before the rest goes through one cat
COPY_LINES = 32


def _copier(name: str, fd: int, to: str) -> str:
    """A shell function copying what is new on ``fd`` to the channel (``to``: a redirection):
    a command that printed a few lines costs no process. A write that fails (drx is gone:
    the wrapper ignores SIGPIPE) makes this and every later copy a no-op, so that the wrapper
    lives on to write ``rc``."""
    gone = "{ __drx_g=1; return 1; }"
    return (
        f'{name}() {{ [ -z "$__drx_g" ] || return 1; __drx_n=0; __drx_l=\n'
        f"  while IFS= read -r __drx_l <&{fd}; do\n"
        f"    printf '%s\\n' \"$__drx_l\"{to} || {gone}; __drx_l=\n"
        f"    __drx_n=$((__drx_n + 1)); if [ $__drx_n -ge {COPY_LINES} ]; then cat <&{fd}{to} || {gone}; return 0; fi\n"
        "  done\n"
        f'  [ -z "$__drx_l" ] || printf \'%s\' "$__drx_l"{to} || {gone}\n'
        "}\n"
    )


def _runner(sudo: Sudo) -> str:
    """The words that run ``$__drx_s`` (already in the shell's memory)."""
    if not sudo:
        # a subshell: an ``exit`` of the command ends it, not the wrapper
        return '( eval "$__drx_s" )'
    return _sudo_words(sudo)


def _sudo_words(sudo: Sudo) -> str:
    """The pipeline handing ``$__drx_s`` to the other user's shell."""
    inner = shlex.quote('__drx_s=$(cat); eval "$__drx_s" </dev/null')
    return f"printf '%s' \"$__drx_s\" | {shlex.join(sudo_argv(sudo))} sh -c {inner}"


#: what a command fenced off by a takeover says (on stderr) instead of running
FENCED_TEXT = "not started: another controller has taken this run over"


def _fenced(fence: str | None) -> str:
    """The wrapper's look for its run's fence, once it has claimed its attempt."""
    if fence is None:
        return ""
    return (
        f"if [ -e {fence} ]; then\n"
        f'  true >"$__drx_d/fenced"; echo "drx: {FENCED_TEXT}" >&2; exit {SPOOL_FAILED_RC}\n'
        "fi\n"
    )


def program(
    body: str, marker: str, sudo: Sudo, spool_dir: str | None, fence: str | None = None
) -> str:
    """The shell program for one command: ``body`` (exports + command) run as ``sudo`` asks.

    ``marker`` starts the first stderr line, followed by the process group id (the transport
    kills that group on timeout). With ``spool_dir`` (shell words) the command runs detached
    under the spool, unless its run's ``fence`` (shell words) exists (``fence_program``);
    without, in the foreground (commands outside any step, e.g. the pre-flight's).
    """
    head = _marker(marker, '"$$"') + f"__drx_s={shlex.quote(body)}\n"
    if spool_dir is None:
        if sudo:
            return head + f"{_runner(sudo)}\n"
        return head + 'eval "$__drx_s" </dev/null\n'
    run = _sudo_words(sudo) if sudo else 'eval "$__drx_s"'
    return (
        "{\n"
        + head
        + (
            f"__drx_d={spool_dir}\n"
            "umask 077\n"
            f'[ -d "$__drx_d" ] || mkdir -p "$__drx_d" || exit {SPOOL_FAILED_RC}\n'
            # the attempt is claimed by creating ``out`` (O_EXCL: noclobber), then the run's
            # fence is looked for: a controller taking the run over makes the fence, then
            # looks for claims (fence_program), so one of the two always sees the other
            # (``true``, not ``:``: a redirection that fails on a special builtin ends the shell)
            f'set -C; true >"$__drx_d/out" || exit {SPOOL_FAILED_RC}\n'
            f'set +C; true >"$__drx_d/err" || exit {SPOOL_FAILED_RC}\n'
            + _fenced(fence)
            # the runner's end (SIGCHLD: the wrapper has no other child) wakes the wrapper out of
            # its read below; set before the runner exists, so that no end goes unseen
            + "__drx_f= __drx_g=\n"
            "trap '__drx_f=1' CHLD\n"
            # the wrapper ignores SIGPIPE: a write to a channel drx has left fails instead of
            # ending it, so it lives on to write rc (the command's own SIGPIPE is the default)
            "trap '' PIPE\n"
            # the runner: one subshell (an ``exit`` of the command ends it, not the wrapper),
            # detached from the channel (its own files for stdin/out/err)
            f"( trap - PIPE; {run} )"
            ' </dev/null >>"$__drx_d/out" 2>>"$__drx_d/err" &\n'
            "__drx_r=$!\n"
            'printf \'%s %s\\n\' "$__drx_r" "$$" >"$__drx_d/pid"\n'
            'exec 3<"$__drx_d/out" 4<"$__drx_d/err"\n'
            # copying new output to the channel: up to COPY_LINES lines with the shell's own read
            # and printf (no process), the rest, if any, with cat
            f"{_copier('__drx_o', 3, '')}"
            f"{_copier('__drx_e', 4, ' >&2')}"
            # no clock on the host: drx writes a line to the channel's stdin now and then (Nudger)
            # while it waits, and each one copies what is new. A command that ends at once costs
            # no process beyond its runner. End of stdin (drx gone, or done waiting): wait for
            # the runner alone.
            'while [ -z "$__drx_f" ]; do\n'
            '  __drx_x=; read -r __drx_x || [ -n "$__drx_f" ] || break\n'
            "  __drx_o; __drx_e\n"
            "done\n"
            # (a trapped signal would cut the wait short, with a status of its own)
            "trap - CHLD\n"
            'wait "$__drx_r"\n'
            "__drx_rc=$?\n"
            'printf \'%s\\n\' "$__drx_rc" >"$__drx_d/rc"\n'
            "__drx_o; __drx_e\n"
            'exit "$__drx_rc"\n'
            "}\n"
        )
    )


class Nudger:
    """Nudges a spooled command's wrapper (``send``: a line on its stdin) NUDGE_FIRST_S after
    its start, then every STREAM_EVERY_S: each makes the wrapper copy its new output. ``send``
    ignores a wrapper that is gone (the command ended)."""

    def __init__(self, send: Callable[[], None]) -> None:
        self.send = send
        self.next = time.monotonic() + NUDGE_FIRST_S

    def wait_s(self, limit_s: float | None) -> float:
        """Nudge if due; how long to wait for output before the next one (at most ``limit_s``)."""
        now = time.monotonic()
        if now >= self.next:
            self.next = now + STREAM_EVERY_S
            self.send()
        until = max(0.0, self.next - now)
        return until if limit_s is None else min(limit_s, until)


def probe_program(spool_dir: str) -> str:
    """Shell text that says what a spooled attempt left behind, on one line:
    ``rc N`` (ended), ``live PID PGID`` (still running), or ``none``."""
    return (
        f"__drx_d={spool_dir}\n"
        'if [ -f "$__drx_d/rc" ] && __drx_rc=$(cat "$__drx_d/rc") && [ -n "$__drx_rc" ]; then\n'
        '  echo "rc $__drx_rc"; exit 0\n'
        "fi\n"
        'if [ -f "$__drx_d/pid" ] && read -r __drx_p __drx_g <"$__drx_d/pid"'
        ' && kill -0 "$__drx_p" 2>/dev/null; then\n'
        '  echo "live $__drx_p $__drx_g"; exit 0\n'
        "fi\n"
        "echo none\n"
    )


#: how long the fence waits for a claimed attempt to say whether it started (its ``pid``) or
#: saw the fence (``fenced``): the two are microseconds apart, unless the host is very busy
FENCE_WAIT_S = 5.0


def fence_program(run_dir: str, host: str, depth: int = 9) -> str:
    """Shell text that fences a run off on a host (``run_dir``: shell words naming
    ``<spool>/<run-id>``) and says which attempts of ``host`` had started there, a line each:
    ``<step>/<host>/<attempt> rc N``, ``… live PID PGID`` or ``… none`` (started, but neither
    ended nor running: its outcome is lost). ``depth``: the most parts a step id has (a site
    plan's steps are ``child/step``, nested children deeper).

    It is how a controller that takes a run over learns of the commands whose start the
    journal never got (its last few milliseconds are lost with a controller killed outright).
    A command claims its attempt by creating ``out`` exclusively, then looks for the fence
    (``program``, and the starter alike); this makes the fence first, then looks for claims:
    whichever comes second sees the other, so an attempt is either listed here or never
    starts. A claim seen here without its ``pid``, ``rc`` or ``fenced`` yet is waited for, up
    to ``FENCE_WAIT_S`` for the host as a whole: they are microseconds apart."""
    tries = int(FENCE_WAIT_S / 0.05)
    patterns = " ".join(
        '"$__drx_r"' + "/*" * k + "/" + shlex.quote(host) + "/*" for k in range(1, depth + 1)
    )
    return (
        "umask 077\n"
        f"__drx_r={run_dir}\n"
        '[ -d "$__drx_r" ] || mkdir -p "$__drx_r" || exit 3\n'
        f'true >"$__drx_r/{FENCE}" || exit 3\n'
        "__drx_i=0\n"
        f"for __drx_d in {patterns}; do\n"
        '  [ -f "$__drx_d/out" ] || continue\n'
        '  while ! [ -s "$__drx_d/pid" ] && ! [ -s "$__drx_d/rc" ] && ! [ -f "$__drx_d/fenced" ]'
        f" && [ $__drx_i -lt {tries} ]; do\n"
        "    sleep 0.05; __drx_i=$((__drx_i + 1))\n"
        "  done\n"
        '  [ -f "$__drx_d/fenced" ] && continue\n'
        '  __drx_k=${__drx_d#"$__drx_r"/} __drx_c= __drx_p=\n'
        '  [ -f "$__drx_d/rc" ] && read -r __drx_c <"$__drx_d/rc"\n'
        '  if [ -n "$__drx_c" ]; then\n'
        '    echo "$__drx_k rc $__drx_c"\n'
        '  elif [ -f "$__drx_d/pid" ] && read -r __drx_p __drx_g <"$__drx_d/pid"'
        ' && kill -0 "$__drx_p" 2>/dev/null; then\n'
        '    echo "$__drx_k live $__drx_p $__drx_g"\n'
        "  else\n"
        '    echo "$__drx_k none"\n'
        "  fi\n"
        "done\n"
    )


def attach_program(spool_dir: str, marker: str) -> str:
    """Shell text that follows a spooled attempt another controller started: its whole output,
    until it ends (rc written, or its runner gone), then exit with its rc (255: none). The
    first stderr line is ``marker`` and the command's process group (from ``pid``), so that a
    timeout kills that group as for a command started now."""
    head = f"__drx_d={spool_dir}\n" + 'read -r __drx_p __drx_g <"$__drx_d/pid" || exit 255\n'
    return (
        head
        + _marker(marker, '"$__drx_g"')
        + (
            'exec 3<"$__drx_d/out" 4<"$__drx_d/err" || exit 255\n'
            'while [ ! -s "$__drx_d/rc" ] && kill -0 "$__drx_p" 2>/dev/null; do\n'
            f"  cat <&3 && cat <&4 >&2 || exit 255; sleep {STREAM_EVERY_S * 2}\n"
            "done\n"
            "cat <&3 && cat <&4 >&2 || exit 255\n"
            '__drx_rc=; read -r __drx_rc <"$__drx_d/rc"\n'
            'if [ "$__drx_rc" = 0 ]; then rm -rf "$__drx_d" </dev/null >/dev/null 2>&1 & fi\n'
            'exit "${__drx_rc:-255}"\n'
        )
    )


def words(key: SpoolKey, spec: HostSpec) -> str:
    """Shell words naming ``key``'s directory on the host ``spec`` describes."""
    if spec.transport == "ssh":
        return ssh_dir(key, spec.spool_dir)
    return shlex.quote(str(key.local_dir()))


def mkdir_program(dirs: list[str]) -> str:
    """Shell text creating spool directories (shell words each), owner-only."""
    return "umask 077\nmkdir -p " + " ".join(dirs) + "\n"


def cleanup_program(dirs: list[str]) -> str:
    """Shell text removing spooled attempts (shell words each) and their parents once empty:
    one ``rm`` and one ``rmdir`` whatever the number of attempts (the parents listed deepest
    first — every host directory, then every step's, then the run's — as rmdir takes them in
    order and goes on past one that is not empty or already gone)."""
    listed = " ".join(dirs)
    lines = [f"rm -rf {listed}", "set --"]
    for up in ("/*", "/*/*", "/*/*/*"):
        lines.append(f'for __drx_d in {listed}; do set -- "$@" "${{__drx_d%{up}}}"; done')
    lines.append('rmdir "$@" 2>/dev/null')
    return "\n".join(lines) + "\n:\n"


def check_program(base: str, dirs: Sequence[str] = ()) -> str:
    """Shell text for the pre-flight: create the spool directory (0700) if missing, and refuse
    (rc 3, ``SPOOL_REFUSED_RC``, the reason on stdout) one that is a symlink, owned by someone else, or writable by
    group or others — never follow it. Then create ``dirs`` (the run's first attempts, shell
    words each), so that their commands start without a ``mkdir`` of their own. ``base``:
    shell words. One ``ls`` is its only process when the spool is sound (and one ``mkdir`` for
    ``dirs``): it runs on every host of every run."""
    mode_ok = "d????-??-*"
    return (
        "umask 077\n"
        f"__drx_b={base}\n"
        'for __drx_p in "${__drx_b%/*}" "$__drx_b"; do\n'
        '  if [ -L "$__drx_p" ]; then echo "$__drx_p is a symlink"; exit 3; fi\n'
        '  [ -d "$__drx_p" ] || mkdir -m 700 "$__drx_p" 2>/dev/null || [ -d "$__drx_p" ] ||'
        ' { echo "cannot create $__drx_p"; exit 3; }\n'
        # -O (owned by the effective uid) is a builtin test in dash, bash, busybox and zsh
        '  if ! [ -O "$__drx_p" ]; then\n'
        '    set -- $(LC_ALL=C ls -ldn "$__drx_p")\n'
        '    echo "$__drx_p is owned by uid $3, not $(id -u)"; exit 3\n'
        "  fi\n"
        "done\n"
        # both modes with one ls; which one is wrong is looked up only when one is
        "__drx_n='\n'\n"
        '__drx_m=$(LC_ALL=C ls -ldn "${__drx_b%/*}" "$__drx_b")\n'
        f'case $__drx_m in {mode_ok}"$__drx_n"{mode_ok}) ;; *)\n'
        '  for __drx_p in "${__drx_b%/*}" "$__drx_b"; do\n'
        '    set -- $(LC_ALL=C ls -ldn "$__drx_p")\n'
        f'    case $1 in {mode_ok}) ;; *) echo "$__drx_p is writable by group or others ($1)";'
        " exit 3;; esac\n"
        "  done;;\n"
        "esac\n" + (f"mkdir -p {' '.join(dirs)} 2>/dev/null\n" if dirs else "") + ":\n"
    )
