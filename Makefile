# Thin wrappers over scripts/, which do the real work (and run as root).
.PHONY: build test bench run vet fmt fuzz

build:
	./scripts/build.sh

test:
	./scripts/test.sh

bench:
	./scripts/bench.sh

# Every fuzz target for FUZZTIME each (default here 2m; CI uses a short one).
FUZZTIME ?= 2m
fuzz:
	FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

run:
	./scripts/run.sh

vet:
	go vet ./...
	test -z "$$(gofmt -l .)"
