# Thin wrappers over scripts/, which do the real work (and run as root).
.PHONY: build test test-vm bench run vet fmt

build:
	./scripts/build.sh

test:
	./scripts/test.sh

# Only the tests on VM lab nodes (Debian's kernel: VLANs, bonds, ipvlan).
test-vm:
	./scripts/test.sh -run '^TestIntegrationVM'

bench:
	./scripts/bench.sh

run:
	./scripts/run.sh

vet:
	go vet ./...
	test -z "$$(gofmt -l .)"
