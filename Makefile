.PHONY: bootstrap demo test lint
SHELL := /bin/bash

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	@scripts/demo.sh

test: bootstrap
	@scripts/test.sh

lint:
	.venv/bin/ruff check kubevisor tests bench && .venv/bin/mypy
