# drx — every target sets up what it needs (a virtualenv in .venv) on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: install demo test lint fmt bench lab lab-postgres lab-site clean system-deps docs fuzz chaos

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,lab]'
	$(BIN)/python -m compileall -q orchestrator  # bytecode, as a wheel install would have
	touch $(STAMP)

install: $(STAMP)

# OpenSSH server (real sshd hosts for tests and the lab) and Chromium (HTML report test);
# etcd server and etcdctl (the shared store's tests start their own 3-member clusters);
# promtool, from Debian's prometheus package (checks and unit-tests contrib/prometheus's alert
# rules; ~7 s, the server is not started);
# PostgreSQL 15 and sudo (the PostgreSQL drill: make lab-postgres and its test). The PostgreSQL
# package would create and start a `main` cluster the drill does not use: createcluster.d says
# not to, before the install;
# HAProxy (the site lab's load balancer: make lab-site; the package does not start it here).
PG_BIN = /usr/lib/postgresql/15/bin
system-deps:
	@if [ ! -x /usr/sbin/sshd ] || [ ! -x /usr/bin/chromium ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    openssh-server chromium >/dev/null; \
	fi
	@if [ ! -x /usr/bin/etcd ] || [ ! -x /usr/bin/etcdctl ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends etcd-server etcd-client >/dev/null; \
	fi
	@if [ ! -x /usr/bin/promtool ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends prometheus >/dev/null; \
	fi
	@if [ ! -x $(PG_BIN)/pg_ctl ] || [ ! -x $(PG_BIN)/pg_rewind ] || [ ! -x /usr/bin/sudo ]; then \
	  mkdir -p /etc/postgresql-common/createcluster.d && \
	  echo 'create_main_cluster = false' \
	    > /etc/postgresql-common/createcluster.d/drx-no-main.conf && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    postgresql-15 sudo >/dev/null; \
	fi
	@if [ ! -x /usr/sbin/haproxy ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends haproxy >/dev/null; \
	fi

# A drill on the sample runbook with the local inventory (no SSH needed), then its report.
# Each demo starts from a fresh simulated world and state dir (.drx/demo).
demo: export DRX_STATE_DIR = .drx/demo
demo: $(STAMP)
	@rm -rf .drx/demo .drx/demo-world
	$(BIN)/drx plan site-b
	$(BIN)/drx failover site-b --yes
	$(BIN)/drx report
	$(BIN)/drx report --format html -o .drx/demo/report.html
	$(BIN)/drx failback --yes
	$(BIN)/drx runs

test: $(STAMP) system-deps
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check orchestrator tests benchmarks
	$(BIN)/ruff format --check orchestrator tests benchmarks
	$(BIN)/mypy orchestrator

fmt: $(STAMP)
	$(BIN)/ruff check --fix orchestrator tests benchmarks
	$(BIN)/ruff format orchestrator tests benchmarks

# The loaders' property tests at full size: 10,000 generated runbooks and inventories per
# property (make test runs a few dozen); Hypothesis keeps its examples under build/hypothesis.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q -p no:cacheprovider -o timeout=0 tests/test_fuzz_loaders.py

# The fault campaign: 100 randomized schedules of faults (holder SIGKILL or SIGSTOP/SIGCONT, an
# etcd member or the leader killed, a host's sshd killed) during drills from two controllers over
# a 3-member etcd lab and four sshd hosts, each recovered from the other controller; the hosts'
# own record is checked against the journal. SEED=N replays a campaign (the seed is printed).
CHAOS_SCHEDULES ?= 100
chaos: $(STAMP) system-deps
	$(BIN)/python -m orchestrator.lab.chaos --schedules $(CHAOS_SCHEDULES) $(if $(SEED),--seed $(SEED))

# Every section of benchmarks/run.py, ending with 1,000 sshd hosts × 3 steps beside the 200-host
# run (~4 GB of RAM for the lab and its sessions; BENCH_MANY_HOSTS=0 skips that part, =N sizes it).
bench: $(STAMP) system-deps
	$(BIN)/python benchmarks/run.py

# Real sshd hosts for two sites on loopback, then the same drill over SSH.
lab: $(STAMP) system-deps
	$(BIN)/python -m orchestrator.lab drill

# Regenerate the field tables of docs/reference.md and docs/schema/*.json from the models.
docs: $(STAMP)
	$(BIN)/python -m orchestrator.cli.docs docs

# A PostgreSQL 15 primary (site-a) and streaming replica (site-b) behind real sshd hosts, and an
# app writing rows: drx fails the primary over to site-b and back, then RTO, RPO (bytes of WAL)
# and rows lost are printed. Lab and runs in lab-postgres/ (not under .drx, which drx keeps 0700:
# the lab user could not reach it); everything started is stopped at the end.
lab-postgres: $(STAMP) system-deps
	$(BIN)/python -m orchestrator.lab.postgres drill --dir lab-postgres

# The whole site by one site plan (runbooks/site-lab.yaml): the PostgreSQL lab, an application
# server per site and a real HAProxy in front of them, cut over through its admin socket by drx
# over SSH. Fails over to site-b and back while a client keeps sending requests through HAProxy,
# then prints the site's RTO, each tier's RTO and RPO and the requests that failed. Everything
# started is stopped at the end (also on failure or Ctrl-C).
lab-site: $(STAMP) system-deps
	$(BIN)/python -m orchestrator.lab.site drill --dir lab-site

clean:
	rm -rf $(VENV) .drx lab lab-postgres lab-site .pytest_cache .mypy_cache .ruff_cache *.egg-info
