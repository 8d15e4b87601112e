# Thin wrappers over scripts/, which do the real work (and run as root).
.PHONY: build test test-matrix engines bench run vet fmt

build:
	./scripts/build.sh

test:
	./scripts/test.sh

# Every suite against Docker 20.10, 28 and 29 (engines built on first use).
test-matrix:
	./scripts/test-matrix.sh

# Builds and caches dockerd 28 and 29 under /opt/underlay/engines.
engines:
	./scripts/build-engines.sh

bench:
	./scripts/bench.sh

run:
	./scripts/run.sh

vet:
	go vet ./...
	test -z "$$(gofmt -l .)"
