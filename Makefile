# Entry points. `make demo` and `make test` install what they need by themselves
# (scripts/bootstrap.sh): run them as root on a Debian 12 machine.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
# Every Molecule scenario (a directory under molecule/ with a molecule.yml), `default` first.
SCENARIOS ?= default $(filter-out default resources,$(notdir $(patsubst %/,%,$(dir $(wildcard molecule/*/molecule.yml)))))

.PHONY: help deps image demo demo-destroy test lint unit molecule bench bench-apt bench-deploy bench-backup bench-celery bench-appserver clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

deps: ## Install podman, runc, debootstrap (apt) and the pinned tooling (.venv)
	@scripts/bootstrap.sh

image: deps ## Build the local Debian 12 test image (cached; rebuilt when its recipe changes)
	@scripts/build-image.sh

demo: image ## Start (or re-converge) the demo server: https://127.0.0.1:8443/
	@scripts/demo.sh up

demo-destroy: ## Remove the demo server
	@scripts/demo.sh destroy

test: image ## Everything CI runs: lint, unit tests, every Molecule scenario
	@$(MAKE) --no-print-directory lint unit molecule
	echo "make test: lint, unit and molecule ($(SCENARIOS)) passed"
	echo "stages: 3 passed, 0 failed"

lint: deps ## yamllint, ansible-lint (production profile), role docs in sync with their specs
	@yamllint --strict .
	python scripts/render-role-docs.py --check
	ANSIBLE_VAULT_IDENTITY_LIST=demo@inventories/demo/vault-password.txt ansible-lint

unit: deps ## Python tests: roles' interfaces, modules, the demo app (no containers)
	@pytest -p no:cacheprovider tests
	cd examples/demoapp && DJANGO_DB_ENGINE=sqlite DJANGO_SECRET_KEY=unit-tests-only-$$(printf 'x%.0s' {1..50}) \
	  DJANGO_ALLOWED_HOSTS=testserver DJANGO_SECURE_SSL_REDIRECT=false \
	  $(VENV)/bin/python manage.py test --noinput -v 1

molecule: image ## Every Molecule scenario (create, converge, idempotence, verify, destroy)
	@for s in $(SCENARIOS); do molecule test -s $$s || exit 1; done

bench: image ## Converge figures: first and second converge next to the apt+pip floor
	@python3 bench/converge.py

bench-apt: image ## The server's packages in one apt transaction vs one per role (why base.yml installs them at once)
	@python3 bench/apt_transactions.py

bench-deploy: image ## Requests dropped during a deploy, next to a naive restart; code-only deploy time
	@python3 bench/deploy.py

bench-celery: image ## Celery tasks per second and worker peak RSS, for two prefetch settings
	@python3 bench/celery.py

bench-appserver: image ## gunicorn vs Apache for a dynamic page, nginx vs Django for a static file
	@python3 bench/appserver.py

bench-backup: deps ## Backup/restore figures (1.6 GB database, 300 MB media) next to pg_dump + upload_file
	@python3 bench/backup.py

clean: demo-destroy ## Remove the demo server, caches and .venv
	@rm -rf .cache $(VENV)
