# Thin wrappers over scripts/, which do the real work (and run as root).
.PHONY: build test bench run vet fmt screenshot

build:
	./scripts/build.sh

test:
	./scripts/test.sh

bench:
	./scripts/bench.sh

run:
	./scripts/run.sh

vet:
	go vet ./...
	test -z "$$(gofmt -l .)"

# docs/dashboard.png: the dashboard of run.sh's lab (LAB=name for another),
# in headless Chromium.
LAB ?= lab
screenshot:
	go run ./test/screenshot -lab $(LAB) -out docs/dashboard.png
