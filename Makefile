# Entry points. `make demo` and `make test` install what they need by themselves
# (scripts/bootstrap.sh): run them as root on a Debian 12 or 13 machine.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
# Every Molecule scenario (a directory under molecule/ with a molecule.yml), `default` first.
SCENARIOS ?= default $(filter-out default resources,$(notdir $(patsubst %/,%,$(dir $(wildcard molecule/*/molecule.yml)))))
# The Debian release of the demo server, the test servers and the benches' servers: trixie
# (Debian 13) or bookworm (Debian 12). `make test` runs every scenario on trixie; Debian 12 is
# the rebuild scenario's first server (converged, idempotent, checked, backed up), and
# `make molecule-debian12` runs the default scenario on it.
DEBIAN_RELEASE ?= trixie
export DEBIAN_RELEASE
# How many scenarios `make molecule` runs side by side (scripts/molecule-lanes.sh); 1: one by one.
# Three on two cores: a scenario spends part of its time waiting (on apt, on its services), which a
# third one fills (docs/performance.md, "make test").
MOLECULE_LANES ?= 3
# The inventory `make demo` converges the demo server with.
INVENTORY ?= inventories/demo

.PHONY: help deps image images demo demo-destroy test lint unit unit-containers molecule molecule-debian12 bench bench-ab bench-apt bench-deploy bench-backup bench-releases bench-celery bench-appserver bench-cluster bench-replica bench-pitr bench-observability bench-sentry bench-recycling clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

deps: ## Install podman, runc, debootstrap (apt) and the pinned tooling (.venv)
	@scripts/bootstrap.sh

image: deps ## Build the local test image of DEBIAN_RELEASE (trixie; cached, rebuilt when its recipe changes)
	@scripts/build-image.sh $(DEBIAN_RELEASE)

images: deps ## Build the local test images of both releases (trixie and bookworm)
	@scripts/build-image.sh trixie
	scripts/build-image.sh bookworm

demo: image ## Start (or re-converge) the demo server: https://127.0.0.1:8443/ (INVENTORY=<dir>: another inventory)
	@INVENTORY="$(INVENTORY)" scripts/demo.sh up

demo-destroy: ## Remove the demo server
	@scripts/demo.sh destroy

test: images ## Everything CI runs: lint, unit tests, container-backed module tests, every Molecule scenario
	@passed=(); stage=""
	report() { echo "make test: stages passed: $${passed[*]:-none}$${stage:+; failed: $$stage}"; }
	trap report EXIT
	# The container-backed module tests mostly wait on their container: they run beside the unit
	# tests (-O: each one's output whole, once it ends; the other stages print as they go).
	for stage in lint "unit unit-containers" molecule; do
	  $(MAKE) --no-print-directory $$([[ $$stage == *" "* ]] && echo -j2 -O) $$stage
	  passed+=($$stage)
	done
	stage=""
	echo "make test: molecule scenarios: $(SCENARIOS) on trixie (rebuild from a bookworm server)"

lint: deps ## yamllint, ansible-lint (production profile), role docs in sync with their specs
	@yamllint --strict .
	python scripts/render-role-docs.py --check
	ANSIBLE_VAULT_IDENTITY_LIST=demo@inventories/demo/vault-password.txt ansible-lint

unit: deps ## Python tests: roles' interfaces and boundaries, modules, the example projects (no containers)
# One pytest worker per core (pytest-xdist), each test file whole on one worker: a file's tests
# may build on the ones before them.
	@pytest -p no:cacheprovider -m "not container" -n auto --dist loadfile tests
	cd examples/demoapp && DJANGO_DB_ENGINE=sqlite DJANGO_SECRET_KEY=unit-tests-only-$$(printf 'x%.0s' {1..50}) \
	  DJANGO_ALLOWED_HOSTS=testserver DJANGO_SECURE_SSL_REDIRECT=false \
	  $(VENV)/bin/python manage.py test --noinput -v 1
	cd $(CURDIR)/examples/pingboard && SECRET_KEY=unit-tests-only-$$(printf 'x%.0s' {1..50}) ALLOWED_HOSTS=testserver \
	  $(VENV)/bin/python manage.py test --noinput -v 1

unit-containers: image ## Module tests against a real service in a throwaway container of DEBIAN_RELEASE (rabbitmq_accounts)
	@pytest -p no:cacheprovider -m container tests

molecule: images ## Every Molecule scenario on trixie (create, converge, idempotence, verify, destroy), in MOLECULE_LANES lanes; rebuild starts on bookworm
	@scripts/molecule-lanes.sh $(MOLECULE_LANES) $(SCENARIOS)

molecule-debian12: images ## The default scenario on Debian 12 (bookworm): every check of the all-in-one server (not in make test)
	@DEBIAN_RELEASE=bookworm molecule test -s default

bench: image ## Converge figures: first and second converge next to the apt+pip floor
	@python3 bench/converge.py

bench-ab: image ## Interleaved A/B of BASELINE=<git ref> and the working tree: first converge / floor, idempotent converge, deploy
	@python3 bench/converge_ab.py --baseline "$${BASELINE:?set BASELINE=<git ref>}"

bench-apt: image ## The server's packages in one apt transaction vs one per role (why base.yml installs them at once)
	@python3 bench/apt_transactions.py

bench-deploy: image ## Requests dropped during a deploy, next to a naive restart; code-only deploy time
	@python3 bench/deploy.py

bench-celery: image ## Celery tasks per second and worker peak RSS, for two prefetch settings
	@python3 bench/celery.py

bench-appserver: image ## gunicorn vs Apache for a dynamic page, nginx vs Django for a static file
	@python3 bench/appserver.py

bench-observability: image ## The home page's requests/s and p99 with and without the exporters, Prometheus and Sentry
	@python3 bench/observability.py

bench-recycling: image ## The home page's requests/s and p99 with gunicorn's workers replaced every 1,000 or 10,000 requests, or never
	@python3 bench/recycling.py

bench-sentry: deps ## What Sentry's SDK costs a home page request, in CPU instructions (valgrind, no server)
	@python3 bench/sentry_request_cost.py

bench-cluster: image ## The cluster scenario's first and idempotent converge next to an all-in-one's; failed requests in a rolling deploy, drained vs not
	@python3 bench/cluster.py

bench-replica: ## On a converged cluster scenario: replica lag idle vs under writes; writes failed and seconds without one during two promotions
	@python3 bench/replica.py

bench-pitr: deps ## Point-in-time recovery: RPO under steady writes next to a dump's; restore to latest next to a dump's restore
	@python3 bench/pitr.py

bench-releases: images ## Converge on Debian 13 and 12 side by side; rebuild RTO from a Debian 12 server onto a fresh Debian 13 one
	@python3 bench/releases.py

bench-backup: deps ## Backup/restore figures (1.6 GB database, 300 MB media) next to pg_dump + upload_file; BEFORE=<ref> adds that code's, same run
	@python3 bench/backup.py $${BEFORE:+--before "$$BEFORE"}

clean: demo-destroy ## Remove the demo server, caches and .venv
	@rm -rf .cache $(VENV)
